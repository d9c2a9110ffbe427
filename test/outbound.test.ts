// Issue #8's engine features, from a user's side: one-shot outbound sockets (ctx.open), half-close
// (sock.shutdown + connectionEnd), per-listener water marks and ctx.send's local answer, and the
// lifecycle leaks the proxy probe found (a connection closed from its own failover/retry hook;
// one target gate kept per connect forever).
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import net from 'node:net'
import { Engine } from '../src/index.ts'
import { recordEvents, waitFor, connect, closed, leakedHandles, sleep, type HookEvent } from './net-helpers.ts'
import { backend, freePort, blockedListener, killChild } from './conn-helpers.ts'

const HOOKS = new URL('./fixtures/outbound-hooks.ts', import.meta.url).pathname
type Ev = HookEvent & { outId?: number; early?: string; code?: string; status?: string; queued?: number; sent?: number; close?: string; send?: string; second?: string }
const rec = recordEvents(`ss-outbound-${process.pid}`)
const events = rec.events as Ev[]
const of = (ev: string, pred: (e: Ev) => boolean = () => true) => events.filter((e) => e.ev === ev && pred(e))

async function withEngine(fn: (engine: Engine) => Promise<void>, opts: Record<string, unknown> = {}) {
  const engine = await Engine.start({ shards: 2, hooks: HOOKS, ...opts })
  try { await fn(engine) } finally { await engine.stop({ graceMs: 500 }) }
  const st = engine.stats()
  assert.is(st.active, 0, 'no socket left after stop')
  assert.is(st.reconnectsAfterStop, 0)
}

/** A client of `port` that asks its shard to ctx.open to `target`, sending `early` right away. */
async function openVia(port: number, target: number, early = ''): Promise<{ c: net.Socket; opened: Ev }> {
  const before = of('opened').length
  const c = await connect(port)
  c.on('error', () => {})
  c.write(`OPEN ${target}${early ? ' ' + early : ''}`)
  await waitFor(() => of('opened').length > before, 5000, 'opened')
  return { c, opened: of('opened')[before] }
}

test('ctx.open: data linked from the start, bytes sent before it is established arrive, connectionNew once up, released once by close', async () => {
  const b = await backend()
  const received: Buffer[] = []
  b.server.on('connection', (s) => s.on('data', (d) => received.push(d)))
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'opener' })
    const { c, opened } = await openVia(l.port, b.port, 'early-bytes')
    assert.is(opened.early, 'ok', 'a send while connecting is accepted (queued)')
    const t = opened.token!
    await waitFor(() => of('new', (e) => e.token === t).length === 1, 5000, 'connectionNew of the outbound socket')
    assert.is(of('new', (e) => e.token === t)[0].kind, 'outbound')
    await waitFor(() => Buffer.concat(received).toString().includes('early-bytes'), 5000, 'early bytes at the backend')
    // the backend echoes: the outbound socket's protocol sees it
    await waitFor(() => of('recv', (e) => e.token === t).length > 0, 5000, 'echo back')
    assert.is(engine.close(opened.outId!, 'graceful'), 'ok')
    await waitFor(() => of('close', (e) => e.token === t).length === 1, 5000, 'released by close')
    await sleep(50)
    assert.is(of('drop', (e) => e.token === t).length, 0, 'released once')
    const st = engine.stats()
    assert.is(st.outboundOpened, 1)
    assert.is(st.outboundConnected, 1)
    assert.is(st.failovers + st.retries + st.connectAttempts, 0, 'no failover, no retry, no server-connection machinery')
    c.destroy()
  })
  await b.close()
})

test('ctx.open: a refused connect is connectionDrop(sock, "connect-failed", ECONNREFUSED) to its own protocol, once; the slot is freed', async () => {
  const port = await freePort()
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'opener' })
    const { c, opened } = await openVia(l.port, port, 'lost')
    const t = opened.token!
    await waitFor(() => of('drop', (e) => e.token === t).length === 1, 5000, 'connect-failed drop')
    const d = of('drop', (e) => e.token === t)[0]
    assert.is(d.reason, 'connect-failed')
    assert.is(d.code, 'ECONNREFUSED')
    assert.is(of('new', (e) => e.token === t).length, 0, 'never established: no connectionNew')
    await waitFor(() => engine.stats().active === 1, 2000, 'only the client left') // the opener's own client
    const st = engine.stats()
    assert.is(st.connectFailedRefused, 1)
    assert.is(engine.send(opened.outId!, Buffer.from('x')), 'ERR_SS_STALE', 'its id is stale once it ended')
    c.destroy()
  })
})

