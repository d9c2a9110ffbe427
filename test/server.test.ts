// Persistent server connections (issue 4; DESIGN §6, F1, F2), on real loopback sockets and real
// shard threads: drop → failover → reconnect, refused → retry with backoff, reselect, give-up,
// the ready deadline, stop() in every state a connection can be in, the drop/close race, and
// option validation. Fault-proxy and namespace faults: faults.test.ts; liveness: liveness.test.ts.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import fc from 'fast-check'
import type { ChildProcess } from 'node:child_process'
import { backoffDelay, SyncsockError, idShard, type ConnectOptions } from '../src/index.ts'
import { normalizeConnect } from '../src/hooks/retry.ts'
import { waitFor, sleep, leakedHandles, checkReleasedOnce, connect } from './net-helpers.ts'
import {
  backend, freePort, blockedListener, killChild, startEngine, evs, incarnations, within,
  type Backend, type Ev,
  assertStoppedClean,
} from './conn-helpers.ts'

const HOST = '127.0.0.1'
const retryOf = (r: ConnectOptions['retry']) => normalizeConnect({ host: 'h', port: 1, protocol: 'p', retry: r }, () => true).retry

/** After stop(): F1 held, nothing is left open anywhere, every linked token came back once. */
/** No connect reaches `port` for a second: count accepts on a fresh listener we open there. */
async function assertNoConnectsTo(port: number): Promise<void> {
  const watch = await backend({ port })
  try {
    await sleep(1000)
    assert.is(watch.accepts, 0, `connect attempts reached port ${port} after stop`)
  } finally { await watch.close() }
}

async function assertNoHandles(): Promise<void> {
  await waitFor(() => leakedHandles().length === 0, 2000).catch(() => {})
  assert.equal(leakedHandles(), [], 'handles left in the test process')
}

// ---------------- the backoff schedule (pure: bounds, not wall-clock) ----------------

test('backoffDelay full jitter: uniform in [0, min(cap, base·2^(n-1))], doubling then capped', () => {
  const r = retryOf({ baseMs: 100, capMs: 1000 })
  assert.is(r.jitter, 'full')
  const ceilings = [100, 200, 400, 800, 1000, 1000, 1000]
  ceilings.forEach((ceil, i) => {
    const n = i + 1
    assert.is(backoffDelay(r, n, 0, () => 0), 0, `attempt ${n}, rand 0`)
    assert.is(backoffDelay(r, n, 0, () => 0.5), Math.round(ceil / 2), `attempt ${n}, rand 0.5`)
    assert.is(backoffDelay(r, n, 0, () => 1), ceil, `attempt ${n}, rand 1`)
  })
  // a huge attempt count neither overflows nor escapes the cap
  assert.is(backoffDelay(r, 1e9, 0, () => 1), 1000)
  assert.ok(Number.isFinite(backoffDelay(r, Number.MAX_SAFE_INTEGER, 0, () => 0.999)))
})

test('backoffDelay decorrelated jitter: uniform in [base, min(cap, 3·prev)], never below base', () => {
  const r = retryOf({ baseMs: 100, capMs: 1000, jitter: 'decorrelated' })
  assert.is(backoffDelay(r, 1, 100, () => 0), 100)
  assert.is(backoffDelay(r, 1, 100, () => 0.5), 200)
  // the upper edge grows ×3 from the previous delay until the cap
  let prev = 100
  const tops: number[] = []
  for (let n = 1; n <= 5; n++) { prev = backoffDelay(r, n, prev, () => 1); tops.push(prev) }
  assert.equal(tops, [300, 900, 1000, 1000, 1000])
  assert.is(backoffDelay(r, 3, 0, () => 1), 100, 'prev 0 (first) still starts at base')
})

test('backoffDelay property: every delay lies within the schedule bounds for any options', () => {
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 0, max: 100_000 }),
    fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 0, max: 200_000 }),
    fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom('full' as const, 'decorrelated' as const),
    (base, extra, attempt, prev, u, jitter) => {
      const r = retryOf({ baseMs: base, capMs: base + extra, jitter })
      const d = backoffDelay(r, attempt, prev, () => u)
      if (!Number.isInteger(d)) return false
      if (jitter === 'full') return d >= 0 && d <= Math.min(r.capMs, base * 2 ** Math.min(attempt - 1, 30))
      return d >= base && d <= r.capMs
    }), { numRuns: 2000 })
})

