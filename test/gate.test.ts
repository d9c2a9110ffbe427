// Target gates (src/hooks/gate.ts; Icinga 2 #6517): while a target refuses, one probe at a time
// tries it and the other connections park; when it comes back they all return with about one
// attempt each; when it stays dead, maxAttempts probe rounds give one verdict for all of them.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { waitFor, sleep } from './net-helpers.ts'
import { backend, freePort, startEngine, evs, incarnations, stopClean, type Backend } from './conn-helpers.ts'

const HOST = '127.0.0.1'
const N = 60

test('a listener gap: the rest park behind one probe, few connects hit the dead port, all come back with <= 3 attempts each', async () => {
  let b: Backend | null = await backend()
  const port = b.port
  const { engine, rec, events } = await startEngine({}, { shards: 1 })
  try {
    const ids = await engine.connect({ host: HOST, port, protocol: 'upDefault', count: N, retry: { baseMs: 50, capMs: 400 } })
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 1), 5000, 'all up')
    const before = engine.stats().connectAttempts
    await b.close() // drops every connection and refuses new ones
    b = null
    await waitFor(() => engine.stats().parked >= N - 2, 5000, 'the rest parked behind the probe')
    const waveAndProbes = engine.stats().connectAttempts - before
    await sleep(800) // the gap: only the probe keeps trying
    const duringGap = engine.stats().connectAttempts - before - waveAndProbes
    assert.ok(duringGap <= 12, `probe connects during an 800 ms gap: ${duringGap} (one probe at a time, backoff 50..400 ms)`)
    b = await backend({ port })
    await waitFor(() => ids.every((id) => incarnations(events, id).length === 2), 8000, 'all back after the gap')
    assert.is(engine.stats().parked, 0)
    for (const id of ids) {
      const attempts = evs(events, id, 'retry').length + 1
      assert.ok(attempts <= 3, `connection ${id}: ${attempts} attempts: ${JSON.stringify(evs(events, id).map((e) => [e.ev, e.attempt ?? e.reason ?? ""]))}`)
    }
    const total = engine.stats().connectAttempts - before
    assert.ok(total < 2 * N + 12, `connects for the whole gap: ${total} (naive: one per connection per retry)`)
    await stopClean(engine, events)
  } finally { await engine.stop(); rec.close(); await b?.close() }
})

test('a dead target: maxAttempts probe rounds, then every connection waiting on it is dead (one verdict, not N)', async () => {
  const port = await freePort()
  const { engine, rec, events } = await startEngine({}, { shards: 1 })
  const dead: unknown[] = []
  engine.on('dead', (d) => dead.push(d))
  try {
    await engine.connect({ host: HOST, port, protocol: 'upDefault', count: N, retry: { baseMs: 20, capMs: 50, maxAttempts: 3 } })
    await waitFor(() => dead.length === N, 5000, 'all dead')
    const st = engine.stats()
    assert.is(st.deadConnections, N)
    assert.is(st.parked, 0)
    // the first wave (every connection once) plus two more probe rounds
    assert.ok(st.connectAttempts <= N + 2, `connect attempts: ${st.connectAttempts}`)
    await sleep(200)
    assert.is(engine.stats().connectAttempts, st.connectAttempts, 'dead means no more connects')
    await stopClean(engine, events)
  } finally { await engine.stop(); rec.close() }
})

test('closing the probe hands the role on; closing parked connections frees them', async () => {
  const port = await freePort()
  const { engine, rec, events } = await startEngine({}, { shards: 1 })
  try {
    const ids = await engine.connect({ host: HOST, port, protocol: 'upDefault', count: 10, retry: { baseMs: 20, capMs: 60 } })
    await waitFor(() => engine.stats().parked === 9, 5000, 'nine parked')
    for (const id of ids.slice(0, 5)) assert.is(engine.close(id), 'ok')
    await waitFor(() => engine.stats().serverConns === 5, 3000, 'closed ones freed')
    const at = engine.stats().connectAttempts
    await waitFor(() => engine.stats().connectAttempts > at + 2, 3000, 'a probe keeps trying')
    assert.ok(engine.stats().parked <= 4)
    const b = await backend({ port })
    try {
      await waitFor(() => ids.slice(5).every((id) => incarnations(events, id).length === 1), 5000, 'the rest connect')
      for (const id of ids.slice(0, 5)) assert.is(incarnations(events, id).length, 0, 'a closed connection never connected')
      await stopClean(engine, events)
    } finally { await b.close() }
  } finally { await engine.stop(); rec.close() }
})

test('a probe that gives up (its retry says no) hands the role on: nobody stays parked behind it', async () => {
  const port = await freePort()
  const { engine, rec, events } = await startEngine({}, { shards: 1 })
  const dead: unknown[] = []
  engine.on('dead', (d) => dead.push(d))
  try {
    await engine.connect({ host: HOST, port, protocol: 'giveUpSecond', count: 10, retry: { baseMs: 10, capMs: 20 } })
    // every connection in turn probes, fails its second connect and gives up
    await waitFor(() => dead.length === 10, 5000, 'all ten gave up')
    assert.is(engine.stats().parked, 0)
    await stopClean(engine, events)
  } finally { await engine.stop(); rec.close() }
})

test.run()
