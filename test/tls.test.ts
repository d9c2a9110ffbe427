// TLS (issue #9): listeners on every shard with a client that verifies the served certificate,
// mutual TLS, TLS server connections (a wrong CA and a silent peer are failed connects: retry
// with a TLS code), handshake deadlines on both sides, admission of handshakes
// (maxConnectsInFlight), stop() during a handshake storm, session resumption across shards.
// Certificates are made per run (fixtures/tls-certs.ts); no private key is committed.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import tls, { type TLSSocket } from 'node:tls'
import net from 'node:net'
import { Engine, SyncsockError } from '../src/index.ts'
import { recordEvents, waitFor, sleep, leakedHandles, type HookEvent } from './net-helpers.ts'
import { CertFactory } from './fixtures/tls-certs.ts'

const HOOKS = new URL('./fixtures/tls-hooks.ts', import.meta.url).pathname
type Ev = HookEvent & { code?: string; cause?: string; error?: string }
const rec = recordEvents(`ss-tls-${process.pid}`)
const events = rec.events as Ev[]
const of = (ev: string, pred: (e: Ev) => boolean = () => true) => events.filter((e) => e.ev === ev && pred(e))

const certs = new CertFactory()
const ca = certs.ca()
const srv = certs.leaf(ca, 'server')
const cli = certs.leaf(ca, 'client')
const otherCa = certs.ca('other CA')
const rogue = certs.leaf(otherCa, 'rogue')

/** A verifying TLS client: resolves once the handshake is done (or rejects with its error). */
function tlsClient(port: number, opts: tls.ConnectionOptions = {}): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const c = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: ca.certPem, ...opts }, () => {
      c.off('error', reject)
      resolve(c)
    })
    c.once('error', reject)
  })
}

/** Read until `n` bytes or a newline arrived (bounded). */
function read(s: net.Socket, until: (t: string) => boolean, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    const t = setTimeout(() => { s.off('data', on); reject(new Error(`read: got ${JSON.stringify(text)}`)) }, ms)
    const on = (d: Buffer) => { text += d.toString(); if (until(text)) { clearTimeout(t); s.off('data', on); resolve(text) } }
    s.on('data', on)
  })
}
const line = (s: net.Socket) => read(s, (t) => t.includes('\n')).then((t) => t.trim())

/** A server that accepts TCP and never says a word (a stuck TLS peer). */
async function silentPeer(): Promise<{ port: number; accepts: () => number; close: () => Promise<void> }> {
  let accepts = 0
  const socks = new Set<net.Socket>()
  const server = net.createServer((s) => { accepts++; socks.add(s); s.on('error', () => {}); s.on('close', () => socks.delete(s)) })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as net.AddressInfo).port,
    accepts: () => accepts,
    close: () => { for (const s of socks) s.destroy(); return new Promise((r) => server.close(() => r())) },
  }
}

async function withEngine(fn: (e: Engine) => Promise<void>, opts: Record<string, unknown> = {}): Promise<Engine> {
  const engine = await Engine.start({ shards: 2, hooks: HOOKS, ...opts })
  try { await fn(engine) } finally { await engine.stop({ graceMs: 500 }) }
  const st = engine.stats()
  assert.is(st.active, 0, 'no socket left after stop')
  assert.is(st.reconnectsAfterStop, 0)
  assert.is(st.tlsHandshakesInFlight, 0, 'no handshake left in flight')
  return engine
}

