// stop() and F1 ("final means final"): once stop() was called no failover or retry hook runs, no
// reconnect is armed, and every shard exits by itself — no timer left to keep it alive, none
// terminated. Each F1 guard is also tested on its own (a connection manager driven in this thread,
// over real loopback sockets), because in the engine one guard hides the next: a failover that
// slipped past the stopping check would still find `arm` refusing, and reconnect counters stay 0.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { Layout, H_STOPPING, idSlot } from '../src/ss/layout.ts'
import { CounterBlock } from '../src/ss/counters.ts'
import { CallbackLock } from '../src/ss/lock.ts'
import { SlotTable } from '../src/ss/slots.ts'
import { Dispatcher } from '../src/ss/upcall.ts'
import { Watchdog } from '../src/ss/watchdog.ts'
import type { SsSocket } from '../src/ss/socket.ts'
import { ConnManager, type ConnServices, type ServerConn } from '../src/hooks/server.ts'
import { ReconnectTimer, type Scheduled } from '../src/hooks/reconnect.ts'
import { Liveness } from '../src/hooks/liveness.ts'
import { normalizeConnect } from '../src/hooks/retry.ts'
import type { Protocol } from '../src/hooks/types.ts'
import { waitFor, sleep, connect, leakedHandles } from './net-helpers.ts'
import { backend, freePort, startEngine, evs, incarnations, type Ev } from './conn-helpers.ts'

const HOST = '127.0.0.1'

// ---------------- one shard's connection manager, in this thread ----------------

/** A shard's services for a ConnManager run on this thread: real slots, lock, counters, sockets. */
function shardHere() {
  const layout = new Layout({ shards: 1, slotsPerShard: 64 })
  const sab = layout.create()
  const i32 = new Int32Array(sab)
  const counters = new CounterBlock(sab, layout, 1)
  const dispatcher = new Dispatcher(new CallbackLock(sab, layout, 1, counters), counters)
  const slots = new SlotTable(sab, layout, 0)
  const limits = { highWater: 1 << 20, lowWater: 1 << 19, maxQueue: 16 << 20, sendTimeoutMs: 30_000, closeTimeoutMs: 10_000 }
  const svc = {
    shard: 0, dispatcher, slots, counters, ctx: {}, limits,
    watchdog: new Watchdog(limits, counters),
    hookFailed() {},
    released(s: SsSocket) { if (!s.owner) slots.release(s.id) },
    register() {},
    report() {},
  } as unknown as ConnServices
  const mgr = new ConnManager(svc, sab, 16, new Liveness(dispatcher, counters))
  const calls: string[] = []
  const proto: Protocol = {
    connectionNew(sock) { sock.link({}) },
    failover(_s, reason) { calls.push(`failover:${reason}`); return { reconnect: true, delayMs: 10 } },
    retry(_s, attempt) { calls.push(`retry:${attempt}`); return 10 },
  }
  const create = (port: number): ServerConn => {
    const id = mgr.create(proto, normalizeConnect({ host: HOST, port, protocol: 'p' }, () => true))
    return mgr.conns.get(idSlot(id))!
  }
  return {
    mgr, calls, create,
    /** what stop() does first (§6b.1): the engine's STOPPING word */
    setStopping: () => Atomics.store(i32, H_STOPPING, 1),
    /** end every connection (as stop's shutdown does), so nothing outlives the test */
    shutdown: async () => {
      mgr.shutdown((s) => s.finalize('shutdown', 'abort'))
      await waitFor(() => mgr.conns.size === 0, 3000, 'connections finished')
    },
  }
}

const up = (c: ServerConn) => c.current !== null && c.current.phase === 'open' && c.current.linked

test('F1 guard in ServerConn.dropped: an incarnation dropped once STOPPING is set gets no failover', async () => {
  const b = await backend()
  const sh = shardHere()
  try {
    const c = sh.create(b.port)
    await waitFor(() => up(c), 3000, 'established')
    b.dropAll('rst')
    await waitFor(() => sh.calls.includes('failover:reset') && up(c), 3000, 'failover, then back up (the hook runs when not stopping)')
    sh.setStopping()
    const first = c.current!
    b.dropAll('rst')
    await waitFor(() => first.phase === 'closed' && c.current === null, 3000, 'the incarnation gone')
    await sleep(30)
    assert.equal(sh.calls, ['failover:reset'], 'no failover once STOPPING is set')
  } finally { await sh.shutdown(); await b.close() }
})

test('F1 guard in ServerConn.failed: a connect that fails once STOPPING is set gets no retry', async () => {
  const port = await freePort()
  const control = shardHere()
  const sh = shardHere()
  try {
    control.create(port)
    await waitFor(() => control.calls.length > 0, 3000, 'retry when not stopping')
    assert.equal(control.calls.slice(0, 1), ['retry:1'])
    const c = sh.create(port) // its connect is under way now: it fails after STOPPING
    sh.setStopping()
    await waitFor(() => c.current === null, 3000, 'the connect failed')
    await sleep(30)
    assert.equal(sh.calls, [], 'no retry once STOPPING is set')
  } finally { await control.shutdown(); await sh.shutdown() }
})

