// Shard worker entry: one per CPU. Owns its event loop, its listeners (SO_REUSEPORT, the same
// port on every shard), every socket it accepted or connected (O1), its rings' consumer side,
// and its timers (reconnect heap, liveness tick, send-timeout scan, loop-delay publishing).
// Must never block (S1): no Atomics.wait, no sync fs, no lock held across an await.

import { parentPort, workerData } from 'node:worker_threads'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import {
  Layout, C, T_ALIVE, T_EPOCH, H_STOPPING, ST_ESTABLISHED, ST_CONNECTING, F_REQ_CLOSE, F_REQ_ABORT,
  idShard, idSlot, idGen,
} from '../ss/layout.ts'
import { CounterBlock } from '../ss/counters.ts'
import { CallbackLock } from '../ss/lock.ts'
import { SlotTable, flagsOf, genOf } from '../ss/slots.ts'
import { Inbox } from '../ss/ring.ts'
import { ForeignOps, OP_SEND, recordId, recordIncarnation, recordMore, recordOp, recordPayload } from '../ss/foreign.ts'
import { SsSocket, REQ_BITS, type SocketLimits } from '../ss/socket.ts'
import { Watchdog } from '../ss/watchdog.ts'
import { SyncsockError } from '../ss/errors.ts'
import { Dispatcher, type HookFailure } from '../ss/upcall.ts'
import { loadProtocols } from '../hooks/protocols.ts'
import { ConnManager, type ConnServices, type ServerConn } from '../hooks/server.ts'
import { normalizeConnect } from '../hooks/retry.ts'
import { Liveness } from '../hooks/liveness.ts'
import type { ConnectOptions, OffloadDone, OffloadStatus, Protocol, ShardContext, SsSocketApi } from '../hooks/types.ts'
import { makeContext, type ContextHost } from './context.ts'
import type { OpenConfig } from './options.ts'
import type { FromShard, ListenSpec, ShardInit, ShardLimits, ToShard } from './messages.ts'
import { ShardTls } from '../tls/shard-tls.ts'
import type { TlsClientSpec } from '../tls/options.ts'

/** A ctx.offload in flight: the incarnation it belongs to (its id and the object), and its callback. */
interface Offload { id: number; sock: SsSocket; done: OffloadDone }

/** Loop-delay sampling interval, ms (monitorEventLoopDelay's resolution). */
const LOOP_SAMPLE_MS = 10