test('TLS listener: echo through every shard; the client verifies the served certificate; a client without the CA is refused', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: srv.cert, key: srv.key } })
    const shards = new Set<number>()
    for (let i = 0; i < 40 && shards.size < 2; i++) {
      const c = await tlsClient(l.port)
      assert.ok(c.authorized, 'the client verified the chain against the CA')
      assert.is(c.getPeerCertificate().subject.CN, 'server')
      const who = await line(c)
      shards.add(Number(who.slice('shard:'.length)))
      c.write(`ping${i}`)
      assert.is(await read(c, (t) => t.length >= `ping${i}`.length), `ping${i}`)
      c.end()
    }
    assert.equal([...shards].sort(), [0, 1], 'served on every shard')
    let st = engine.stats()
    assert.ok(st.tlsHandshakes >= 2, `handshakes counted (${st.tlsHandshakes})`)
    assert.is(st.tlsHandshakeFailed, 0)
    await waitFor(() => engine.stats().tlsHandshakeP99Ms > 0, 2000, 'durations published on the housekeeping tick')
    st = engine.stats()
    assert.ok(st.tlsHandshakeP50Ms <= st.tlsHandshakeP99Ms, 'p50 <= p99')
    const accepted = st.accepted
    // no CA: the client refuses the server; the server counts a failed handshake, nothing registered
    const err = await tlsClient(l.port, { ca: otherCa.certPem }).then(() => null, (e: Error) => e)
    assert.ok(err, 'a client that does not trust the CA fails')
    await waitFor(() => engine.stats().tlsHandshakeFailed >= 1, 3000, 'the failed handshake counted')
    st = engine.stats()
    assert.is(st.accepted, accepted, 'a failed handshake registers nothing (no connectionNew)')
    await l.close()
  })
})

test('mutual TLS: a client certificate of the CA is served; none, or one of another CA, is refused with no hook', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: srv.cert, key: srv.key, ca: ca.cert, requestCert: true } })
    const good = await tlsClient(l.port, { cert: cli.certPem, key: cli.keyPem })
    assert.match(await line(good), /^shard:\d$/)
    good.end()
    const accepted = engine.stats().accepted
    for (const opts of [{}, { cert: rogue.certPem, key: rogue.keyPem }]) {
      // TLS 1.3: the client finishes first; the server refuses after reading its certificate
      const c = await tlsClient(l.port, opts).catch(() => null)
      if (c) {
        c.on('error', () => {})
        const got = await read(c, (t) => t.length > 0, 1000).catch(() => '')
        assert.is(got, '', 'a refused client gets no byte from the protocol')
        c.destroy()
      }
    }
    await waitFor(() => engine.stats().tlsHandshakeFailed >= 2, 3000, 'both refusals counted')
    assert.is(engine.stats().accepted, accepted, 'refused clients never became sockets')
  })
})

test('TLS listener: a client that connects and never starts the handshake is closed after handshakeTimeoutMs (counted, no hook)', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: srv.cert, key: srv.key, handshakeTimeoutMs: 300 } })
    const t0 = Date.now()
    const raw = net.connect(l.port, '127.0.0.1')
    raw.on('error', () => {})
    await new Promise<void>((r) => raw.once('close', () => r()))
    const took = Date.now() - t0
    assert.ok(took >= 280 && took < 2000, `closed after the deadline (${took} ms)`)
    await waitFor(() => engine.stats().tlsFailedTimeout === 1, 2000, 'counted as a handshake timeout')
    assert.is(engine.stats().accepted, 0)
  })
})

test('TLS server connection: verified against its CA, established only after the handshake; a wrong CA is a failed connect (retry with ERR_SS_TLS)', async () => {
  const echo = tls.createServer({ cert: srv.certPem, key: srv.keyPem }, (s) => { s.on('error', () => {}); s.pipe(s) })
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))
  const port = (echo.address() as net.AddressInfo).port
  await withEngine(async (engine) => {
    const [id] = await engine.connect({ host: '127.0.0.1', port, protocol: 'tlsup', tls: { ca: ca.cert } })
    await waitFor(() => of('new', (e) => e.id === id).length === 1, 5000, 'established')
    assert.is(engine.send(id, Buffer.from('over tls')), 'ok')
    await waitFor(() => of('recv', (e) => e.id === id).some((e) => e.text === 'over tls'), 5000, 'echoed back')
    let st = engine.stats()
    assert.is(st.connected, 1)
    assert.ok(st.tlsHandshakes >= 1)
    assert.is(engine.close(id), 'ok')

    const [bad] = await engine.connect({ host: '127.0.0.1', port, protocol: 'tlsup', tls: { ca: otherCa.cert } })
    await waitFor(() => of('retry', (e) => e.id === bad).length >= 2, 5000, 'retries of the TLS failure')
    const r = of('retry', (e) => e.id === bad)[0]
    assert.is(r.code, 'ERR_SS_TLS', 'the error code says TLS')
    assert.match(String(r.cause), /VERIFY|CERT|SIGNATURE|ISSUER/i, `the cause is the verification error (${r.cause})`)
    assert.is(of('new', (e) => e.id === bad).length, 0, 'never established: no connectionNew, no failover')
    st = engine.stats()
    assert.ok(st.connectFailedTls >= 2, `counted connectFailedTls (${st.connectFailedTls})`)
    assert.ok(st.tlsFailedCert >= 2, `failures by cause: cert (${st.tlsFailedCert})`)
    assert.is(st.failovers, 0)
    assert.is(engine.close(bad), 'ok')
  })
  await new Promise((r) => echo.close(r))
})

