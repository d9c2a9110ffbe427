// Regression tests for the shard lifecycle of the hardening issue (DESIGN §4b: boot → ready →
// running → stopping → exited; crash → restart): a close in the restart window is never 'ok' and
// lost, a dead connection is not resurrected (bug 3), boot failures reject Engine.start, restarts
// are bounded (bug 9), and a shard that stays down answers for its ids (bug 10). Real loopback
// sockets, real shard threads, bounded waits only; every engine is stopped and no handle is left.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import net from 'node:net'
import { writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Engine, SyncsockError, idShard, type EngineOptions } from '../src/index.ts'
import { recordEvents, waitFor, connect, roundTrip, leakedHandles, sleep } from './net-helpers.ts'
import { backend, freePort, within, type Backend, type Ev } from './conn-helpers.ts'

const HOOKS = new URL('./fixtures/lifecycle-hooks.ts', import.meta.url).pathname
const BOOT_HOOKS = new URL('./fixtures/boot-hooks.ts', import.meta.url).pathname
const HOST = '127.0.0.1'

type LEv = Ev & { remotePort?: number }
interface ShardExit { shard: number; code: number; restarting?: boolean }
interface ShardRestart { shard: number; connections: number[] }
interface ShardDown { shard: number; restarts: number; reason: string }

let channels = 0
/** An engine on the lifecycle fixture with its own event channel; shard events recorded. */
async function start(opts: EngineOptions = {}) {
  const rec = recordEvents(`ss-shard-life-${process.pid}-${++channels}`)
  let engine: Engine
  try {
    engine = await Engine.start({ shards: 2, hooks: HOOKS, ...opts })
  } catch (e) {
    rec.close()
    throw e
  }
  const exits: ShardExit[] = []
  const restarts: ShardRestart[] = []
  const downs: ShardDown[] = []
  const dead: { id: number }[] = []
  engine.on('shard-exit', (d: ShardExit) => exits.push(d))
  engine.on('shard-restart', (d: ShardRestart) => restarts.push(d))
  engine.on('shard-down', (d: ShardDown) => downs.push(d))
  engine.on('dead', (d: { id: number }) => dead.push(d))
  engine.on('shard-error', () => {})
  engine.on('hook-error', () => {})
  return { engine, rec, events: rec.events as LEv[], exits, restarts, downs, dead }
}

async function assertNoHandles() {
  await waitFor(() => leakedHandles().length === 0, 3000).catch(() => {})
  assert.equal(leakedHandles(), [], 'handles left in the test process')
}

/** Cleanup (in `finally`, so it asserts nothing and cannot mask the test's own failure): stop
 *  (bounded), close the channel and the backends. assertStopped checks the result afterwards. */
async function finish(engine: Engine, rec: { close(): void }, ...backends: (Backend | undefined)[]) {
  try {
    await within(engine.stop({ graceMs: 1000 }), 15_000, 'engine.stop')
  } finally {
    rec.close()
    for (const b of backends) await b?.close()
  }
}

/** After stop(): no socket counted anywhere, no handle left in this process. */
async function assertStopped(engine: Engine) {
  assert.is(engine.stats().active, 0, 'sockets still open after stop')
  assert.is(engine.stats().serverConns, 0, 'server connections left after stop')
  await assertNoHandles()
}

/** Kill the shard that accepts this client, inside connectionRecv (fixture protocol 'crash'). */
async function crashVia(port: number): Promise<net.Socket> {
  const c = await connect(port)
  c.on('error', () => {})
  await roundTrip(c, 'hi') // registered, linked, echoing
  c.write('CRASH')
  return c
}

// ---------------- bug 3: closes in the restart window, dead connections ----------------

