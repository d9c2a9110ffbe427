// The engine core over real sockets and real shards: echo through every shard, the release of
// linked data exactly once for every way a socket can end (L2), the documented outcome of
// every way to misuse it.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { Engine, SyncsockError, reusePortSupported } from '../src/index.ts'
import {
  RECORDER, recordEvents, waitFor, connect, roundTrip, closed, checkReleasedOnce, leakedHandles, sleep,
} from './net-helpers.ts'

const rec = recordEvents('engine-test')
const engine = await Engine.start({ shards: 2, hooks: RECORDER, ringBytes: 16384 })
const hookErrors: Record<string, unknown>[] = []
engine.on('hook-error', (d) => hookErrors.push(d))
const echo = await engine.listen({ port: 0, protocol: 'rec' })

async function idOf(s: import('node:net').Socket, protocol = 'rec'): Promise<{ id: number; token: string }> {
  // Each connection sends a unique marker; its recv event carries the token and id.
  const marker = `id?${s.localPort}`
  if (protocol === 'rec') await roundTrip(s, marker)
  else s.write(marker)
  // Hook events cross threads asynchronously: wait for the recv of exactly this marker.
  const mine = () => rec.of('recv').find((e) => e.text === marker)
  await waitFor(() => mine() !== undefined, 3000, `recv of ${marker}`)
  const n = rec.of('new').find((e) => e.token === mine()!.token)!
  return { id: n.id, token: n.token! }
}

test('echo through 2 shards: every byte echoed, more than one shard accepted', async () => {
  const before = engine.stats()
  const clients = await Promise.all(Array.from({ length: 300 }, () => connect(echo.port)))
  const payloads = clients.map((_, i) => Buffer.from(`msg-${i}-`.repeat(1 + (i % 40))))
  const replies = await Promise.all(clients.map((c, i) => roundTrip(c, payloads[i])))
  replies.forEach((r, i) => assert.equal(r.toString(), payloads[i].toString()))
  const s = engine.stats()
  const perShard = s.shards.map((x, i) => x.accepted - before.shards[i].accepted)
  assert.ok(perShard.every((n) => n > 0), `every shard accepted some: ${perShard}`)
  assert.is(perShard.reduce((a, b) => a + b, 0), 300)
  clients.forEach((c) => c.end())
  await Promise.all(clients.map((c) => closed(c)))
  await waitFor(() => engine.stats().active === 0, 5000, 'active 0')
})

test('client FIN → connectionDrop(fin), data released once', async () => {
  const c = await connect(echo.port)
  const { token } = await idOf(c)
  c.end()
  await waitFor(() => rec.events.some((e) => e.token === token && (e.ev === 'drop' || e.ev === 'close')), 3000)
  await closed(c)
  const ends = rec.events.filter((e) => e.token === token && (e.ev === 'drop' || e.ev === 'close'))
  assert.equal(ends.map((e) => [e.ev, e.reason]), [['drop', 'fin']])
})

test('client RST → connectionDrop(reset)', async () => {
  const c = await connect(echo.port)
  const { token } = await idOf(c)
  c.resetAndDestroy()
  await waitFor(() => rec.events.some((e) => e.token === token && e.ev === 'drop'), 3000)
  const ends = rec.events.filter((e) => e.token === token && (e.ev === 'drop' || e.ev === 'close'))
  assert.equal(ends.map((e) => [e.ev, e.reason]), [['drop', 'reset']])
})

