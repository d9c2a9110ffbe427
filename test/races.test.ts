// Races between the owner shard and foreign threads (O1, L2, Q1): main hammers close/unlink on
// live sockets while traffic flows and hooks run. Nothing may be released twice, no hook may run
// on released data, nothing may crash. Bounded: a few seconds of traffic.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { Engine } from '../src/index.ts'
import { RECORDER, recordEvents, waitFor, connect, checkReleasedOnce, leakedHandles, sleep } from './net-helpers.ts'
import type { Socket } from 'node:net'

const rec = recordEvents('races-test')

test('main hammers close/unlink on live sockets under traffic: released once, no hook after release', async () => {
  const engine = await Engine.start({ shards: 2, hooks: RECORDER })
  try {
    const l = await engine.listen({ port: 0, protocol: 'rec' })
    const clients = new Set<Socket>()
    let opened = 0
    const open = async () => {
      const c = await connect(l.port)
      opened++
      clients.add(c)
      c.on('error', () => {})
      c.on('close', () => clients.delete(c))
      c.on('data', () => { if (!c.destroyed) c.write('data-data-data') })
      c.write('hello')
    }
    await Promise.all(Array.from({ length: 60 }, open))
    await waitFor(() => rec.of('new').length >= 60, 5000, 'the first 60 registered')
    const deadline = Date.now() + 3000
    let closes = 0, unlinks = 0, stale = 0, sends = 0
    while (Date.now() < deadline) {
      const live = rec.of('new').map((e) => e.id)
      for (let k = 0; k < 20; k++) {
        const id = live[Math.floor(Math.random() * live.length)]
        const r = Math.random()
        const st = r < 0.3 ? engine.close(id, { mode: Math.random() < 0.5 ? 'abort' : 'graceful' })
          : r < 0.6 ? engine.unlink(id)
            : engine.send(id, Buffer.from('foreign'))
        if (st === 'ERR_SS_STALE') stale++
        else if (r < 0.3) closes++
        else if (r < 0.6) unlinks++
        else sends++
      }
      if (clients.size < 40 && opened < 600) await Promise.all(Array.from({ length: 10 }, open))
      await sleep(2)
    }
    for (const c of clients) c.destroy()
    await waitFor(() => engine.stats().active === 0, 5000, 'all sockets gone')
    await sleep(100)
    const problems = checkReleasedOnce(rec.events)
    assert.equal(problems, [], problems.slice(0, 5).join('; '))
    assert.ok(closes > 50 && unlinks > 50 && sends > 50, `exercised: ${closes} closes, ${unlinks} unlinks, ${sends} sends, ${stale} stale`)
    const s = engine.stats()
    assert.is(s.hookErrors, 0)
    assert.ok(s.requestsApplied > 0)
    assert.is(s.active, 0)
  } finally {
    await engine.stop({ graceMs: 1000 })
  }
})

test('closes and sends from another shard (ctx) and from main on the same sockets at once', async () => {
  // every shard echoes; main floods sends and then closes: each socket gets its bytes in order
  // then exactly one FIN, whichever thread's close got there first (Q1).
  const engine = await Engine.start({ shards: 2, hooks: RECORDER })
  try {
    const l = await engine.listen({ port: 0, protocol: 'rec' })
    const before = rec.of('new').length // the first test's events share this channel
    const clients = await Promise.all(Array.from({ length: 40 }, () => connect(l.port)))
    const bufs = clients.map(() => [] as Buffer[])
    clients.forEach((c, i) => { c.on('data', (d) => bufs[i].push(d)); c.on('error', () => {}); c.write('hi') })
    await waitFor(() => rec.of('new').length >= before + 40 && bufs.every((b) => b.length > 0), 5000, 'greeted')
    const ids = rec.of('new').slice(before).map((e) => e.id)
    assert.is(ids.length, 40)
    const sent = new Map<number, number>()
    for (let round = 0; round < 50; round++) {
      for (const id of ids) {
        const msg = Buffer.alloc(100, round)
        if (engine.send(id, msg) === 'ok') sent.set(id, (sent.get(id) ?? 0) + 100)
      }
    }
    for (const id of ids) assert.is(engine.close(id), 'ok')
    await Promise.all(clients.map((c) => new Promise((r) => c.once('close', r))))
    // total bytes each client saw: 2 (echo of hi) + accepted foreign bytes
    const total = clients.reduce((a, _, i) => a + Buffer.concat(bufs[i]).length, 0)
    const expected = 40 * 2 + [...sent.values()].reduce((a, b) => a + b, 0)
    assert.is(total, expected, 'every accepted byte delivered before the close')
  } finally {
    await engine.stop({ graceMs: 1000 })
  }
})

test('no handle left behind by the whole file', async () => {
  rec.close()
  await sleep(20)
  assert.equal(leakedHandles(), [])
})

test.run()