test("a close of a crashed shard's server connections in the restart window never answers 'ok' and then comes back: re-created = closes that did not answer 'ok'", async () => {
  const { engine, rec, exits, restarts } = await start({ shards: 2 })
  let conns: number[] = []
  const answers: { id: number; when: string; answer: string }[] = []
  const timers = new Set<NodeJS.Timeout>()
  // The application reacts to the crash by closing that shard's upstream connections: one right
  // in the 'shard-exit' handler, the others a moment later while the replacement boots.
  engine.on('shard-exit', (d: ShardExit) => {
    const mine = conns.filter((id) => idShard(id) === d.shard)
    if (mine.length === 0) return
    answers.push({ id: mine[0], when: 'in the shard-exit handler', answer: engine.close(mine[0]) })
    const t = setTimeout(() => {
      timers.delete(t)
      for (const id of mine.slice(1)) answers.push({ id, when: '5 ms after shard-exit', answer: engine.close(id) })
    }, 5)
    timers.add(t)
  })
  try {
    const echo = await engine.listen({ port: 0, protocol: 'echo' })
    const l = await engine.listen({ port: 0, protocol: 'crash' })
    conns = await engine.connect({ host: HOST, port: echo.port, protocol: 'up', count: 4 }) // two per shard
    await waitFor(() => engine.stats().connected >= 4, 5000, 'server connections up')
    const c = await crashVia(l.port)
    await waitFor(() => restarts.length === 1, 10_000, 'shard restart')
    await waitFor(() => answers.length === 2, 2000, 'both closes issued')
    c.destroy()
    const victim = exits[0].shard
    assert.is(restarts[0].shard, victim)
    const notOk = answers.filter((a) => a.answer !== 'ok').length
    // every close that answered 'ok' must stay closed; every one that did not is re-created
    assert.is(restarts[0].connections.length, notOk,
      `re-created ${restarts[0].connections.length}, closes not answered ok ${notOk}: ${JSON.stringify(answers)}`)
    // the engine seals the dead shard's table before it emits 'shard-exit': no close after that is 'ok'
    for (const a of answers) {
      assert.ok(a.answer === 'ERR_SS_SHARD_DIED' || a.answer === 'ERR_SS_STALE', `close ${a.when} answered ${a.answer}`)
    }
    // the re-created connections come up on the replacement, and nothing else does
    await waitFor(() => engine.stats().shards[victim].connected >= restarts[0].connections.length, 5000, 'reconnected on the new shard')
    await sleep(200)
    assert.is(engine.stats().shards[victim].serverConns, restarts[0].connections.length)
    for (const id of conns.filter((x) => idShard(x) === victim)) assert.is(engine.close(id), 'ERR_SS_STALE', 'old id after the restart')
  } finally {
    for (const t of timers) clearTimeout(t)
    await finish(engine, rec)
  }
  await assertStopped(engine)
})

test("a server connection that gave up (dead after retry.maxAttempts) is not re-created by a shard restart", async () => {
  const { engine, rec, restarts, dead } = await start({ shards: 1 })
  try {
    const l = await engine.listen({ port: 0, protocol: 'crash' })
    const port = await freePort() // refused
    const [id] = await engine.connect({ host: HOST, port, protocol: 'plain', retry: { baseMs: 5, capMs: 10, maxAttempts: 2 } })
    await waitFor(() => dead.length === 1, 5000, "'dead'")
    assert.is(dead[0].id, id)
    assert.is(engine.stats().serverConns, 1, 'a dead connection keeps its slot until closed')
    const c = await crashVia(l.port)
    await waitFor(() => restarts.length === 1, 10_000, 'shard restart')
    c.destroy()
    assert.equal(restarts[0].connections, [], 'shard-restart re-created no connection')
    await sleep(300) // the resurrected connection would have tried (baseMs 5) by now
    const st = engine.stats()
    assert.is(st.connectAttempts, 0, 'no connect attempt on the new shard')
    assert.is(st.serverConns, 0)
    assert.is(dead.length, 1)
    assert.is(engine.close(id), 'ERR_SS_STALE')
  } finally {
    await finish(engine, rec)
  }
  await assertStopped(engine)
})

// ---------------- bug 9: boot failures and bounded restarts ----------------

/** Engine.start on fixtures/boot-hooks.ts in `mode`: must reject within `ms`; resolves with the error. */
async function bootFailure(mode: string, opts: EngineOptions, ms: number): Promise<Error> {
  const saved = process.env.SS_TEST_BOOT_MODE
  process.env.SS_TEST_BOOT_MODE = mode // a worker copies process.env when it is spawned
  const p = Engine.start({ shards: 2, hooks: BOOT_HOOKS, ...opts })
  if (saved === undefined) delete process.env.SS_TEST_BOOT_MODE
  else process.env.SS_TEST_BOOT_MODE = saved
  let engine: Engine | undefined
  try {
    engine = await within(p, ms, `Engine.start with a hooks module in mode ${mode}`)
  } catch (e) {
    return e as Error
  }
  await engine.stop({ graceMs: 100 })
  throw new Error(`Engine.start resolved with a hooks module in mode ${mode}`)
}