test('half-open protocol: peer FIN → connectionEnd, socket still writable, then close(local)', async () => {
  const l = await engine.listen({ port: 0, protocol: 'half' })
  try {
    const c = await connect(l.port)
    await roundTrip(c, 'x')
    const got: Buffer[] = []
    c.on('data', (d) => got.push(d))
    c.end()
    await closed(c)
    assert.is(Buffer.concat(got).toString(), 'bye', 'wrote after the peer FIN')
    await waitFor(() => rec.of('new').some((e) => e.protocol === 'half'), 3000, 'connectionNew event')
    const news = rec.of('new').filter((e) => e.protocol === 'half')
    const t = news[news.length - 1].token
    await waitFor(() => rec.events.some((e) => e.token === t && e.ev === 'close'), 3000)
    const ends = rec.events.filter((e) => e.token === t && ['end', 'drop', 'close'].includes(e.ev))
    assert.equal(ends.map((e) => e.ev + ':' + (e.cause ?? e.reason ?? '')), ['end:', 'close:local'])
  } finally { await l.close() }
})

test('sock.close(graceful) from a hook → connectionClose(local), client gets FIN after the data', async () => {
  const c = await connect(echo.port)
  const { token } = await idOf(c)
  c.write('CLOSE')
  await closed(c)
  await waitFor(() => rec.events.some((e) => e.token === token && e.ev === 'close'), 3000)
  const ends = rec.events.filter((e) => e.token === token && (e.ev === 'drop' || e.ev === 'close'))
  assert.equal(ends.map((e) => [e.ev, e.cause]), [['close', 'local']])
})

test("sock.close('abort') → connectionClose(local), client sees a reset", async () => {
  const c = await connect(echo.port)
  const { token } = await idOf(c)
  let err: NodeJS.ErrnoException | undefined
  c.on('error', (e) => { err = e })
  c.write('ABORT')
  await closed(c)
  assert.is(err?.code, 'ECONNRESET')
  await waitFor(() => rec.events.some((e) => e.token === token && e.ev === 'close'), 3000)
  const ends = rec.events.filter((e) => e.token === token && (e.ev === 'drop' || e.ev === 'close'))
  assert.equal(ends.map((e) => [e.ev, e.cause]), [['close', 'local']])
})

test('foreign engine.close(id) → connectionClose(foreign); then the id is stale', async () => {
  const c = await connect(echo.port)
  const { id, token } = await idOf(c)
  assert.is(engine.close(id), 'ok')
  await closed(c)
  await waitFor(() => rec.events.some((e) => e.token === token && e.ev === 'close'), 3000)
  const ends = rec.events.filter((e) => e.token === token && (e.ev === 'drop' || e.ev === 'close'))
  assert.equal(ends.map((e) => [e.ev, e.cause]), [['close', 'foreign']])
  await waitFor(() => engine.send(id, Buffer.from('x')) === 'ERR_SS_STALE', 3000, 'stale id')
  assert.is(engine.close(id), 'ERR_SS_STALE')
  assert.is(engine.unlink(id), 'ERR_SS_STALE')
})

test('foreign unlink → connectionClose(unlink); later data is discarded and counted; socket works', async () => {
  const c = await connect(echo.port)
  const { id, token } = await idOf(c)
  assert.is(engine.unlink(id), 'ok')
  await waitFor(() => rec.events.some((e) => e.token === token && e.ev === 'close'), 3000)
  const before = engine.stats().discardedAfterUnlink
  const echoed: Buffer[] = []
  c.on('data', (d) => echoed.push(d))
  c.write('after-unlink')
  await waitFor(() => engine.stats().discardedAfterUnlink >= before + 12, 3000, 'discard counted')
  assert.is(Buffer.concat(echoed).length, 0, 'no hook echoed it')
  // The socket still works: a foreign send still reaches the client.
  assert.is(engine.send(id, Buffer.from('still-here')), 'ok')
  await waitFor(() => Buffer.concat(echoed).toString() === 'still-here', 3000, 'send after unlink')
  c.end()
  await closed(c)
  await sleep(50)
  const ends = rec.events.filter((e) => e.token === token && ['drop', 'close', 'recv'].includes(e.ev) && rec.events.indexOf(e) > rec.events.findIndex((x) => x.token === token && x.ev === 'close') - 1)
  assert.equal(ends.map((e) => [e.ev, e.cause]), [['close', 'unlink']], 'nothing after the release')
})

