// TLS inside one shard: the contexts this shard serves and connects with, and the handshakes in
// flight. Never reads a file, never validates a chain (the main thread's CertStore and the pool
// did): it gets PEM over the control port and builds one context per update (T1).
//
// Accepted sockets: a listener's raw TCP socket is handed to a tls.Server that never listens
// itself (server.emit('connection', raw)): it runs Node's server handshake, client-certificate
// verification and session tickets, and `setSecureContext` / `setTicketKeys` swap what new
// connections get. The socket is registered (slot, hooks: connectionNew) only once its handshake
// completed; until then it is a handshake in flight with a deadline checked on the shard's
// housekeeping tick — not a timer per socket (Node's own per-socket handshake timer is off) — and
// a failed or timed-out handshake is counted by cause and closed with no hook (nothing was linked).
//
// Server connections: tls.connect over a raw socket the connection made (so it can tell the TCP
// connect from the handshake, and reset the TCP socket), with a client context per set.

import tls, { type SecureContext, type TLSSocket } from 'node:tls'
import { isIP, type Socket } from 'node:net'
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks'
import { C } from '../ss/layout.ts'
import type { CounterBlock } from '../ss/counters.ts'
import { SyncsockError } from '../ss/errors.ts'
import type { Pem, TlsClientSpec, TlsServerSpec } from './options.ts'

/** Why a handshake failed (counted per cause: tlsFailedTimeout, tlsFailedCert, tlsFailedProtocol, tlsFailedClosed). */
export type HandshakeCause = 'timeout' | 'cert' | 'protocol' | 'closed'

interface InFlight { start: number; deadline: number; cause: HandshakeCause | null }

const HS: unique symbol = Symbol('syncsock.handshake')
type RawOf = Socket & { [HS]?: InFlight }

const buf = (u: Uint8Array | undefined) => (u ? Buffer.from(u.buffer, u.byteOffset, u.byteLength) : undefined)
const contextOptions = (pem: Pem) => ({ cert: buf(pem.cert), key: buf(pem.key), ca: buf(pem.ca) })

/** The cause of a handshake error, by its code (Node's, OpenSSL's, or ours). */
export function handshakeCause(e: unknown): HandshakeCause {
  const code = String((e as { code?: unknown })?.code ?? '')
  const msg = String((e as { message?: unknown })?.message ?? '')
  if (code === 'ERR_SS_TLS_TIMEOUT') return 'timeout'
  const inner = (e as { cause?: unknown })?.cause
  if (code === 'ERR_SS_TLS' && inner) return handshakeCause(inner)
  if (/CERT|VERIFY|SELF_SIGNED|ISSUER|ALTNAME|EXPIRED/i.test(code) || /certificate/i.test(msg)) return 'cert'
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_SS_TLS' || /disconnected|hang up|closed/i.test(msg)) return 'closed'
  return 'protocol'
}

const CAUSE_COUNTER: Record<HandshakeCause, number> = {
  timeout: C.tlsFailedTimeout, cert: C.tlsFailedCert, protocol: C.tlsFailedProtocol, closed: C.tlsFailedClosed,
}

export class ShardTls {
  private readonly counters: CounterBlock
  /** listener key → its TLS server (not listening: it only handshakes) and its set */
  private readonly servers = new Map<number, { ts: tls.Server; set: number }>()
  /** client set → its current context (one per update) */
  private readonly clients = new Map<number, { version: number; ctx: SecureContext }>()
  /** contexts of ctx.connect's inline PEM (set -1): one per spec object, built once */
  private readonly inline = new WeakMap<TlsClientSpec, SecureContext>()
  private readonly inFlight = new Set<RawOf>()
  private outbound = 0
  private readonly durations: RecordableHistogram = createHistogram()

  constructor(counters: CounterBlock) { this.counters = counters }

  // ---------------- listeners ----------------

  /** The TLS side of a listener: `onSecure` gets each socket whose handshake completed. */
  listen(key: number, spec: TlsServerSpec, onSecure: (s: TLSSocket, raw: Socket) => void): tls.Server {
    const ts = tls.createServer({
      ...contextOptions(spec.pem),
      requestCert: spec.requestCert,
      rejectUnauthorized: spec.rejectUnauthorized,
      // Off: a negative value arms no per-socket timer (Node's check is `> 0`); the deadline is
      // ours, on the housekeeping tick (scan below).
      handshakeTimeout: -1,
      ticketKeys: buf(spec.ticketKeys),
    })
    ts.on('secureConnection', (s: TLSSocket) => {
      const raw = (s as unknown as { _parent?: RawOf })._parent
      const hs = raw?.[HS]
      if (!raw || !hs || !this.inFlight.has(raw)) { s.destroy(); return } // timed out meanwhile
      this.inFlight.delete(raw)
      this.gauge()
      this.succeeded(hs.start, s.isSessionReused())
      onSecure(s, raw)
    })
    ts.on('tlsClientError', (err: Error, s: TLSSocket) => {
      const raw = (s as unknown as { _parent?: RawOf })._parent
      const hs = raw?.[HS]
      if (hs && hs.cause === null) hs.cause = s.authorizationError ? 'cert' : handshakeCause(err)
      s.destroy()
    })
    this.servers.set(key, { ts, set: spec.set })
    return ts
  }

  unlisten(key: number): void { this.servers.delete(key) }