// ---------------- F2: drop → failover, refused → retry ----------------

test('a dropped connection goes connectionDrop → failover → connectionNew again under the same id (FIN, then RST)', async () => {
  const b = await backend()
  const { engine, rec, events } = await startEngine()
  try {
    const ids = await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 2 })
    assert.is(ids.length, 2)
    assert.is(new Set(ids.map(idShard)).size, 2, 'spread over both shards')
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1) && b.sockets.size === 2, 5000, 'both up')
    b.dropAll('fin')
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 2) && b.sockets.size === 2, 5000, 'both back after FIN')
    b.dropAll('rst')
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 3), 5000, 'both back after RST')
    for (const id of ids) {
      const [t1, t2, t3] = incarnations(events, id)
      assert.ok(t1 !== t2 && t2 !== t3, 'each incarnation links its own data')
      const seq = evs(events, id).map((e) => `${e.ev}:${e.reason ?? ''}:${e.token ?? e.inc}`)
      assert.equal(seq, [
        `new::${t1}`, `drop:fin:${t1}`, `failover:fin:${t1}`,
        `new::${t2}`, `drop:reset:${t2}`, `failover:reset:${t2}`,
        `new::${t3}`,
      ])
    }
    const st = engine.stats()
    assert.is(st.failovers, 4)
    assert.is(st.droppedFin, 2)
    assert.is(st.droppedReset, 2)
    assert.is(st.reconnects, 4)
    assert.is(st.connected, 6)
    assert.is(st.retries, 0, 'a drop of an established connection is failover, not retry')
    assert.is(st.serverConns, 2)
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b.close() }
})

test('a refused connect retries with attempt 1, 2, 3, … and counts connectFailedRefused; it connects once the server appears', async () => {
  const port = await freePort()
  const { engine, rec, events } = await startEngine()
  let b: Backend | null = null
  try {
    const ids = await engine.connect({ host: HOST, port, protocol: 'upDefault', count: 2, retry: { baseMs: 10, capMs: 40, resetAfterMs: 200 } })
    await waitFor(() => ids.every((id) => evs(events, id, 'retry').length >= 5), 8000, '5 retries each')
    for (const id of ids) {
      const retries = evs(events, id, 'retry')
      assert.equal(retries.slice(0, 5).map((e) => e.attempt), [1, 2, 3, 4, 5])
      assert.ok(retries.every((e) => e.code === 'ECONNREFUSED'), 'retry gets the connect error')
      assert.is(evs(events, id, 'failover').length, 0, 'never established: no failover')
      assert.is(evs(events, id, 'new').length, 0)
    }
    // the counter is bumped right after the hook that posted the event: let it land
    await waitFor(() => engine.stats().retries >= 10, 2000, 'retries counted')
    const st = engine.stats()
    assert.ok(st.connectFailedRefused >= 10, `connectFailedRefused ${st.connectFailedRefused}`)
    assert.is(st.connectFailed, st.connectFailedRefused, 'every failure here is a refusal')
    assert.ok(st.connectAttempts >= 10)
    assert.is(st.deadConnections, 0, 'no maxAttempts: never dead')

    b = await backend({ port })
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1), 5000, 'both connect once the server listens')
    // Up longer than resetAfterMs: the failure count starts over (no attempt 7 after a good run).
    await sleep(400)
    const seen = new Map(ids.map((id) => [id, evs(events, id, 'retry').length]))
    await b.close()
    b = null
    await waitFor(() => ids.every((id) => evs(events, id, 'retry').length > seen.get(id)!), 5000, 'retries after the server went away')
    for (const id of ids) {
      const next = evs(events, id, 'retry')[seen.get(id)!]
      assert.is(next.attempt, 1, `attempt count restarted after a good run: got ${next.attempt}`)
    }
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b?.close() }
})