test('TLS server connection: a peer that accepts TCP and never answers the handshake times out after handshakeTimeoutMs (ERR_SS_TLS_TIMEOUT)', async () => {
  const peer = await silentPeer()
  await withEngine(async (engine) => {
    const t0 = Date.now()
    const [id] = await engine.connect({ host: '127.0.0.1', port: peer.port, protocol: 'tlsup', tls: { ca: ca.cert, handshakeTimeoutMs: 300 } })
    await waitFor(() => of('retry', (e) => e.id === id).length >= 1, 5000, 'the first retry')
    const took = Date.now() - t0
    const r = of('retry', (e) => e.id === id)[0]
    assert.is(r.code, 'ERR_SS_TLS_TIMEOUT')
    assert.ok(took >= 280 && took < 2500, `after the handshake deadline (${took} ms), not Node's 120 s`)
    const st = engine.stats()
    assert.ok(st.tlsFailedTimeout >= 1 && st.connectFailedTls >= 1)
    assert.is(st.connected, 0)
    engine.close(id)
  })
  await peer.close()
})

test('handshakes in flight count against maxConnectsInFlight; stop() during a handshake storm: no attempt after stop, no handle left', async () => {
  const peer = await silentPeer()
  const engine = await withEngine(async (engine) => {
    await engine.connect({
      host: '127.0.0.1', port: peer.port, protocol: 'tlsup', count: 40,
      tls: { ca: ca.cert, handshakeTimeoutMs: 400 }, retry: { baseMs: 10, capMs: 50 },
    })
    await waitFor(() => peer.accepts() >= 8, 5000, 'handshakes started')
    const st = engine.stats()
    for (const s of st.shards) assert.ok(s.connectsInFlight <= 4, `in flight per shard bounded (${s.connectsInFlight})`)
    assert.ok(st.pendingConnects > 0, 'the rest wait for admission')
    assert.ok(st.tlsHandshakesInFlight > 0 && st.tlsHandshakesInFlight <= 8, `handshakes in flight ${st.tlsHandshakesInFlight}`)
    await waitFor(() => engine.stats().tlsFailedTimeout >= 4, 5000, 'handshake timeouts (admitted at the rate they end)')
  }, { maxConnectsInFlight: 4 })
  const after = peer.accepts()
  await sleep(600)
  assert.is(peer.accepts(), after, 'no connect after stop resolved')
  assert.is(engine.stats().reconnectsAfterStop, 0)
  await peer.close()
})

test('session resumption across shards: a ticket issued by one shard resumes on the other', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: srv.cert, key: srv.key } })
    let session: Buffer | undefined
    const first = await tlsClient(l.port)
    const issuedOn = await new Promise<number>((resolve) => {
      let shard = -1
      const done = () => { if (shard >= 0 && session) resolve(shard) }
      first.on('session', (s: Buffer) => { session = s; done() })
      line(first).then((t) => { shard = Number(t.slice(6)); done() })
    })
    first.end()
    let resumedElsewhere = false
    for (let i = 0; i < 60 && !resumedElsewhere; i++) {
      const c = await tlsClient(l.port, { session })
      c.on('session', (s: Buffer) => { session = s })
      const shard = Number((await line(c)).slice(6))
      if (shard !== issuedOn && c.isSessionReused()) resumedElsewhere = true
      c.end()
    }
    assert.ok(resumedElsewhere, `a session from shard ${issuedOn} resumed on another shard`)
    assert.ok(engine.stats().tlsResumed >= 1)
  })
})