  /** An accepted TCP socket of a TLS listener: start its handshake, deadline on the tick. */
  accept(key: number, raw: Socket, handshakeTimeoutMs: number): void {
    const l = this.servers.get(key)
    if (!l) { raw.destroy(); return }
    const r = raw as RawOf
    const start = performance.now()
    r[HS] = { start, deadline: Date.now() + handshakeTimeoutMs, cause: null }
    this.inFlight.add(r)
    this.gauge()
    r.on('error', () => {}) // the TLS socket reports what matters ('tlsClientError')
    r.once('close', () => {
      if (!this.inFlight.delete(r)) return // it completed (or was never ours)
      this.gauge()
      this.failed(r[HS]?.cause ?? 'closed')
    })
    l.ts.emit('connection', raw)
  }

  /** Swap a set's material (and ticket keys) for new connections; existing ones keep theirs. */
  update(spec: TlsServerSpec | TlsClientSpec): void {
    if ('ticketKeys' in spec) {
      for (const l of this.servers.values()) {
        if (l.set !== spec.set) continue
        l.ts.setSecureContext(contextOptions(spec.pem))
        l.ts.setTicketKeys(buf(spec.ticketKeys)!) // setSecureContext made new random keys
      }
    } else {
      this.clients.set(spec.set, { version: spec.version, ctx: tls.createSecureContext(contextOptions(spec.pem)) })
    }
    this.counters.add(C.certSwaps)
  }

  // ---------------- server connections ----------------

  /** A client set this shard connects with (from engine.connect): build its context if newer. */
  addClient(spec: TlsClientSpec): void {
    const have = this.clients.get(spec.set)
    if (!have || have.version < spec.version) {
      this.clients.set(spec.set, { version: spec.version, ctx: tls.createSecureContext(contextOptions(spec.pem)) })
    }
  }

  private clientContext(spec: TlsClientSpec): SecureContext {
    if (spec.set >= 0) {
      this.addClient(spec)
      return this.clients.get(spec.set)!.ctx
    }
    let ctx = this.inline.get(spec)
    if (!ctx) { ctx = tls.createSecureContext(contextOptions(spec.pem)); this.inline.set(spec, ctx) }
    return ctx
  }

  /** TLS over a raw socket that is connecting (or connected): the handshake starts once TCP is up. */
  connect(raw: Socket, spec: TlsClientSpec, host: string): TLSSocket {
    raw.on('error', () => {}) // the TLS socket reports it
    return tls.connect({
      socket: raw,
      host,
      // SNI must be a name, never an address (RFC 6066); the identity check uses `host` then.
      servername: spec.servername ?? (isIP(host) ? undefined : host),
      secureContext: this.clientContext(spec),
      rejectUnauthorized: spec.rejectUnauthorized,
    })
  }

  outboundStarted(): void { this.outbound++; this.gauge() }

  outboundDone(start: number, resumed: boolean): void {
    this.outbound--
    this.gauge()
    this.succeeded(start, resumed)
  }

  outboundFailed(error: Error): void {
    this.outbound--
    this.gauge()
    this.failed(handshakeCause(error))
  }

  /** A handshake in flight that ended by our close or stop: neither success nor failure. */
  outboundAbandoned(): void { this.outbound--; this.gauge() }

  // ---------------- the tick, stop ----------------

  /** Handshake deadlines (housekeeping tick). */
  scan(now: number): void {
    for (const r of this.inFlight) {
      const hs = r[HS]!
      if (now >= hs.deadline) {
        hs.cause = 'timeout'
        r.destroy() // 'close' counts it
      }
    }
  }

  /** Publish handshake durations p50/p99 (ms). */
  publish(): void {
    if (this.durations.count === 0) return
    this.counters.set(C.tlsHandshakeP50Ms, this.durations.percentile(50) / 1000)
    this.counters.set(C.tlsHandshakeP99Ms, this.durations.percentile(99) / 1000)
  }

  /** stop(): handshakes in flight end with no hook (nothing was linked). */
  abortAll(): void {
    for (const r of [...this.inFlight]) { if (r[HS]) r[HS].cause ??= 'closed'; r.destroy() }
  }

  get handshakesInFlight(): number { return this.inFlight.size + this.outbound }

  private succeeded(start: number, resumed: boolean): void {
    this.counters.add(C.tlsHandshakes)
    if (resumed) this.counters.add(C.tlsResumed)
    this.durations.record(Math.max(1, Math.round((performance.now() - start) * 1000))) // µs
  }

  private failed(cause: HandshakeCause): void {
    this.counters.add(C.tlsHandshakeFailed)
    this.counters.add(CAUSE_COUNTER[cause])
  }

  private gauge(): void { this.counters.set(C.tlsHandshakesInFlight, this.handshakesInFlight) }
}

/** The error a failed outbound handshake is reported with (retry's `error`): its code says TLS. */
export function tlsConnectError(err: Error | undefined, host: string, port: number): SyncsockError {
  if (err instanceof SyncsockError && (err.code === 'ERR_SS_TLS_TIMEOUT' || err.code === 'ERR_SS_TLS')) return err
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return new SyncsockError('ERR_SS_TLS',
    `TLS handshake with ${host}:${port} failed: ${code ? `${code}: ` : ''}${err?.message ?? 'the peer closed the connection during the handshake'}`,
    { cause: err })
}