test('ctx.connect from a hook makes a server connection pinned to that shard', async () => {
  const b = await backend()
  const { engine, rec, events } = await startEngine()
  try {
    const l = await engine.listen({ port: 0, protocol: 'spawner' })
    const c = await connect(l.port)
    c.write(`${HOST}:${b.port}`)
    await waitFor(() => events.some((e) => e.ev === 'spawned'), 3000, 'spawned')
    const sp = events.find((e) => e.ev === 'spawned')! as Ev & { connId: number }
    assert.is(idShard(sp.connId), sp.shard, 'pinned to the shard that asked')
    await waitFor(() => incarnations(events, sp.connId).length === 1 && b.sockets.size === 1, 3000, 'up')
    assert.is(engine.send(sp.connId, Buffer.from('x')), 'ok')
    c.destroy()
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b.close() }
})

test('failover can reselect: a dropped connection reconnects to the second target and stays there', async () => {
  const a = await backend()
  const b2 = await backend()
  const { engine, rec, events } = await startEngine({ SS_RESELECT: `${HOST}:${b2.port}` })
  try {
    const ids = await engine.connect({ host: HOST, port: a.port, protocol: 'reselect', count: 2 })
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1) && a.sockets.size === 2, 5000, 'up on A')
    assert.is(b2.accepts, 0)
    a.dropAll('fin')
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 2) && b2.sockets.size === 2, 5000, 'reconnected to B')
    assert.is(a.accepts, 2, 'nothing went back to A')
    // a second drop on B reconnects to B again (the reselected target is the connection's target now)
    b2.dropAll('rst')
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 3) && b2.sockets.size === 2, 5000, 'back on B')
    assert.is(a.accepts, 2)
    assert.is(b2.accepts, 4)
    for (const id of ids) assert.equal(evs(events, id, 'failover').map((e) => e.reason), ['fin', 'reset'])
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await a.close(); await b2.close() }
})

test('retry gives up after retry.maxAttempts: the connection is marked dead, reported, and never connects again', async () => {
  const port = await freePort()
  const { engine, rec, events } = await startEngine()
  const dead: Record<string, unknown>[] = []
  engine.on('dead', (d) => dead.push(d))
  let b: Backend | null = null
  try {
    const [id] = await engine.connect({ host: HOST, port, protocol: 'up', count: 1, retry: { maxAttempts: 3 } })
    await waitFor(() => dead.length === 1, 5000, 'dead event')
    assert.is(dead[0].id, id)
    assert.is(dead[0].port, port)
    await sleep(100)
    assert.equal(evs(events, id, 'retry').map((e) => e.attempt), [1, 2], 'the retry hook saw attempts 1..maxAttempts-1; failure #maxAttempts is the give-up')
    const st = engine.stats()
    assert.is(st.deadConnections, 1)
    assert.is(st.retries, 2, 'the give-up is not counted as a retry')
    assert.is(st.connectAttempts, 3, 'maxAttempts failed connects in a row, then dead')
    assert.is(engine.send(id, Buffer.from('x')), 'ERR_SS_NOT_CONNECTED')
    // dead means dead: a server appearing later gets nothing
    b = await backend({ port })
    await sleep(500)
    assert.is(b.accepts, 0, 'a dead connection reconnected')
    assert.is(engine.stats().connectAttempts, 3)
    // an intentional close of a dead connection frees it
    assert.is(engine.close(id), 'ok')
    await waitFor(() => engine.stats().serverConns === 0, 2000, 'dead connection freed by close')
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b?.close() }
})

test('failover that declines (returns false) marks the connection dead instead of reconnecting', async () => {
  const b = await backend()
  const { engine, rec, events } = await startEngine()
  const dead: Record<string, unknown>[] = []
  engine.on('dead', (d) => dead.push(d))
  try {
    const [id] = await engine.connect({ host: HOST, port: b.port, protocol: 'noReconnect' })
    await waitFor(() => incarnations(events, id).length === 1 && b.sockets.size === 1, 5000, 'up')
    b.dropAll('fin')
    await waitFor(() => dead.length === 1, 5000, 'dead event')
    assert.is(dead[0].id, id)
    await sleep(300)
    assert.is(b.accepts, 1, 'no reconnect after failover declined')
    assert.is(engine.stats().deadConnections, 1)
    assert.equal(evs(events, id).map((e) => e.ev), ['new', 'drop', 'failover'])
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b.close() }
})

// ---------------- the ready deadline ----------------