test('session-ticket keys rotate together on every shard (ticketRotateMs); a fresh ticket still resumes after a rotation', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: srv.cert, key: srv.key, ticketRotateMs: 1000 } })
    const swaps = engine.stats().certSwaps
    await waitFor(() => engine.stats().ticketRotations >= 1, 3000, 'a rotation')
    await waitFor(() => engine.stats().certSwaps >= swaps + 2, 2000, 'both shards took the new keys')
    const sessionOf = async () => {
      const c = await tlsClient(l.port)
      const s = await new Promise<Buffer>((r) => c.once('session', r))
      c.destroy()
      return s
    }
    const fresh = await sessionOf()
    const c = await tlsClient(l.port, { session: fresh })
    assert.ok(c.isSessionReused(), 'a ticket issued with the current keys resumes')
    c.destroy()
  })
})

test('ctx.connect with tls: PEM from the hook (ctx.config), a shard-local TLS server connection', async () => {
  const echo = tls.createServer({ cert: srv.certPem, key: srv.keyPem }, (s) => { s.on('error', () => {}); s.pipe(s) })
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))
  const port = (echo.address() as net.AddressInfo).port
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'tlsspawner' })
    const c = net.connect(l.port, '127.0.0.1')
    c.on('error', () => {})
    await waitFor(() => of('new', (e) => e.protocol === 'tlsspawner').length >= 1, 3000, 'the spawner client')
    c.write(String(port))
    await waitFor(() => of('spawned').length >= 1, 3000, 'spawned')
    const connId = (of('spawned')[0] as Ev & { connId?: number }).connId!
    assert.ok(Number.isInteger(connId))
    await waitFor(() => of('new', (e) => e.id === connId && e.protocol === 'tlsup').length === 1, 5000, 'established over TLS')
    assert.ok(engine.stats().tlsHandshakes >= 1)
    c.destroy()
  }, { config: { ca: ca.certPem.toString() } })
  await new Promise((r) => echo.close(r))
})

test('TLS options are strict; broken material at listen is ERR_SS_TLS_MATERIAL and opens nothing', async () => {
  await withEngine(async (engine) => {
    const bad = async (p: Promise<unknown>, code: string, re?: RegExp) => {
      const e = await p.then(() => null, (x) => x)
      assert.ok(SyncsockError.is(e), `a SyncsockError (${e})`)
      assert.is((e as SyncsockError).code, code, (e as Error).message)
      if (re) assert.match((e as Error).message, re)
    }
    await bad(engine.listen({ port: 0, protocol: 'echo', tls: { cert: srv.cert } } as never), 'ERR_SS_BAD_OPTION', /cert.*key/)
    await bad(engine.listen({ port: 0, protocol: 'echo', tls: { cert: srv.cert, key: srv.key, sni: 1 } } as never), 'ERR_SS_BAD_OPTION', /"sni"/)
    await bad(engine.listen({ port: 0, protocol: 'echo', tls: { cert: 5, key: srv.key } } as never), 'ERR_SS_BAD_OPTION', /tls\.cert/)
    await bad(engine.listen({ port: 0, protocol: 'echo', tls: { cert: srv.cert, key: cli.key } }), 'ERR_SS_TLS_MATERIAL', /key-mismatch/)
    await bad(engine.listen({ port: 0, protocol: 'echo', tls: { cert: `${certs.dir}/nope.pem`, key: srv.key } }), 'ERR_SS_TLS_MATERIAL', /unreadable/)
    await bad(engine.listen({ port: 0, protocol: 'echo', tls: { cert: srv.cert, key: srv.key, ca: otherCa.cert } }), 'ERR_SS_TLS_MATERIAL', /untrusted/)
    await bad(engine.connect({ host: '127.0.0.1', port: 1, protocol: 'tlsup', tls: { cert: cli.cert } } as never), 'ERR_SS_BAD_OPTION', /cert.*key/)
    await bad(engine.connect({ host: '127.0.0.1', port: 1, protocol: 'tlsup', tls: { ca: ca.cert, verify: false } } as never), 'ERR_SS_BAD_OPTION', /"verify"/)
    assert.is(engine.stats().listeners, 0, 'nothing opened')
    assert.is(engine.stats().serverConns, 0)
    // PEM bytes work as well as paths
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: srv.certPem, key: srv.keyPem.toString() } })
    const c = await tlsClient(l.port)
    assert.match(await line(c), /^shard:/)
    c.end()
  })
})

test('after every engine stopped: no handle left (the blocking pool is closed too)', async () => {
  rec.close()
  certs.cleanup()
  await sleep(50)
  assert.equal(leakedHandles(), [])
})

test.run()