test('local sock.unlink() returns the data; no drop/close follows', async () => {
  const c = await connect(echo.port)
  const { token } = await idOf(c)
  c.write('UNLINK')
  await waitFor(() => rec.events.some((e) => e.token === token && e.ev === 'unlinked'), 3000)
  c.write('more')
  await sleep(50)
  c.end()
  await closed(c)
  await sleep(100)
  const ends = rec.events.filter((e) => e.token === token && ['drop', 'close', 'unlinked'].includes(e.ev))
  assert.equal(ends.map((e) => e.ev), ['unlinked'])
})

test('engine.send: accepted sends arrive in order, then a foreign close; a full ring refuses, never drops (S2, Q1)', async () => {
  const c = await connect(echo.port)
  const { id } = await idOf(c)
  const got: Buffer[] = []
  c.on('data', (d) => got.push(d))
  let accepted = 0, full = 0, seq = 0
  const expected: Buffer[] = []
  // Fire without yielding so main outruns the shard and fills the (16 KiB) ring.
  for (let i = 0; i < 5000 && full === 0; i++) {
    const msg = Buffer.alloc(3000, 0)
    msg.writeUInt32BE(seq, 0)
    const st = engine.send(id, msg)
    if (st === 'ok') { accepted++; expected.push(msg); seq++ } else { assert.is(st, 'ERR_SS_RING_FULL'); full++ }
  }
  assert.ok(full > 0, 'the ring filled up at least once')
  assert.ok(engine.stats().ringFull >= 1)
  assert.is(engine.close(id), 'ok') // recorded in the slot: needs no ring space
  await closed(c)
  const all = Buffer.concat(got)
  assert.is(all.length, accepted * 3000, 'every accepted byte arrived before the FIN')
  for (let i = 0; i < accepted; i++) assert.is(all.readUInt32BE(i * 3000), i)
})

test('a message larger than a ring can hold is refused with ERR_SS_TOO_BIG', async () => {
  const c = await connect(echo.port)
  const { id } = await idOf(c)
  assert.is(engine.send(id, Buffer.alloc(64 * 1024)), 'ERR_SS_TOO_BIG')
  c.destroy()
})

test('a hook that throws aborts its socket (cause hook-error), is counted and reported; the shard lives on', async () => {
  const l = await engine.listen({ port: 0, protocol: 'throws' })
  try {
    const before = engine.stats()
    const c = await connect(l.port)
    c.on('error', () => {})
    c.write('x')
    await closed(c)
    await waitFor(() => hookErrors.length > 0, 3000, 'hook-error event')
    assert.match(String(hookErrors[hookErrors.length - 1].message), 'boom from connectionRecv')
    assert.is(hookErrors[hookErrors.length - 1].hook, 'connectionRecv')
    const s = engine.stats()
    assert.is(s.hookErrors - before.hookErrors, 1)
    assert.is(s.closedHookError - before.closedHookError, 1)
    await waitFor(() => rec.of('new').some((e) => e.protocol === 'throws'), 3000, 'connectionNew event')
    const news = rec.of('new').filter((e) => e.protocol === 'throws')
    const t = news[news.length - 1].token
    await waitFor(() => rec.events.some((e) => e.token === t && e.ev === 'close'), 3000)
    assert.is(rec.events.find((e) => e.token === t && e.ev === 'close')!.cause, 'hook-error')
    // the same shards keep serving
    const d = await connect(echo.port)
    assert.is((await roundTrip(d, 'alive')).toString(), 'alive')
    d.destroy()
  } finally { await l.close() }
})

test('a hook that returns a Promise is a programming error: ERR_SS_HOOK, socket aborted', async () => {
  const l = await engine.listen({ port: 0, protocol: 'promise' })
  try {
    const n = hookErrors.length
    const c = await connect(l.port)
    c.on('error', () => {})
    c.write('x')
    await closed(c)
    await waitFor(() => hookErrors.length > n, 3000, 'hook-error event')
    assert.is(hookErrors[hookErrors.length - 1].code, 'ERR_SS_HOOK')
  } finally { await l.close() }
})