test('Engine.start with a hooks module that calls process.exit(1) while loading rejects promptly with ERR_SS_BOOT naming the module, and leaves no worker or handle', async () => {
  const e = await bootFailure('exit', {}, 5000)
  assert.ok(SyncsockError.is(e, 'ERR_SS_BOOT'), `code ${(e as { code?: string }).code}: ${e.message}`)
  assert.match(e.message, 'boot-hooks.ts')
  await assertNoHandles()
})

test('Engine.start with a hooks module whose top-level await never settles while it holds a handle rejects with ERR_SS_BOOT after bootTimeoutMs, and leaves no handle', async () => {
  const e = await bootFailure('hang-handle', { bootTimeoutMs: 500 }, 5000)
  assert.ok(SyncsockError.is(e, 'ERR_SS_BOOT'), `code ${(e as { code?: string }).code}: ${e.message}`)
  assert.match(e.message, /500 ms/, 'the message names the timeout')
  assert.match(e.message, 'boot-hooks.ts')
  await assertNoHandles()
})

test('Engine.start with a hooks module whose top-level await never settles with nothing holding the loop rejects with ERR_SS_BOOT', async () => {
  const e = await bootFailure('hang', { bootTimeoutMs: 3000 }, 8000)
  assert.ok(SyncsockError.is(e, 'ERR_SS_BOOT'), `code ${(e as { code?: string }).code}: ${e.message}`)
  assert.match(e.message, 'boot-hooks.ts')
  await assertNoHandles()
})

test("a shard that keeps crashing is restarted at most maxRestarts times in restartWindowMs, then stays down ('shard-down', shardsDown 1, shardRestarts 2) and stop() still resolves cleanly", async () => {
  const { engine, rec, exits, restarts, downs } = await start({ shards: 1, maxRestarts: 2, restartWindowMs: 60_000 })
  const clients: net.Socket[] = []
  try {
    // every accepted socket kills the shard in connectionNew (a poisoned hooks module)
    const l = await engine.listen({ port: 0, protocol: 'crashNew' })
    for (let k = 1; k <= 3; k++) {
      const c = await connect(l.port)
      c.on('error', () => {})
      clients.push(c)
      await waitFor(() => exits.length === k, 10_000, `crash ${k}`)
      if (k < 3) await waitFor(() => restarts.length === k, 10_000, `restart ${k}`)
    }
    await waitFor(() => downs.length === 1, 5000, "'shard-down'")
    assert.is(downs[0].shard, 0)
    assert.is(downs[0].restarts, 2)
    assert.type(downs[0].reason, 'string')
    assert.is(exits[2].restarting, false)
    let st = engine.stats()
    assert.is(st.shardsDown, 1)
    assert.is(st.shardRestarts, 2)
    await sleep(1000) // nothing more happens
    st = engine.stats()
    assert.is(st.shardsDown, 1)
    assert.is(st.shardRestarts, 2)
    assert.is(restarts.length, 2)
    assert.is(exits.length, 3)
  } finally {
    for (const c of clients) c.destroy()
    await finish(engine, rec)
  }
  await assertStopped(engine)
})

test("a replacement shard whose hooks module no longer loads does not spin: after maxRestarts (3) replacement boots the shard is down ('shard-down', shardRestarts 3, shardsDown 1)", async () => {
  const flag = join(tmpdir(), `ss-boot-fail-${process.pid}-${Date.now()}`)
  process.env.SS_TEST_BOOT_FAIL_FLAG = flag // every shard spawned from now on checks the file
  let c: net.Socket | undefined
  try {
    const { engine, rec, exits, restarts, downs } = await start({ shards: 1, maxRestarts: 3, restartWindowMs: 60_000 })
    try {
      const l = await engine.listen({ port: 0, protocol: 'crash' })
      writeFileSync(flag, '') // from now on the hooks module exits while loading
      c = await crashVia(l.port)
      await waitFor(() => downs.length === 1, 15_000, "'shard-down'")
      let st = engine.stats()
      assert.is(st.shardRestarts, 3, 'replacement boots')
      assert.is(st.shardsDown, 1)
      assert.is(downs[0].restarts, 3)
      assert.is(exits.length, 4, 'the crash, then three replacements that failed to boot')
      assert.is(restarts.length, 0, 'no replacement became ready')
      await sleep(1000) // nothing more happens
      st = engine.stats()
      assert.is(st.shardRestarts, 3)
      assert.is(st.shardsDown, 1)
      assert.is(exits.length, 4)
    } finally {
      c?.destroy()
      await finish(engine, rec)
    }
    await assertStopped(engine)
  } finally {
    delete process.env.SS_TEST_BOOT_FAIL_FLAG
    rmSync(flag, { force: true })
  }
})

