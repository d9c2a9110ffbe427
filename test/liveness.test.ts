// Liveness of server connections (issue 4; DESIGN §6; Meridio #522), through the fault proxy on
// loopback: a peer that accepts and never answers, one that stops answering on live connections,
// and one that is merely slow. The protocol's connectionIdle sends a ping each interval; any bytes
// back answer it; `misses` unanswered probes drop the incarnation with reason 'liveness', which is
// a failover (it was established), never a silent hang.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { waitFor, sleep } from './net-helpers.ts'
import { backend, startEngine, evs, incarnations, stopClean, answered } from './conn-helpers.ts'
import { FaultProxy } from './fault-proxy.ts'
import type { ConnectOptions } from '../src/index.ts'

const HOST = '127.0.0.1'

async function setup(mode: FaultProxy['mode']) {
  const b = await backend()
  const proxy = await FaultProxy.start({ port: b.port }, { mode })
  const { engine, rec, events } = await startEngine()
  const cleanup = async () => { await engine.stop(); rec.close(); await proxy.close(); await b.close() }
  return { b, proxy, engine, events, cleanup }
}

test('accept-then-silence: liveness fires (misses probes) and the connection fails over with reason liveness', async () => {
  const { proxy, engine, events, cleanup } = await setup('silence')
  try {
    const ids = await engine.connect({
      host: HOST, port: proxy.port, protocol: 'pinger', count: 2,
      liveness: { intervalMs: 100, timeoutMs: 200, misses: 2 },
    })
    await waitFor(() => ids.every((id) => evs(events, id, 'failover').length >= 1), 8000, 'liveness failover on both')
    for (const id of ids) {
      const [t1] = incarnations(events, id)
      const mine = evs(events, id).filter((e) => e.token === t1 || e.inc === t1)
      assert.ok(mine.filter((e) => e.ev === 'idle').length >= 2, 'at least `misses` probes went out first')
      assert.equal(mine.filter((e) => e.ev !== 'idle').map((e) => `${e.ev}:${e.reason ?? ''}`), ['new:', 'drop:liveness', 'failover:liveness'])
    }
    const st = engine.stats()
    assert.ok(st.droppedLiveness >= 2, `droppedLiveness ${st.droppedLiveness}`)
    assert.ok(st.livenessFailures >= 4, `livenessFailures ${st.livenessFailures} (2 misses each)`)
    assert.ok(st.failovers >= 2)
    assert.is(st.retries, 0, 'a liveness drop is a failover, not a retry')

    // the path heals: pings are answered and the new incarnations stay up
    proxy.setMode('pass')
    await waitFor(() => ids.every((id) => answered(events, id)), 8000, 'answered pings after healing')
    const drops = engine.stats().droppedLiveness
    const tokens = ids.map((id) => incarnations(events, id).at(-1))
    await sleep(800) // several intervals and timeouts
    assert.is(engine.stats().droppedLiveness, drops, 'a healthy connection was dropped by liveness')
    assert.equal(ids.map((id) => incarnations(events, id).at(-1)), tokens, 'no reconnect while healthy')
    await stopClean(engine, events)
  } finally { await cleanup() }
})

test('a listener that stops answering: live connections are dropped by liveness, come back when it answers again', async () => {
  const { proxy, engine, events, cleanup } = await setup('pass')
  try {
    const ids = await engine.connect({
      host: HOST, port: proxy.port, protocol: 'pinger', count: 2,
      liveness: { intervalMs: 100, timeoutMs: 250, misses: 1 },
    })
    await waitFor(() => ids.every((id) => answered(events, id)), 5000, 'pings answered')
    const first = ids.map((id) => incarnations(events, id)[0])
    await sleep(400)
    assert.is(engine.stats().droppedLiveness, 0, 'no false down while answered')
    proxy.setMode('stop')
    await waitFor(() => ids.every((id) => evs(events, id, 'failover').some((e) => e.reason === 'liveness')), 5000, 'liveness failover')
    ids.forEach((id, i) => {
      const drop = evs(events, id, 'drop')[0]
      assert.is(drop.token, first[i])
      assert.is(drop.reason, 'liveness')
    })
    proxy.setMode('pass')
    await waitFor(() => ids.every((id) => incarnations(events, id).length >= 2 && answered(events, id)), 8000, 'back after answering again')
    await stopClean(engine, events)
  } finally { await cleanup() }
})