test('bad options and bad ids get typed errors, never a crash', async () => {
  const bad = async (fn: () => unknown, code: string) => {
    try { await fn() } catch (e) { assert.ok(SyncsockError.is(e), `typed: ${e}`); assert.is((e as SyncsockError).code, code); return }
    assert.unreachable(`expected ${code}`)
  }
  assert.is(reusePortSupported('20.19.0'), false, 'Node 20 lacks reusePort: Engine.start answers ERR_SS_UNSUPPORTED')
  assert.is(reusePortSupported('22.12.0'), true)
  await bad(() => Engine.start({ shards: 0 }), 'ERR_SS_BAD_OPTION')
  await bad(() => Engine.start({ shards: 1, ringBytes: 3000 }), 'ERR_SS_BAD_OPTION')
  await bad(() => Engine.start({ shards: 1, maxSocketsPerShard: 1 << 21 }), 'ERR_SS_BAD_OPTION')
  await bad(() => Engine.start({ shards: 1, hooks: 42 as unknown as string }), 'ERR_SS_BAD_OPTION')
  await bad(() => Engine.start({ shards: 1, highWater: 1 << 20, maxQueue: 4096 }), 'ERR_SS_BAD_OPTION')
  await bad(() => engine.listen({ port: 70000, protocol: 'rec' }), 'ERR_SS_BAD_OPTION')
  await bad(() => engine.listen({ port: 0, protocol: 'nope' }), 'ERR_SS_BAD_OPTION')
  await bad(() => engine.send(12345, Buffer.from('x')), 'ERR_SS_BAD_OPTION')
  await bad(() => engine.send(Number.NaN, Buffer.from('x')), 'ERR_SS_BAD_OPTION')
  const c = await connect(echo.port)
  const { id } = await idOf(c)
  await bad(() => engine.send(id, 'text' as unknown as Buffer), 'ERR_SS_BAD_OPTION')
  await bad(() => engine.close(id, { mode: 'later' as 'abort' }), 'ERR_SS_BAD_OPTION')
  c.destroy()
  // a hooks module that fails to load fails start with a typed error, leaving nothing running
  await bad(() => Engine.start({ shards: 1, hooks: new URL('./fixtures/does-not-exist.ts', import.meta.url) }), 'ERR_SS_BAD_OPTION')
})

test('every token released exactly once, no hook after release (whole file)', () => {
  assert.equal(checkReleasedOnce(rec.events), [])
})

test('stop(): resolves, no handle left, every shard at 0 active, reconnectsAfterStop 0', async () => {
  const registered = rec.of('new').length
  const clients = await Promise.all(Array.from({ length: 50 }, () => connect(echo.port)))
  clients.forEach((c) => { c.on('error', () => {}); c.resume(); c.write('traffic') })
  // all 50 registered (connectionNew ran), so each must end with connectionClose('shutdown')
  await waitFor(() => rec.of('new').length >= registered + 50, 5000, 'registered')
  await engine.stop({ graceMs: 2000 })
  await Promise.all(clients.map((c) => closed(c)))
  const s = engine.stats()
  assert.is(s.active, 0)
  assert.ok(s.shards.every((x) => x.active === 0))
  assert.is(s.reconnectsAfterStop, 0)
  assert.is(engine.send(1 << 28, Buffer.from('x')), 'ERR_SS_STOPPED')
  try { await engine.listen({ port: 0, protocol: 'rec' }); assert.unreachable() } catch (e) { assert.is((e as SyncsockError).code, 'ERR_SS_STOPPED') }
  await sleep(50)
  assert.equal(checkReleasedOnce(rec.events), [])
  const shutdown = rec.of('close').filter((e) => e.cause === 'shutdown')
  assert.ok(shutdown.length >= 50, `shutdown closes: ${shutdown.length}`)
  rec.close()
  assert.equal(leakedHandles(), [])
})

test.run()