test('F1 guard in ConnManager.arm: once STOPPING is set a reconnect is never armed', async () => {
  const b = await backend()
  const sh = shardHere()
  try {
    const [c, d] = [sh.create(b.port), sh.create(b.port)]
    await waitFor(() => up(c) && up(d), 3000, 'established')
    sh.mgr.arm(c, 5)
    assert.ok(c.isWaiting, 'arm schedules when not stopping')
    sh.setStopping()
    sh.mgr.arm(d, 5)
    assert.ok(!d.isWaiting, 'arm refused once STOPPING is set')
  } finally { await sh.shutdown(); await b.close() }
})

test('F1 guard in ReconnectTimer: after shutdown() nothing can be pushed, and no timer is left', async () => {
  const due: Scheduled[] = []
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
  const before = timers()
  const t = new ReconnectTimer<Scheduled>((c) => due.push(c))
  const a: Scheduled = { dueAt: 0, heapIdx: -1 }
  assert.ok(t.push(a, 3000))
  assert.is(timers(), before + 1, 'one timer for the schedule')
  t.shutdown()
  assert.is(timers(), before, 'shutdown clears the timer: a stopped shard has nothing keeping it alive')
  assert.is(t.push({ dueAt: 0, heapIdx: -1 }, 1), false, 'a push after shutdown is refused')
  assert.is(t.size, 0)
  await sleep(20)
  assert.equal(due, [])
})

// ---------------- the engine: stop under load ----------------

test('stop() while drops land on a busy shard: no failover or retry hook runs once stop() was called', async () => {
  const b = await backend()
  const refused = await freePort()
  const { engine, rec, events } = await startEngine({}, { shards: 1 })
  try {
    const ids = await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 6 })
    await engine.connect({ host: HOST, port: refused, protocol: 'up', count: 3 }) // retrying every 50 ms
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1) && b.sockets.size === 6, 5000, 'all up')
    await waitFor(() => events.some((e) => e.ev === 'retry'), 5000, 'retries under way')
    const l = await engine.listen({ port: 0, protocol: 'busy' })
    const client = await connect(l.port)
    client.on('error', () => {})
    // The shard spins in a hook; meanwhile stop() sets STOPPING and every backend connection is
    // reset. When the shard comes back it reads the resets before its stop handler shuts the
    // connections down: each is a drop during stop, which must not fail over.
    client.write('BUSY400')
    await waitFor(() => events.some((e) => e.ev === 'busy'), 3000, 'the shard busy in a hook')
    const stopped = engine.stop({ graceMs: 1000 })
    b.dropAll('rst')
    await stopped
    await sleep(50)
    const late = events.filter((e: Ev & { stopping?: boolean }) => (e.ev === 'failover' || e.ev === 'retry') && e.stopping)
    assert.equal(late.map((e) => `${e.ev}:${e.reason ?? e.attempt}`), [], 'failover/retry ran after stop() was called')
    const dropsDuringStop = events.filter((e: Ev & { stopping?: boolean }) => e.ev === 'drop' && e.stopping)
    assert.ok(dropsDuringStop.length > 0, 'the resets were read during stop, before the shutdown (else this test proves nothing)')
    for (const id of ids) assert.ok(evs(events, id, 'failover').every((e) => !(e as { stopping?: boolean }).stopping))
    const st = engine.stats()
    assert.is(st.reconnectsAfterStop, 0)
    assert.is(st.failovers, 0, 'no failover counted: every drop came after stop()')
    client.destroy()
  } finally { await engine.stop(); rec.close(); await b.close() }
})

test('every shard exits by itself after stop() under load: none terminated (shardsTerminated 0), no handle reported', async () => {
  const b = await backend()
  const refused = await freePort()
  const { engine, rec, events } = await startEngine({}, { shards: 2 })
  const terminated: unknown[] = []
  engine.on('shard-terminated', (d) => terminated.push(d))
  try {
    // Open and chatty connections, liveness ticks, and connections waiting on a long backoff
    // (≥ 5 s: the reconnect timer is armed when stop() comes).
    await engine.connect({ host: HOST, port: b.port, protocol: 'pinger', count: 4, liveness: { intervalMs: 50, timeoutMs: 500 } })
    await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 4 })
    await engine.connect({
      host: HOST, port: refused, protocol: 'upDefault', count: 4,
      retry: { baseMs: 5000, capMs: 10_000, jitter: 'decorrelated' },
    })
    const l = await engine.listen({ port: 0, protocol: 'up' })
    const clients = await Promise.all(Array.from({ length: 20 }, () => connect(l.port)))
    const chatter = setInterval(() => { for (const c of clients) if (!c.destroyed) c.write('tick') }, 5)
    for (const c of clients) c.on('error', () => {})
    await waitFor(() => events.filter((e) => e.ev === 'retry').length >= 2 && events.filter((e) => e.ev === 'idle').length >= 4, 5000, 'retries waiting, probes ticking')
    await waitFor(() => engine.stats().active >= 28, 5000, 'all open')
    await engine.stop({ graceMs: 1000 })
    clearInterval(chatter)
    for (const c of clients) c.destroy()
    assert.equal(terminated, [], 'a shard had to be terminated: these handles kept it alive')
    assert.is(engine.stats().shardsTerminated, 0)
    assert.is(engine.stats().reconnectsAfterStop, 0)
  } finally { await engine.stop(); rec.close(); await b.close() }
})

test('no handle left behind by the whole file', async () => {
  await waitFor(() => leakedHandles().length === 0, 2000).catch(() => {})
  assert.equal(leakedHandles(), [])
})

test.run()