test('ready deadline: connects into a listener that never accepts are timed out and retried, never left hanging', async () => {
  const port = await freePort()
  let child: ChildProcess | null = await blockedListener(port)
  const { engine, rec, events } = await startEngine()
  let b: Backend | null = null
  try {
    // The first backlog+1 handshakes complete into the accept queue (the client believes it is
    // connected, nobody will ever read); later SYNs are dropped (the connect itself hangs).
    const ids = await engine.connect({
      host: HOST, port, protocol: 'hello', count: 4, connectTimeoutMs: 800, readyTimeoutMs: 300,
    } as ConnectOptions & { readyTimeoutMs: number })
    await waitFor(() => ids.every((id) => evs(events, id, 'retry').length >= 2), 10_000, 'every connection retried twice')
    const retries = events.filter((e) => e.ev === 'retry')
    assert.ok(retries.every((e) => e.code === 'ERR_SS_TIMEOUT'), `retry causes: ${[...new Set(retries.map((e) => e.code))]}`)
    const readyDrops = events.filter((e) => e.ev === 'drop' && e.reason === 'ready-timeout')
    assert.ok(readyDrops.length >= 1, 'a TCP-complete but never-ready connection was dropped as ready-timeout')
    assert.ok(retries.some((e) => /readyTimeoutMs/.test(e.error ?? '')), 'the ready timeout went to retry')
    assert.is(events.filter((e) => e.ev === 'failover').length, 0, 'never ready is a failed connect (retry), not a failover')
    assert.ok(engine.stats().connectFailedTimeout >= 1, 'connect timeouts counted')

    // the listener comes back for real: every connection becomes usable (its hello is echoed)
    await killChild(child)
    child = null
    b = await backend({ port })
    await waitFor(() => ids.every((id) => evs(events, id, 'recv').length >= 1), 10_000, 'every connection ready')
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await killChild(child); await b?.close() }
})

// ---------------- stop(): F1 in every state ----------------

test('stop() with connections up: each gets connectionClose, then no reconnect, no handle, data released once', async () => {
  const b = await backend()
  const { engine, rec, events } = await startEngine()
  try {
    const ids = await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 6 })
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1), 5000, 'all up')
    await within(engine.stop(), 10_000, 'stop')
    await waitFor(() => events.filter((e) => e.ev === 'close').length === 6, 2000, 'six closes').catch(() => {})
    assert.equal(events.filter((e) => e.ev === 'close').map((e) => e.cause), Array(6).fill('shutdown'))
    assert.is(events.filter((e) => e.ev === 'failover' || e.ev === 'retry').length, 0, 'F1: no failover or retry for a stopping engine')
    await assertStoppedClean(engine, events)
    await sleep(200) // accepts of connects made before stop may still be queued
    const before = b.accepts
    await sleep(1000)
    assert.is(b.accepts, before, 'reconnects reached the server after stop')
    await b.close()
    rec.close()
    await assertNoHandles()
  } finally { await engine.stop(); rec.close(); await b.close() }
})

test('stop() while connections are still connecting (a listener that never answers): nothing lingers', async () => {
  const port = await freePort()
  let child: ChildProcess | null = await blockedListener(port)
  const { engine, rec, events } = await startEngine()
  try {
    await engine.connect({ host: HOST, port, protocol: 'up', count: 8, connectTimeoutMs: 30_000 })
    await waitFor(() => engine.stats().connectAttempts >= 8, 5000, 'all connects started')
    await sleep(200)
    assert.ok(engine.stats().connectsInFlight >= 4, `connects in flight: ${engine.stats().connectsInFlight}`)
    await within(engine.stop({ graceMs: 3000 }), 15_000, 'stop')
    await assertStoppedClean(engine, events)
    await killChild(child)
    child = null
    await assertNoConnectsTo(port)
    rec.close()
    await assertNoHandles()
  } finally { await engine.stop(); rec.close(); await killChild(child) }
})

