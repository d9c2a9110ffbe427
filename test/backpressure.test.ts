// S3 — no deadlock by send (Kuma #5373): sending never waits for the peer. A bounded queue with a
// high-water mark turns into connectionWritable; a peer that stops reading is dropped with
// reason send-timeout after sendTimeoutMs; foreign sends are refused above high water.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { Engine } from '../src/index.ts'
import { recordEvents, waitFor, connect, closed, leakedHandles, sleep } from './net-helpers.ts'

const FLOW = new URL('./fixtures/flow.ts', import.meta.url).pathname
const rec = recordEvents('flow-test')
const engine = await Engine.start({ shards: 2, hooks: FLOW, highWater: 256 * 1024, maxQueue: 1 << 20, sendTimeoutMs: 400, closeTimeoutMs: 300 })
const flood = await engine.listen({ port: 0, protocol: 'flood' })

test('a slow reader gets everything: high-water, then connectionWritable, nothing lost', async () => {
  const c = await connect(flood.port)
  let got = 0
  c.on('data', (d) => {
    got += d.length
    c.pause()
    setTimeout(() => c.resume(), 1) // read slowly, but keep reading
  })
  await closed(c, 20_000)
  assert.is(got, 8 << 20)
  const done = rec.of('done').find((e) => e.shard !== undefined)
  assert.ok(done, 'the protocol finished')
  assert.ok(rec.of('writable').length > 0, 'connectionWritable fired')
  assert.ok(rec.of('status').some((e) => (e as unknown as { status: string }).status === 'high-water'))
})

test('a peer that never reads is dropped with send-timeout, never waited on', async () => {
  const before = engine.stats().droppedSendTimeout
  const c = await connect(flood.port)
  c.pause() // never read
  c.on('error', () => {})
  await waitFor(() => rec.of('drop').some((e) => e.reason === 'send-timeout'), 10_000, 'send-timeout drop')
  assert.is(engine.stats().droppedSendTimeout - before, 1)
  // A paused socket does not read, so it cannot see the RST until it reads again.
  let err: NodeJS.ErrnoException | undefined
  c.on('error', (e) => { err = e })
  c.resume()
  await closed(c, 5000)
  assert.is(err?.code, 'ECONNRESET', 'the engine aborted it (RST), it did not wait for the peer')
})

test('foreign sends are refused with ERR_SS_BACKPRESSURE while the socket is above high water', async () => {
  const n = rec.of('new').length
  const c = await connect(flood.port)
  c.pause()
  c.on('error', () => {})
  await waitFor(() => rec.of('new').length > n, 3000)
  const id = rec.of('new')[n].id
  await waitFor(() => engine.send(id, Buffer.from('x')) === 'ERR_SS_BACKPRESSURE', 3000, 'backpressure refusal')
  c.destroy()
})

test('ctx.timer runs under the lock while linked and dies with the link', async () => {
  const l = await engine.listen({ port: 0, protocol: 'timed' })
  try {
    const c = await connect(l.port)
    let text = ''
    c.on('data', (d) => { text += d })
    await waitFor(() => text.includes('tick 3'), 3000, 'three ticks')
    assert.is(text, 'tick 1\ntick 2\ntick 3\n')
    // a timer armed, then the data unlinked: the timer must not run
    const c2 = await connect(l.port)
    c2.write('UNLINK')
    await waitFor(() => rec.of('unlinked').length > 0, 3000)
    const ticks = rec.of('tick').length
    await sleep(150)
    const after = rec.of('tick').filter((e) => e.id === rec.of('unlinked')[0].id)
    assert.ok(after.length <= 1, `no tick after unlink (saw ${after.length}, total ${ticks})`)
    c.destroy(); c2.destroy()
  } finally { await l.close() }
})

test('built-in echo holds backpressure both ways: a client that reads slowly loses no byte', async () => {
  const l = await engine.listen({ port: 0, protocol: 'echo' })
  try {
    const refusedBefore = engine.stats().sendRefused
    const c = await connect(l.port)
    const total = 12 << 20 // well above maxQueue (1 MiB): only backpressure can carry it
    let got = 0
    c.on('data', (d) => { got += d.length; c.pause(); setTimeout(() => c.resume(), 2) })
    const chunk = Buffer.alloc(64 * 1024, 0x62)
    let sent = 0
    while (sent < total) {
      sent += chunk.length
      if (!c.write(chunk)) await new Promise((r) => c.once('drain', r))
    }
    await waitFor(() => got === total, 30_000, `all ${total} bytes echoed (got ${got})`)
    assert.is(engine.stats().sendRefused - refusedBefore, 0, 'echo never hit the queue cap')
    c.destroy()
  } finally { await l.close() }
})

test('a graceful close whose peer never sends its FIN is aborted after closeTimeoutMs', async () => {
  const before = engine.stats().closeTimeouts
  const c = await connect(flood.port)
  c.allowHalfOpen = true // take the server's FIN and never answer with ours
  let got = 0, sawEnd = false
  let err: NodeJS.ErrnoException | undefined
  c.on('data', (d) => { got += d.length })
  c.on('end', () => { sawEnd = true })
  c.on('error', (e) => { err = e })
  await waitFor(() => engine.stats().closeTimeouts - before === 1, 10_000, 'close timeout')
  assert.is(got, 8 << 20, 'the flush completed first')
  assert.ok(sawEnd, 'the server sent its FIN')
  // Our read side has ended, so only a write can meet the RST the engine sent.
  await waitFor(() => { if (!c.destroyed) c.write('x'); return err !== undefined }, 3000, 'reset seen')
  assert.ok(err?.code === 'ECONNRESET' || err?.code === 'EPIPE', `aborted: ${err?.code}`)
  await closed(c, 3000)
})

test('stop leaves nothing behind', async () => {
  await engine.stop({ graceMs: 500 })
  rec.close()
  await sleep(20)
  assert.equal(leakedHandles(), [])
})

test.run()