test('ctx.open: a connect that never completes fails after connectTimeoutMs on the shard tick (ERR_SS_TIMEOUT), no per-socket timer', async () => {
  const port = await freePort()
  const child = await blockedListener(port)
  try {
    await withEngine(async (engine) => {
      const l = await engine.listen({ port: 0, protocol: 'opener' })
      // fill the blocked listener's accept queue so the next connects hang at SYN
      const fillers: net.Socket[] = []
      for (let i = 0; i < 4; i++) { const s = net.connect(port, '127.0.0.1'); s.on('error', () => {}); fillers.push(s) }
      await sleep(100)
      const { c, opened } = await openVia(l.port, port)
      const t = opened.token!
      await waitFor(() => of('drop', (e) => e.token === t).length === 1, 5000, 'timeout drop')
      const d = of('drop', (e) => e.token === t)[0]
      assert.is(d.reason, 'connect-failed')
      // either our deadline (ERR_SS_TIMEOUT) or, if the fillers did not take the queue, no hang at all
      assert.ok(d.code === 'ERR_SS_TIMEOUT' || of('new', (e) => e.token === t).length === 0, `code ${d.code}`)
      for (const s of fillers) s.destroy()
      c.destroy()
    }, { sendTimeoutMs: 200, closeTimeoutMs: 200 })
  } finally { await killChild(child) }
})

test('half-close: request, FIN, then the response and our FIN (connectionEnd + sock.shutdown), released by connectionClose("local")', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'reqresp' })
    const c = net.connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true })
    c.on('error', () => {})
    await new Promise((r) => c.once('connect', r))
    const parts: Buffer[] = []
    c.on('data', (d) => parts.push(d))
    const ended = new Promise<void>((r) => c.once('end', () => r()))
    c.end('GET /thing')
    await Promise.race([ended, sleep(5000).then(() => { throw new Error('no FIN from the engine') })])
    assert.is(Buffer.concat(parts).toString(), 'RESP:GET /thing', 'the answer arrived after our FIN, then the engine\'s FIN')
    await waitFor(() => of('close', (e) => e.protocol === 'reqresp').length === 1, 3000, 'release')
    assert.is(of('close', (e) => e.protocol === 'reqresp')[0].cause, 'local')
    assert.is(of('drop', (e) => e.protocol === 'reqresp').length, 0)
    c.destroy()
    await waitFor(() => engine.stats().active === 0, 3000, 'socket gone')
  })
})

test('half-close: our shutdown first keeps reading; the peer\'s FIN then ends it (connectionDrop "fin"); sends after shutdown are refused', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'shutfirst' })
    const c = net.connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true })
    c.on('error', () => {})
    const parts: Buffer[] = []
    c.on('data', (d) => parts.push(d))
    const ended = new Promise<void>((r) => c.once('end', () => r()))
    await Promise.race([ended, sleep(5000).then(() => { throw new Error('no FIN from the engine') })])
    assert.is(Buffer.concat(parts).toString(), 'greeting')
    c.write('late words')
    await waitFor(() => of('recv', (e) => e.protocol === 'shutfirst').length > 0, 3000, 'still reading after shutdown')
    const r = of('recv', (e) => e.protocol === 'shutfirst')[0]
    assert.is(r.text, 'late words')
    assert.is(r.send, 'ERR_SS_CLOSED', 'our write side is shut')
    c.end()
    await waitFor(() => of('drop', (e) => e.protocol === 'shutfirst').length === 1, 3000, 'peer FIN ends it')
    assert.is(of('drop', (e) => e.protocol === 'shutfirst')[0].reason, 'fin')
    assert.is(of('end', (e) => e.protocol === 'shutfirst').length, 1, 'connectionEnd saw the FIN first')
    assert.is(of('close', (e) => e.protocol === 'shutfirst').length, 0, 'released once')
    await closed(c)
    await waitFor(() => engine.stats().active === 0, 3000, 'socket gone')
  })
})