test('a probe belongs to one incarnation: a probe pending at a drop never judges the next incarnation', async () => {
  const { proxy, engine, events, cleanup } = await setup('pass')
  try {
    // misses 1, timeout 600 ms: the probe sent into the stalled path is still pending when the
    // peer drops the connection; the next incarnation (answered) must not inherit its verdict
    const [id] = await engine.connect({
      host: HOST, port: proxy.port, protocol: 'pinger', count: 1,
      liveness: { intervalMs: 100, timeoutMs: 600, misses: 1 },
    })
    await waitFor(() => answered(events, id), 5000, 'up and answered')
    proxy.setMode('stop')
    const idles = evs(events, id, 'idle').length
    await waitFor(() => evs(events, id, 'idle').length > idles, 3000, 'a probe into the stalled path')
    proxy.setMode('pass')
    proxy.resetAll() // the peer ends the incarnation while its probe is unanswered
    await waitFor(() => incarnations(events, id).length === 2, 5000, 'second incarnation')
    const [t1, t2] = incarnations(events, id)
    assert.equal(evs(events, id, 'drop').map((e) => `${e.token}:${e.reason}`), [`${t1}:reset`])
    await sleep(1200) // two probe timeouts
    assert.is(engine.stats().droppedLiveness, 0, 'the old probe dropped the new incarnation')
    assert.is(evs(events, id, 'drop').length, 1)
    assert.ok(events.some((e) => e.ev === 'recv' && e.token === t2), 'the new incarnation is answered')
    await stopClean(engine, events)
  } finally { await cleanup() }
})

test('a slow peer is not a dead one: delayed answers within timeoutMs keep it up; beyond it, liveness fires', async () => {
  const { proxy, engine, events, cleanup } = await setup('delay')
  proxy.setMode('delay', 300)
  try {
    const ids = await engine.connect({
      host: HOST, port: proxy.port, protocol: 'pinger', count: 2,
      liveness: { intervalMs: 100, timeoutMs: 1500, misses: 1 },
    } satisfies ConnectOptions)
    await waitFor(() => ids.every((id) => answered(events, id)), 5000, 'delayed answers arrive')
    await sleep(1500)
    let st = engine.stats()
    assert.is(st.droppedLiveness, 0, 'false down: a 300 ms delay under a 1500 ms timeout')
    assert.is(st.failovers, 0)
    // now slower than the timeout (each way): that is indistinguishable from dead, and must drop
    proxy.setMode('delay', 2000)
    await waitFor(() => engine.stats().droppedLiveness >= 2, 8000, 'liveness drop beyond the timeout')
    st = engine.stats()
    assert.ok(events.filter((e) => e.ev === 'failover').every((e) => e.reason === 'liveness'))
    await stopClean(engine, events)
  } finally { await cleanup() }
})

test('a ready deadline keeps its own resolution even when a coarse liveness watch started the shard\'s tick first', async () => {
  const { proxy, engine, events, cleanup } = await setup('pass')
  const silent = await FaultProxy.start({ port: proxy.port }, { mode: 'silence' })
  try {
    // A: answered, probed every 4 s (its tick is coarse: 1 s). B, on the same shard, must be
    // ready 150 ms after connecting; if its deadline were checked at A's tick it would take a
    // second per attempt instead of about a fifth.
    const [a] = await engine.connect({
      host: HOST, port: proxy.port, protocol: 'pinger', shard: 0,
      liveness: { intervalMs: 4000, timeoutMs: 4000 },
    })
    await waitFor(() => incarnations(events, a).length === 1, 5000, 'A up')
    await sleep(50)
    const [bId] = await engine.connect({
      host: HOST, port: silent.port, protocol: 'hello', shard: 0, readyTimeoutMs: 150,
    } as ConnectOptions & { readyTimeoutMs: number })
    await sleep(2500)
    const n = evs(events, bId, 'drop').filter((e) => e.reason === 'ready-timeout').length
    assert.ok(n >= 4, `only ${n} ready timeouts in 2.5 s: the 150 ms deadline ran on a coarse tick`)
    await stopClean(engine, events)
  } finally { await silent.close(); await cleanup() }
})

test.run()