class Shard implements ConnServices, ContextHost {
  readonly shard: number
  readonly tid: number
  readonly layout: Layout
  readonly counters: CounterBlock
  readonly dispatcher: Dispatcher
  readonly slots: SlotTable
  readonly limits: SocketLimits & ShardLimits
  readonly ctx: ShardContext
  readonly conns: ConnManager
  private readonly i32: Int32Array
  readonly foreign: ForeignOps
  private readonly inbox: Inbox
  private readonly liveness: Liveness
  readonly protocols: Record<string, Protocol>
  private readonly bySlot: (SsSocket | null)[]
  private readonly listeners = new Map<number, Server>()
  readonly watchdog: Watchdog
  /** T1. Node's histogram records each sampling interval whole (an idle loop reads ~LOOP_SAMPLE_MS): the lateness is that minus the interval. */
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_SAMPLE_MS })
  private readonly housekeeping: NodeJS.Timeout
  private live = 0
  private stopping = false
  get shardCount(): number { return this.layout.shards }
  readonly config: unknown
  get isStopping(): boolean { return this.stopping || Atomics.load(this.i32, H_STOPPING) !== 0 }
  private readonly port = parentPort!
  /** TLS contexts and handshakes in flight (src/tls/shard-tls.ts) */
  readonly tls: ShardTls
  /** Engine.start's tasks module, or null (ctx.offload refuses) */
  private readonly tasks: string | null
  private readonly offloads = new Map<number, Offload>()
  private nextOffload = 0

  constructor(init: ShardInit, protocols: Record<string, Protocol>) {
    this.shard = init.shard
    this.tid = init.shard + 1
    this.config = init.config
    this.tasks = init.tasks
    this.layout = Layout.from(init.sab)
    this.i32 = new Int32Array(init.sab)
    this.limits = init.limits
    this.protocols = protocols
    this.counters = new CounterBlock(init.sab, this.layout, this.tid)
    this.counters.reset()
    this.watchdog = new Watchdog(this.limits, this.counters)
    this.tls = new ShardTls(this.counters)
    const lock = new CallbackLock(init.sab, this.layout, this.tid, this.counters)
    this.dispatcher = new Dispatcher(lock, this.counters)
    this.slots = new SlotTable(init.sab, this.layout, this.shard)
    // A restarted shard (epoch > 0) inherits a table whose ids belong to the dead thread (R1).
    if (Atomics.load(this.i32, this.layout.threadBase(this.tid) + T_EPOCH) > 0) this.slots.resetAll()
    this.bySlot = new Array(this.layout.slotTableSize).fill(null)
    this.foreign = new ForeignOps(init.sab, this.layout, this.tid, this.counters, lock)
    this.liveness = new Liveness(this.dispatcher, this.counters)
    this.conns = new ConnManager(this, init.sab, this.limits.maxConnectsInFlight, this.liveness)
    this.ctx = makeContext(this)
    this.inbox = new Inbox(init.sab, this.layout, this.tid, {
      budget: this.limits.drainBudget,
      onRecord: this.onRecord,
      onWake: this.onWake,
      onDrained: this.onDrained,
    })
    this.loopDelay.enable()
    // The referenced handle that keeps this worker alive while it waits on its doorbell
    // (a pending Atomics.waitAsync does not: nodejs/node#44729). It also publishes loop delay
    // (T1) and scans for peers that stopped reading (S3).
    const scanMs = Math.max(10, Math.min(250, Math.floor(Math.min(this.limits.sendTimeoutMs, this.limits.closeTimeoutMs) / 4)))
    this.housekeeping = setInterval(this.housekeep, scanMs)
    Atomics.store(this.i32, this.layout.threadBase(this.tid) + T_ALIVE, 1)
    this.inbox.run()
    this.port.on('message', (m: ToShard) => {
      if (m.t === 'offload-done') this.offloadDone(m)
      else void this.control(m)
    })
  }

  // ---------------- services for sockets and connections ----------------

  hookFailed(s: SsSocket, f: HookFailure): void {
    const e = f.error as { message?: string; code?: string; stack?: string }
    this.report('hook-error', {
      id: s.id, protocol: s.protocol, hook: f.hook, message: String(e?.message ?? e), code: e?.code, stack: e?.stack,
    })
  }

  report(type: string, detail: Record<string, unknown>): void {
    this.post({ t: 'event', type, detail: { shard: this.shard, ...detail } })
  }

  register(s: SsSocket): void {
    this.bySlot[idSlot(s.id)] = s
    this.live++
    this.counters.add(C.active)
  }

  released(s: SsSocket): void {
    const slot = idSlot(s.id)
    if (this.bySlot[slot] === s) {
      this.bySlot[slot] = null
      this.live--
      this.counters.add(C.active, -1)
    }
    this.watchdog.forget(s)
    if (!s.owner) this.slots.release(s.id) // a server connection keeps its slot across incarnations
  }

  // ---------------- accept ----------------

  private accept(spec: ListenSpec, net: Socket): void {
    if (this.stopping || Atomics.load(this.i32, H_STOPPING)) {
      // Accepted during stop (it was in the kernel's queue): a plain FIN, no hooks (§6b.1).
      net.on('error', () => {})
      net.end()
      net.destroySoon()
      return
    }
    net.setNoDelay(true)
    // TLS: registered (slot, connectionNew) only once the handshake completed (acceptSecure);
    // until then it is a handshake in flight, its deadline on the housekeeping tick.
    if (spec.tls) { this.tls.accept(spec.key, net, spec.tls.handshakeTimeoutMs); return }
    this.registerAccepted(spec, net, null)
  }

  /** A TLS listener's socket finished its handshake: now it is a socket of this shard. */
  private acceptSecure(spec: ListenSpec, s: TLSSocket, raw: Socket): void {
    if (this.stopping || Atomics.load(this.i32, H_STOPPING)) { s.end(); s.destroySoon(); return } // §6b.1: no hooks
    s.allowHalfOpen = true // as every socket: a peer's FIN is the protocol's to handle (socket.ts onEnd)
    this.registerAccepted(spec, s, raw)
  }

  private registerAccepted(spec: ListenSpec, net: Socket, raw: Socket | null): void {
    const id = this.slots.alloc(0, ST_ESTABLISHED)
    if (id < 0) {
      this.counters.add(C.refusedNoSlot)
      this.report('slots-exhausted', { port: spec.port })
      net.destroy()
      return
    }
    const s = new SsSocket(this, id, 'client', spec.protocol, this.protocols[spec.protocol], net, null, spec.water)
    s.raw = raw
    this.register(s)
    this.counters.add(C.accepted)
    s.accepted()
    s.started()
  }

  // ---------------- rings and slot requests ----------------

  private onRecord = (_producer: number, off: number, len: number, ring: { dv: DataView; u8: Uint8Array }): boolean => {
    const more = recordMore(ring.dv, off)
    if (recordOp(ring.dv, off) !== OP_SEND) return more
    this.counters.add(C.ringRecv)
    const s = this.socketFor(recordId(ring.dv, off))
    if (!s || !s.acceptsWrites() || s.incarnation !== recordIncarnation(ring.dv, off)) {
      this.counters.add(C.sendFailed) // accepted earlier; reported failed: the socket ended (S2)
      return more
    }
    // Cork for the rest of the drain pass: many small messages to one socket (fragments, or a
    // producer's burst) go out in one writev, not one write syscall each.
    if (s.net.writableCorked === 0) { s.net.cork(); this.corked.push(s) }
    // Copy out: the ring's bytes are reused as soon as the drain publishes its head.
    s.write(Buffer.from(recordPayload(ring.u8, off, len)))
    return more
  }

  private readonly corked: SsSocket[] = []
  private onDrained = (): void => {
    for (const s of this.corked) if (s.net.writableCorked > 0) s.net.uncork()
    this.corked.length = 0
  }

  private readonly reqSlots: number[] = []
  /**
   * Q1: a request is applied only after every send its producer published before it. So, at the
   * wake: take the flagged slots, snapshot each one's request bits, THEN record the rings' tails
   * (Inbox.barrier); once the drain reaches those tails, apply exactly the snapshotted bits. A bit
   * set after the snapshot may follow sends that are not drained yet: it waits for its own wake
   * (its producer marked the slot again). Taking every bit present at barrier time instead lost a
   * send accepted just before a close (found by the model check, test/model: 'take-all-bits').
   */
  private onWake = (): void => {
    this.reqSlots.length = 0
    this.slots.takeRequests(this.reqSlots)
    if (this.reqSlots.length === 0) return
    const seen: { slot: number; gen: number; bits: number }[] = []
    for (const slot of this.reqSlots) {
      const w = this.slots.slotWord(slot)
      const bits = flagsOf(w) & REQ_BITS
      if (bits) seen.push({ slot, gen: genOf(w), bits })
    }
    if (seen.length === 0) return
    this.inbox.barrier(() => { for (const r of seen) this.applySlotRequests(r.slot, r.gen, r.bits) })
  }

  /**
   * Apply foreign requests seen in a slot (after the Q1 barrier), if the slot still holds the
   * same connection (generation). To the incarnation if it has not ended — under its lock, so
   * behind any work queued for it (a drop that was seen first takes the bits itself and lets the
   * close win, F1) — else to the idle server connection.
   */
  private applySlotRequests(slot: number, gen: number, seen: number): void {
    const conn = this.conns.conns.get(slot)
    const s = conn ? conn.current : this.bySlot[slot]
    if (s && !s.ended) {
      if (idGen(s.id) !== gen) return
      this.dispatcher.locked(s, () => {
        const bits = this.slots.takeFlags(s.id, seen)
        if (bits) { this.counters.add(C.requestsApplied); s.applyRequests(bits) }
      })
    } else if (conn) {
      if (idGen(conn.id) !== gen) return
      this.dispatcher.locked(conn, () => {
        const bits = this.slots.takeFlags(conn.id, seen)
        if (bits) this.counters.add(C.requestsApplied)
        if (bits & (F_REQ_CLOSE | F_REQ_ABORT)) conn.closeIdle() // no incarnation up: no data to release
      })
    }
  }

  // ---- the one id resolver: what an id of this shard names now ----

  /** The live incarnation for an id (a server connection's id maps to its current socket). */
  socketFor(id: number): SsSocket | null {
    if (idShard(id) !== this.shard) return null
    const slot = idSlot(id)
    const conn = this.conns.conns.get(slot)
    if (conn) return conn.id === id ? conn.current : null
    const s = this.bySlot[slot]
    return s && s.id === id ? s : null
  }

  /** The server connection an id names (whether an incarnation is up or not), or null. */
  connFor(id: number): ServerConn | null {
    if (idShard(id) !== this.shard) return null
    const conn = this.conns.conns.get(idSlot(id))
    return conn && conn.id === id ? conn : null
  }

  // ---------------- ctx.offload (the blocking pool, through main) ----------------

  /**
   * Post a task to main (which runs it on the pool). Refused at the call when this shard already
   * has maxOffloads in flight (ERR_SS_BUSY), as a send is refused when its queue is full.
   */
  offload(s: SsSocket, task: string, input: unknown, done: OffloadDone): OffloadStatus {
    if (this.tasks === null) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', 'ctx.offload needs a tasks module: Engine.start({ tasks })')
    }
    if (this.isStopping) return 'ERR_SS_STOPPED'
    if (s.ended || s.final || s.phase === 'closed' || this.socketFor(s.id) !== s) return 'ERR_SS_CLOSED'
    if (this.offloads.size >= this.limits.maxOffloads) { this.counters.add(C.offloadsRefused); return 'ERR_SS_BUSY' }
    const oid = ++this.nextOffload
    try {
      this.post({ t: 'offload', oid, task, input })
    } catch (e) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', `ctx.offload input must be structured-cloneable: ${(e as Error)?.message ?? e}`, { cause: e })
    }
    this.offloads.set(oid, { id: s.id, sock: s, done })
    this.counters.add(C.offloads)
    this.counters.set(C.offloadsInFlight, this.offloads.size)
    return 'ok'
  }

  /**
   * An offload's result: `done` runs under the socket's lock only if the incarnation that asked is
   * still the one its id names (generation and object: not released, not a later incarnation of a
   * server connection) and still linked with no close/unlink pending; else it is discarded and
   * counted (L1/L2 for asynchronous work).
   */
  private offloadDone(m: Extract<ToShard, { t: 'offload-done' }>): void {
    const o = this.offloads.get(m.oid)
    if (!o) return
    this.offloads.delete(m.oid)
    this.counters.set(C.offloadsInFlight, this.offloads.size)
    const s = o.sock
    if (this.socketFor(o.id) !== s) { this.counters.add(C.offloadsDiscarded); return }
    this.dispatcher.locked(s, () => {
      if (!s.runnable() || this.socketFor(o.id) !== s) { this.counters.add(C.offloadsDiscarded); return }
      let error: Error | undefined
      if (!m.ok) {
        this.counters.add(C.offloadErrors)
        error = Object.assign(new Error(m.error?.message ?? 'offload failed'), { name: m.error?.name ?? 'Error', code: m.error?.code })
      }
      this.counters.add(C.offloadsDelivered)
      try {
        o.done(s as unknown as SsSocketApi, m.ok ? m.value : undefined, error)
      } catch (err) {
        // Like any hook error (Dispatcher.call): counted, reported, the incarnation ends.
        this.counters.add(C.hookErrors)
        s.hookError({ hook: 'offload', error: err })
      }
    })
  }

  // ---------------- housekeeping ----------------

  private housekeep = (): void => {
    const now = Date.now()
    this.watchdog.scan(now)
    this.tls.scan(now)
    this.tls.publish()
    const ns = 1e6
    const late = (v: number) => Math.max(0, v / ns - LOOP_SAMPLE_MS)
    this.counters.set(C.loopDelayP50Ms, late(this.loopDelay.percentile(50)))
    this.counters.set(C.loopDelayP99Ms, late(this.loopDelay.percentile(99)))
    this.counters.set(C.loopDelayMaxMs, late(this.loopDelay.max))
  }

  // ---------------- control plane ----------------

  private post(m: FromShard): void { this.port.postMessage(m) }

  private async control(m: ToShard): Promise<void> {
    try {
      let value: unknown
      switch (m.t) {
        case 'listen': value = await this.listen(m.spec); break
        case 'unlisten': value = await this.unlisten(m.key); break
        case 'connect': value = this.connectMany(m.opts, m.count, m.tls); break
        case 'stop': value = await this.stop(m.graceMs); break
        case 'certs': this.tls.update(m.spec); value = m.spec.version; break
      }
      this.post({ t: 'reply', req: m.req, ok: true, value })
      if (m.t === 'stop') this.exit()
    } catch (e) {
      const err = e as { code?: string; message?: string }
      this.post({ t: 'reply', req: m.req, ok: false, error: { code: err.code, message: String(err.message ?? e) } })
    }
  }

  private listen(spec: ListenSpec): Promise<number> {
    if (this.stopping) return Promise.reject(new SyncsockError('ERR_SS_STOPPED'))
    if (!this.protocols[spec.protocol]) {
      return Promise.reject(new SyncsockError('ERR_SS_BAD_OPTION', `unknown protocol ${spec.protocol}`))
    }
    return new Promise((resolve, reject) => {
      // TLS: not half-open during the handshake (a client that gives up mid-handshake must end it,
      // not leave it waiting for its deadline); acceptSecure turns half-open on once it is a socket.
      const server = createServer({ allowHalfOpen: !spec.tls, noDelay: true })
      // TLS: a tls.Server that never listens runs the handshakes of this listener's sockets.
      if (spec.tls) this.tls.listen(spec.key, spec.tls, (s, raw) => this.acceptSecure(spec, s, raw))
      server.on('connection', (net) => this.accept(spec, net))
      const onError = (e: NodeJS.ErrnoException) => {
        this.tls.unlisten(spec.key)
        reject(new SyncsockError('ERR_SS_LISTEN', `listen on ${spec.host}:${spec.port} failed on shard ${this.shard}: ${e.code ?? e.message}`, { cause: e }))
      }
      server.once('error', onError)
      server.listen({ port: spec.port, host: spec.host, backlog: spec.backlog, reusePort: true }, () => {
        server.off('error', onError)
        server.on('error', (e) => this.report('listener-error', { key: spec.key, message: e.message }))
        this.listeners.set(spec.key, server)
        this.counters.add(C.listeners)
        const addr = server.address()
        resolve(typeof addr === 'object' && addr ? addr.port : spec.port)
      })
    })
  }

  private unlisten(key: number): Promise<boolean> {
    const server = this.listeners.get(key)
    if (!server) return Promise.resolve(false)
    this.listeners.delete(key)
    this.tls.unlisten(key)
    this.counters.add(C.listeners, -1)
    // server.close's callback waits for every accepted socket; we only need the listen handle gone.
    server.close()
    return Promise.resolve(true)
  }

  /** ctx.open: a one-shot outbound socket of this shard (socket.ts, "one-shot outbound sockets"). */
  open(cfg: OpenConfig): number {
    const id = this.slots.alloc(0, ST_CONNECTING)
    if (id < 0) throw new SyncsockError('ERR_SS_SLOTS_EXHAUSTED', `shard ${this.shard} has no free slot`)
    this.counters.add(C.outboundOpened)
    // allowHalfOpen: a peer's FIN does not end our side; the socket's onEnd decides (half-close).
    const net = netConnect({ host: cfg.host, port: cfg.port, noDelay: true, allowHalfOpen: true })
    const s = new SsSocket(this, id, 'outbound', cfg.protocol, this.protocols[cfg.protocol], net, null, cfg.water)
    this.register(s)
    s.link(cfg.data) // linked from the start: released exactly once, even if the connect fails
    s.opening(cfg.connectTimeoutMs)
    return id
  }

  /** engine.connect's share for this shard: all or nothing (the engine undoes the other shards'). */
  private connectMany(opts: ConnectOptions, count: number, tls: TlsClientSpec | undefined): number[] {
    const cfg = normalizeConnect(opts, (p) => p in this.protocols)
    if (tls) { this.tls.addClient(tls); cfg.tlsSpec = tls } // PEM the main thread read and validated
    const ids: number[] = []
    try {
      for (let i = 0; i < count; i++) ids.push(this.conns.create(this.protocols[cfg.protocol], cfg))
    } catch (e) {
      // The ids were never returned: nobody could ever close these connections (hardening bug 6).
      for (const id of ids) {
        const s = this.socketFor(id)
        if (s) this.dispatcher.locked(s, () => s.finalize('foreign', 'abort'))
        else { const c = this.connFor(id); if (c) this.dispatcher.locked(c, () => c.closeIdle()) }
      }
      throw e
    }
    return ids
  }

  /** §6b steps 2–4 for this shard. */
  private async stop(graceMs: number): Promise<Record<string, number>> {
    this.stopping = true
    // §6b.2: let one loop turn accept what the kernel already queued (those get a FIN, not the
    // RST that closing a listener with a non-empty accept queue would send), then close.
    await new Promise((r) => setImmediate(r))
    for (const key of [...this.listeners.keys()]) await this.unlisten(key)
    this.tls.abortAll() // handshakes in flight: nothing linked, no hook
    this.conns.shutdown((s) => s.finalize('shutdown', 'graceful'))
    for (const s of this.bySlot) {
      if (s && s.phase !== 'closed') this.dispatcher.locked(s, () => s.finalize('shutdown', 'graceful'))
    }
    // Synchronize: wait for zero live sockets, with a no-progress timeout; then abort the rest.
    let last = this.live
    let lastChange = Date.now()
    while (this.live > 0 && Date.now() - lastChange < graceMs) {
      await new Promise((r) => setTimeout(r, 5))
      if (this.live !== last) { last = this.live; lastChange = Date.now() }
    }
    const aborted = this.live
    if (this.live > 0) {
      for (const s of this.bySlot) if (s && s.phase !== 'closed') s.abortNow()
      const deadline = Date.now() + 2000
      while (this.live > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
    }
    return { aborted, left: this.live }
  }

  private exit(): void {
    // Offloads still on the pool: their results will find no shard; counted as discarded now.
    if (this.offloads.size > 0) {
      this.counters.add(C.offloadsDiscarded, this.offloads.size)
      this.offloads.clear()
      this.counters.set(C.offloadsInFlight, 0)
    }
    clearInterval(this.housekeeping)
    this.housekeep()
    this.liveness.stop()
    this.loopDelay.disable()
    this.inbox.stop()
    Atomics.store(this.i32, this.layout.threadBase(this.tid) + T_ALIVE, 0)
    // With every handle gone the worker ends by itself; main terminates it if user code left any.
    setImmediate(() => {
      // Anything still open keeps this thread alive and main terminates it: say what (§6b.5).
      const handles = process.getActiveResourcesInfo().filter((r) => r !== 'MessagePort')
      if (handles.length > 0) this.report('lingering', { handles })
      this.port.close()
    })
  }
}

const init = workerData as ShardInit
try {
  const protocols = await loadProtocols(init.hooks)
  new Shard(init, protocols)
  parentPort!.postMessage({ t: 'ready' } satisfies FromShard)
} catch (e) {
  const err = e as { code?: string; message?: string }
  parentPort!.postMessage({ t: 'event', type: 'boot-error', detail: { code: err.code, message: String(err.message ?? e) } } satisfies FromShard)
  parentPort!.close()
}