test('water marks per listener; ctx.send by id on its own shard answers "high-water" like sock.send; connectionWritable at or below low water', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'fill', highWater: 64 << 10, lowWater: 16 << 10 })
    const c = await connect(l.port)
    c.pause() // never reads: the kernel buffers fill, then our queue
    c.write('FILL')
    await waitFor(() => of('filled').length === 1, 10_000, 'filled')
    const f = of('filled')[0]
    assert.is(f.status, 'high-water', 'a local send by id keeps the backpressure answer (it was turned into "ok")')
    assert.ok(f.queued! >= 64 << 10 && f.queued! < (64 << 10) + (16 << 10), `queued ${f.queued} is at the listener's high-water mark, not the engine's 1 MiB`)
    c.resume()
    await waitFor(() => of('writable').length === 1, 10_000, 'connectionWritable')
    assert.ok(of('writable')[0].queued! <= 16 << 10, `writable at ${of('writable')[0].queued} <= low water`)
    c.destroy()
  })
})

test('a server connection is half-open too: after the peer\'s FIN its connectionEnd can still answer, later as well, then FIN', async () => {
  const got: Buffer[] = []
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('data', (d) => got.push(d))
    s.on('error', () => {})
    s.end('hi') // FIN at once, keep reading
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as net.AddressInfo).port
  try {
    await withEngine(async (engine) => {
      await engine.connect({ host: '127.0.0.1', port, protocol: 'halfServer' })
      // our shutdown after the peer's FIN finishes it: a local close (docs/hooks.md, half-close)
      await waitFor(() => of('close', (e) => e.protocol === 'halfServer').length === 1, 5000, 'both directions done')
      assert.is(of('close', (e) => e.protocol === 'halfServer')[0].cause, 'local')
      await waitFor(() => Buffer.concat(got).toString() === 'one;two', 3000, 'both answers at the peer')
      assert.is(of('later', (e) => e.protocol === 'halfServer')[0].second, 'ok')
      assert.is(of('drop', (e) => e.protocol === 'halfServer').length, 0, 'released once')
      assert.is(engine.stats().reconnects, 0, 'a close, not a failover')
    })
  } finally { server.close() }
})

test('a server connection closed from its own failover or retry hook frees its slot (no dead, no leak)', async () => {
  const b = await backend()
  const refused = await freePort()
  await withEngine(async (engine) => {
    const dead: unknown[] = []
    engine.on('dead', (d) => dead.push(d))
    await engine.connect({ host: '127.0.0.1', port: b.port, protocol: 'selfCloseFailover', count: 2 })
    await waitFor(() => of('new', (e) => e.protocol === 'selfCloseFailover').length === 2, 5000, 'up')
    await engine.connect({ host: '127.0.0.1', port: refused, protocol: 'selfCloseRetry', count: 2, retry: { baseMs: 5, capMs: 10 } })
    b.dropAll('rst')
    await waitFor(() => engine.stats().serverConns === 0, 5000, 'every slot freed')
    assert.ok(of('failover').every((e) => e.close === 'ok'))
    assert.ok(of('retry').every((e) => e.close === 'ok'))
    assert.is(dead.length, 0, 'closed, not dead: the hook\'s close decided')
    assert.is(engine.stats().deadConnections, 0)
  })
  await b.close()
})

test('target gates do not outlive their connections: 300 connects to a live and a dead target, closed, leave no gate', async () => {
  const b = await backend()
  const refused = await freePort()
  await withEngine(async (engine) => {
    for (let round = 0; round < 3; round++) {
      const up = await engine.connect({ host: '127.0.0.1', port: b.port, protocol: 'out', count: 50 })
      const down = await engine.connect({ host: '127.0.0.1', port: refused, protocol: 'out', count: 50, retry: { baseMs: 20, capMs: 40 } })
      await waitFor(() => engine.stats().connectFailedRefused > 0 && engine.stats().connected >= 50 * (round + 1), 5000, 'up and failing')
      for (const id of [...up, ...down]) assert.is(engine.close(id), 'ok')
      await waitFor(() => engine.stats().serverConns === 0, 5000, 'closed')
    }
    assert.is(engine.stats().gates, 0, 'no gate left')
  })
  await b.close()
})

test('nothing is left behind: no handle in this process once every engine stopped', async () => {
  rec.close()
  await sleep(50)
  assert.equal(leakedHandles().filter((h) => h !== 'Timeout'), [])
})

test.run()