test('stop() while many connections wait in backoff: their reconnect timers never fire', async () => {
  const port = await freePort()
  const { engine, rec, events } = await startEngine()
  try {
    // decorrelated jitter keeps every delay in [500, 800] ms: all are waiting when stop begins,
    // and all would be due inside the 1 s watch below if a timer survived
    const ids = await engine.connect({
      host: HOST, port, protocol: 'upDefault', count: 200,
      retry: { baseMs: 500, capMs: 800, jitter: 'decorrelated' },
    })
    await waitFor(() => engine.stats().retries >= 200, 8000, 'all 200 in backoff')
    assert.is(engine.stats().serverConns, 200)
    await within(engine.stop(), 10_000, 'stop')
    assert.ok(ids.every((id) => evs(events, id, 'new').length === 0))
    await assertStoppedClean(engine, events) // reconnectsAfterStop: no connect once STOPPING was set
    await assertNoConnectsTo(port)
    rec.close()
    await assertNoHandles()
  } finally { await engine.stop(); rec.close() }
})

test('stop() while the peer keeps dropping connections: no reconnect after stop, data released once', async () => {
  const timers = new Set<NodeJS.Timeout>()
  const b = await backend({
    onSocket: (s) => {
      const t = setTimeout(() => { timers.delete(t); s.destroy() }, Math.floor(Math.random() * 30))
      timers.add(t)
    },
  })
  const { engine, rec, events } = await startEngine()
  try {
    await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 20 })
    await waitFor(() => engine.stats().failovers >= 60, 10_000, 'churn under way')
    await within(engine.stop(), 10_000, 'stop')
    await assertStoppedClean(engine, events)
    await sleep(200) // accepts of connects made before stop may still be queued
    const before = b.accepts
    await sleep(1000)
    assert.is(b.accepts, before, 'reconnects reached the server after stop')
    for (const t of timers) clearTimeout(t)
    await b.close()
    rec.close()
    await assertNoHandles()
  } finally { for (const t of timers) clearTimeout(t); await engine.stop(); rec.close(); await b.close() }
})

// ---------------- the drop/close race ----------------

test('race: a peer drop and engine.close(id) at the same moment, 60 times: never both failover and close for one incarnation', async () => {
  const b = await backend()
  const { engine, rec, events } = await startEngine()
  try {
    const all: number[] = []
    const nextTurn = () => new Promise<void>((r) => setImmediate(r))
    for (let round = 0; round < 6; round++) {
      const ids = await engine.connect({ host: HOST, port: b.port, protocol: 'upSlow', count: 10 })
      all.push(...ids)
      await waitFor(() => ids.every((id) => incarnations(events, id).length === 1 && b.byPeerPort(evs(events, id, 'new')[0].localPort!)),
        5000, `round ${round}: all up`)
      // The two ends meet at slightly different moments each time: the same tick either way
      // round, one loop turn apart, or a couple of ms apart (RST or FIN from the peer).
      await Promise.all(ids.map(async (id, i) => {
        const peer = b.byPeerPort(evs(events, id, 'new')[0].localPort!)!
        const drop = () => (i % 2 === 0 ? peer.resetAndDestroy() : peer.destroy())
        const close = () => assert.is(engine.close(id), 'ok')
        switch ((i + round) % 5) {
          case 0: drop(); close(); break
          case 1: close(); drop(); break
          case 2: drop(); await nextTurn(); close(); break
          case 3: close(); await nextTurn(); drop(); break
          case 4: drop(); await sleep(2); close(); break
        }
      }))
      await waitFor(() => engine.stats().serverConns === 0, 5000, `round ${round}: every closed connection freed`)
    }
    await sleep(100) // let the last hook events cross over
    let closes = 0, failovers = 0
    for (const id of all) {
      const toks = incarnations(events, id)
      assert.is(toks.length, 1, `connection ${id} reconnected after close(): ${toks}`)
      const t = toks[0]
      const drop = events.filter((e) => e.ev === 'drop' && e.token === t).length
      const close = events.filter((e) => e.ev === 'close' && e.token === t).length
      const fo = events.filter((e) => e.ev === 'failover' && e.inc === t).length
      assert.is(drop + close, 1, `incarnation ${t}: drop ${drop}, close ${close}`)
      assert.ok(!(close && fo), `incarnation ${t} got both close and failover`)
      assert.ok(fo <= drop, `failover without drop for ${t}`)
      closes += close; failovers += fo
    }
    console.log(`  race: close won ${closes}, drop won ${all.length - closes} (${failovers} failovers)`)
    assert.ok(closes > 0, 'the close side never won: the race was not exercised')
    const st = engine.stats()
    assert.is(st.connectsInFlight, 0)
    assert.is(st.reconnectsAfterStop, 0)
    assert.is(st.closed, all.length, 'every connection closed once')
    assert.equal(checkReleasedOnce(events), [])
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b.close() }
})