// ---------------- bug 10: restartShards: false ----------------

test("with restartShards: false a dead shard's ids answer ERR_SS_SHARD_DIED to send/close/unlink, stats().active drops its sockets, the other shard keeps serving, and stop() leaves active 0", async () => {
  const b = await backend()
  const { engine, rec, exits, downs } = await start({ shards: 2, restartShards: false })
  const clients: net.Socket[] = []
  try {
    const l = await engine.listen({ port: 0, protocol: 'crash' })
    const conns = await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 4 }) // two per shard
    await waitFor(() => engine.stats().connected >= 4, 5000, 'server connections up')
    for (let i = 0; i < 16; i++) {
      const c = await connect(l.port)
      c.on('error', () => {})
      clients.push(c)
    }
    await Promise.all(clients.map((c) => roundTrip(c, 'hi')))
    const accepted = () => rec.of('new').filter((e) => e.protocol === 'crash') as LEv[]
    await waitFor(() => accepted().length === 16, 5000, 'accepted sockets registered')
    // kill the shard of the first client, inside its connectionRecv
    const first = accepted().find((e) => e.remotePort === clients[0].localPort)!
    const victim = first.shard
    const other = 1 - victim
    const victimIds = [...conns.filter((id) => idShard(id) === victim), ...accepted().filter((e) => e.shard === victim).map((e) => e.id)]
    const otherConns = conns.filter((id) => idShard(id) === other)
    clients[0].write('CRASH')
    await waitFor(() => exits.length === 1, 10_000, 'shard exit')
    assert.is(exits[0].shard, victim)
    for (const id of victimIds) {
      assert.is(engine.send(id, Buffer.from('x')), 'ERR_SS_SHARD_DIED', `send to ${id}`)
      assert.is(engine.unlink(id), 'ERR_SS_SHARD_DIED', `unlink of ${id}`)
      assert.is(engine.close(id), 'ERR_SS_SHARD_DIED', `close of ${id}`)
    }
    let st = engine.stats()
    assert.is(st.shards[victim].active, 0, "the dead shard's sockets are not counted")
    assert.is(st.active, st.shards[other].active)
    assert.is(st.shards[victim].serverConns, 0)
    await waitFor(() => downs.length === 1, 2000, "'shard-down'")
    assert.is(downs[0].shard, victim)
    // the other shard keeps serving: its server connections and the listener (echo)
    for (const id of otherConns) assert.is(engine.send(id, Buffer.from('x')), 'ok')
    const fresh = await Promise.all(Array.from({ length: 8 }, () => connect(l.port)))
    for (const c of fresh) { c.on('error', () => {}); clients.push(c) }
    const echoed = await Promise.all(fresh.map((c) => roundTrip(c, 'still here')))
    assert.ok(echoed.every((x) => x.toString() === 'still here'))
    st = engine.stats()
    assert.is(st.shards[victim].active, 0)
    // new server connections go to the shard that runs (a down shard does not fail the call),
    // and a new listener opens on it alone
    const more = await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 3 })
    assert.ok(more.every((id) => idShard(id) === other), `ids ${more.map(idShard)}`)
    const l2 = await engine.listen({ port: 0, protocol: 'echo' })
    const c2 = await connect(l2.port)
    c2.on('error', () => {})
    clients.push(c2)
    assert.is((await roundTrip(c2, 'new listener')).toString(), 'new listener')
  } finally {
    for (const c of clients) c.destroy()
    await finish(engine, rec, b)
  }
  await assertStopped(engine)
})

test.run()
