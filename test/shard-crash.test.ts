// R1: a shard that dies in the middle of a hook (holding that socket's callback lock) does not
// wedge the engine: the supervisor bumps its epoch (its locks become breakable), restarts it,
// resets its slot table (old ids answer ERR_SS_STALE) and reopens its listeners.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { Engine, idShard } from '../src/index.ts'
import { RECORDER, recordEvents, waitFor, connect, roundTrip, closed, leakedHandles, sleep } from './net-helpers.ts'

const rec = recordEvents('crash-test')

test('a shard killed inside a hook is restarted; its listeners reopen; its old ids are stale', async () => {
  const engine = await Engine.start({ shards: 2, hooks: RECORDER })
  const exits: unknown[] = []
  const restarts: unknown[] = []
  engine.on('shard-exit', (d) => exits.push(d))
  engine.on('shard-restart', (d) => restarts.push(d))
  try {
    const l = await engine.listen({ port: 0, protocol: 'crash' })
    const backend = await engine.listen({ port: 0, protocol: 'echo' })
    // two persistent server connections per shard (round robin)
    const conns = await engine.connect({ host: '127.0.0.1', port: backend.port, protocol: 'up', count: 4 })
    await waitFor(() => engine.stats().connected >= 4, 5000, 'server connections up')
    const c = await connect(l.port)
    await roundTrip(c, 'hello')
    await waitFor(() => rec.of('new').some((e) => e.protocol === 'crash'), 3000)
    const victim = rec.of('new').find((e) => e.protocol === 'crash')!
    c.on('error', () => {})
    c.write('CRASH')
    await closed(c)
    await waitFor(() => restarts.length === 1, 10_000, 'shard restart')
    assert.is(exits.length, 1)
    assert.is((exits[0] as { shard: number }).shard, victim.shard)
    // the dead incarnation's id is stale after the reset, and its lock cannot wedge main
    assert.is(engine.close(victim.id), 'ERR_SS_STALE')
    assert.is(engine.send(victim.id, Buffer.from('x')), 'ERR_SS_STALE')
    // its two server connections were re-created on the restarted shard, with new ids
    const r = restarts[0] as { shard: number; connections: number[] }
    assert.is(r.connections.length, 2)
    const oldOnVictim = conns.filter((id) => idShard(id) === victim.shard)
    for (const id of oldOnVictim) assert.is(engine.close(id), 'ERR_SS_STALE')
    await waitFor(() => engine.stats().shards[victim.shard].connected >= 2, 5000, 'reconnected on the new shard')
    // both shards serve the port again: enough connections land on each
    const before = engine.stats().shards.map((s) => s.accepted)
    const cs = await Promise.all(Array.from({ length: 60 }, () => connect(l.port)))
    await Promise.all(cs.map((x) => roundTrip(x, 'ok?')))
    const after = engine.stats().shards.map((s, i) => s.accepted - (i === victim.shard ? 0 : before[i]))
    assert.ok(after.every((n) => n > 0), `both shards accept after restart: ${after}`)
    cs.forEach((x) => x.destroy())
  } finally {
    await engine.stop({ graceMs: 1000 })
    rec.close()
  }
  await sleep(20)
  assert.equal(leakedHandles(), [])
})

test.run()