test('close(id) of connections that are still connecting gives their admission back (connectsInFlight returns to 0)', async () => {
  const port = await freePort()
  let child: ChildProcess | null = await blockedListener(port)
  const { engine, rec, events } = await startEngine({}, { maxConnectsInFlight: 4 })
  let b: Backend | null = null
  try {
    const stuck = await engine.connect({ host: HOST, port, protocol: 'up', count: 8, connectTimeoutMs: 30_000 })
    await waitFor(() => engine.stats().connectAttempts >= 6, 5000, 'connects started')
    // abort: the handshakes that landed in the accept queue would never answer a graceful FIN
    for (const id of stuck) assert.is(engine.close(id, { mode: 'abort' }), 'ok')
    await waitFor(() => engine.stats().serverConns === 0, 3000, 'closed connections freed')
    assert.is(engine.stats().connectsInFlight, 0, 'admission leaked by close during connect')
    assert.is(engine.stats().active, 0)
    // the shard can still connect: its admission slots are all free again
    await killChild(child)
    child = null
    b = await backend()
    const ids = await engine.connect({ host: HOST, port: b.port, protocol: 'up', count: 8 })
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1), 5000, 'new connections up')
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await killChild(child); await b?.close() }
})

// ---------------- option validation ----------------

test('bad connect options are typed errors (ERR_SS_BAD_OPTION), never a crash or a hang; the engine keeps working', async () => {
  const b = await backend()
  const { engine, rec, events } = await startEngine()
  try {
    const base = { host: HOST, port: b.port, protocol: 'up' }
    const bad: [string, unknown][] = [
      ['negative retry.baseMs', { ...base, retry: { baseMs: -1 } }],
      ['negative retry.capMs', { ...base, retry: { capMs: -5 } }],
      ['capMs < baseMs', { ...base, retry: { baseMs: 500, capMs: 100 } }],
      ['bad jitter', { ...base, retry: { jitter: 'sometimes' } }],
      ['retry.maxAttempts 0', { ...base, retry: { maxAttempts: 0 } }],
      ['negative resetAfterMs', { ...base, retry: { resetAfterMs: -1 } }],
      ['count 0', { ...base, count: 0 }],
      ['count -3', { ...base, count: -3 }],
      ['count 1.5', { ...base, count: 1.5 }],
      ['unknown protocol', { ...base, protocol: 'no-such-protocol' }],
      ['port 0', { ...base, port: 0 }],
      ['port 70000', { ...base, port: 70000 }],
      ['port as string', { ...base, port: '80' }],
      ['empty host', { ...base, host: '' }],
      ['negative connectTimeoutMs', { ...base, connectTimeoutMs: -1 }],
      ['negative readyTimeoutMs', { ...base, readyTimeoutMs: -1 }],
      ['liveness.intervalMs negative', { ...base, liveness: { intervalMs: -1, timeoutMs: 100 } }],
      ['liveness.misses 0', { ...base, liveness: { intervalMs: 100, timeoutMs: 100, misses: 0 } }],
      ['liveness not an object', { ...base, liveness: 5 }],
      ['shard out of range', { ...base, shard: 9 }],
      ['options null', null],
    ]
    for (const [what, opts] of bad) {
      let err: unknown = null
      try {
        await within(engine.connect(opts as ConnectOptions), 5000, what)
      } catch (e) { err = e }
      assert.ok(err, `${what}: accepted`)
      assert.ok(SyncsockError.is(err, 'ERR_SS_BAD_OPTION'), `${what}: got ${(err as Error).message}`)
    }
    const st = engine.stats()
    assert.is(st.serverConns, 0, 'a rejected connect left a connection behind')
    assert.is(st.connectAttempts, 0)
    const ids = await engine.connect({ ...base, count: 2 })
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1), 5000, 'a good connect still works')
    assert.is(engine.stats().hookErrors, 0)
    await engine.stop()
    await assertStoppedClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b.close() }
})

test.run()
