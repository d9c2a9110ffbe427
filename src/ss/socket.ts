// SsSocket: one socket incarnation's life, top to bottom (Tempesta's sock.c).
//
//   connecting ──connect──▶ open ──peer FIN/RST/error, send-timeout, liveness──▶ dropped
//        │                   │ ╲                                                   │
//        │                   │  shutdown() / peer FIN with connectionEnd: half-open;
//        │                   │  both directions done ─▶ dropped ('fin') or closed ('local')
//        └─connect failed    └─close('graceful'|'abort'), foreign close/unlink,    ▼
//          (server conn: retry; stop() ────────────────────────────────▶ closing ─▶ closed
//           one-shot: drop 'connect-failed')
//
// Kinds: 'client' (accepted), 'server' (an incarnation of a ServerConn, its `owner`),
// 'outbound' (a one-shot socket of ctx.open: no owner, data linked from the start).
// Exactly one of three ends hands the linked data back (L2): `dropped` (peer/network ended it:
// connectionDrop, then failover for a server connection), `finalize` (we ended it:
// connectionClose; FINAL is set first, so F1 holds), or a local `unlink()` (returns the data).
// `ended` records that the release happened; every later path checks it, under the lock.
// A hook error ends the incarnation (hookFailed). The 'close' event's release of the slot is
// queued behind work waiting for the lock, so nothing of this incarnation outlives its slot.
// Only the owner shard touches this object (O1); foreign threads set request bits in the slot.

import type { Socket } from 'node:net'
import {
  C, F_LINKED, F_FINAL, F_HIGH_WATER, F_REQ_CLOSE, F_REQ_ABORT, F_REQ_UNLINK,
  ST_CONNECTING, ST_ESTABLISHED, ST_CLOSING,
} from './layout.ts'
import type { CounterBlock } from './counters.ts'
import type { Watchdog } from './watchdog.ts'
import type { SlotTable } from './slots.ts'
import { SyncsockError } from './errors.ts'
import { closeModeOf, type CloseModeArg } from './options.ts'
import type { Dispatcher, HookFailure, Lockable } from './upcall.ts'
import type {
  CloseCause, CloseMode, DropReason, FailoverReason, HookName, HookTable, SendStatus, SocketKind,
} from './types.ts'

/** Flags that stop hooks at once: an intentional close or a foreign request is pending (L1). */
const BLOCKS_HOOKS = F_FINAL | F_REQ_CLOSE | F_REQ_ABORT | F_REQ_UNLINK
export const REQ_BITS = F_REQ_CLOSE | F_REQ_ABORT | F_REQ_UNLINK

export interface SocketLimits {
  /** default high-water mark: a send queue at or above it answers 'high-water' and refuses foreign sends (S3) */
  highWater: number
  /** default low-water mark: a queue that was above high water and drains to this fires connectionWritable */
  lowWater: number
  /** hard cap on the send queue: local sends beyond it are refused */
  maxQueue: number
}

/**
 * A socket's water marks (Netty's WriteBufferWaterMark): at or above `high` a send answers
 * 'high-water' and foreign sends are refused; once the queue drains to `low`, connectionWritable.
 * Per listener, per server connection or per one-shot socket; the engine's are the default.
 */
export interface WaterMarks { high: number; low: number }

/** The shard services a socket needs; implemented by the shard runtime. */
export interface ShardServices {
  readonly shard: number
  readonly dispatcher: Dispatcher
  readonly slots: SlotTable
  readonly counters: CounterBlock
  /** the shard context hooks see as sock.ctx (src/workers/context.ts; opaque to this layer) */
  readonly ctx: object
  readonly limits: SocketLimits
  /** the send- and close-timeout scans (S3, Kuma #5373) */
  readonly watchdog: Watchdog
  hookFailed(s: SsSocket, f: HookFailure): void
  /** the net socket is gone: forget the incarnation (and free its slot unless a conn owns it) */
  released(s: SsSocket): void
}

/** A persistent server connection that owns incarnations (src/hooks/server.ts). */
export interface IncarnationOwner {
  established(s: SsSocket): void
  /** under the lock, after connectionDrop: decide failover */
  dropped(s: SsSocket, reason: FailoverReason): void
  connectFailed(s: SsSocket, error: Error): void
  /** first bytes of an established incarnation (readiness) */
  firstData(s: SsSocket): void
  /** intentional close of the incarnation is final for the connection too (F1) */
  finalized(s: SsSocket): void
  released(s: SsSocket): void
}

const DROP_COUNTER: Record<DropReason, number> = {
  'fin': C.droppedFin, 'reset': C.droppedReset, 'error': C.droppedError,
  'send-timeout': C.droppedSendTimeout, 'liveness': C.droppedLiveness, 'ready-timeout': C.connectFailedTimeout,
  'connect-failed': C.connectFailed,
}

/** The counter of a failed connect, by its error's code (server connections and one-shot sockets). */
export function connectFailCounter(error: Error): number {
  const code = (error as NodeJS.ErrnoException).code
  return code === 'ECONNREFUSED' ? C.connectFailedRefused
    : code === 'ERR_SS_TIMEOUT' || code === 'ETIMEDOUT' ? C.connectFailedTimeout
      : code?.startsWith('ERR_SS_TLS') || code?.startsWith('ERR_TLS') || code?.startsWith('ERR_SSL') ? C.connectFailedTls
        : C.connectFailedOther
}
const CLOSE_COUNTER: Record<CloseCause, number> = {
  'local': C.closedLocal, 'foreign': C.closedForeign, 'unlink': C.closedUnlink,
  'shutdown': C.closedShutdown, 'hook-error': C.closedHookError,
}

export function dropReasonOf(err: Error | undefined): DropReason {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ECONNRESET' || code === 'EPIPE' ? 'reset' : 'error'
}

/** The SsSocket a net socket belongs to (set once, in the constructor). */
const SOCK: unique symbol = Symbol('syncsock.sock')
type NetOf = Socket & { [SOCK]: SsSocket }
function netData(this: NetOf, chunk: Buffer): void { this[SOCK].onData(chunk) }
function netEnd(this: NetOf): void { this[SOCK].onEnd() }
function netError(this: NetOf, err: Error): void { this[SOCK].onError(err) }
function netClose(this: NetOf): void { this[SOCK].onClose() }
function netDrain(this: NetOf): void { this[SOCK].flushed() }
function netConnect(this: NetOf): void { this[SOCK].onConnect() }

/** One incarnation. It is the `sock` hooks get: src/workers/context.ts checks it conforms to SsSocketApi. */
export class SsSocket implements Lockable {
  readonly id: number
  readonly kind: SocketKind
  readonly protocol: string
  readonly proto: HookTable
  readonly lockIdx: number
  backlog: (() => void)[] | null = null
  phase: 'connecting' | 'open' | 'closing' | 'closed' = 'open'
  net: Socket
  /**
   * The TCP socket under a TLS socket (`net` is then the TLSSocket), or null for plain TCP. An
   * abort resets it: a TLSSocket cannot resetAndDestroy itself (ERR_INVALID_HANDLE_TYPE).
   */
  raw: Socket | null = null
  /** this incarnation took its terminal path (drop or intentional close); data released with it */
  ended = false
  /** intentional close happened (F1) */
  final = false
  owner: IncarnationOwner | null
  timers: Set<NodeJS.Timeout> | null = null
  /** liveness bookkeeping (src/hooks/liveness.ts) */
  probeSentAt = 0
  probeRecvCount = 0
  probeMisses = 0
  lastProbeAt = 0
  private readonly svc: ShardServices
  private linkedData: unknown = undefined
  private isLinked = false
  private userPaused = false
  /** the queue went above high water: connectionWritable is owed once it drains to low water */
  private wantWritable = false
  /** the peer's FIN was handed to connectionEnd (half-open) */
  private readEnded = false
  /** our write side was ended by shutdown() (FIN after the flush) */
  private writeShut = false
  /** write callback for chunks that leave more than low water queued; made on first need */
  private flushCb: (() => void) | null = null
  /** which incarnation of the slot's connection this is (SlotTable.beginIncarnation) */
  readonly incarnation: number
  /** send queue water marks of this incarnation */
  readonly water: WaterMarks
  /** the error that ended it (connect failures read it) */
  lastError: Error | undefined
  /** chunks received so far: liveness and readiness compare it with the count at a probe */
  recvCount = 0

  constructor(svc: ShardServices, id: number, kind: SocketKind, protocol: string, proto: HookTable,
    net: Socket, owner: IncarnationOwner | null = null, water: WaterMarks | null = null) {
    this.svc = svc
    this.water = water ?? { high: svc.limits.highWater, low: svc.limits.lowWater }
    this.incarnation = svc.slots.incarnation(id)
    this.id = id
    this.kind = kind
    this.protocol = protocol
    this.proto = proto
    this.net = net
    this.owner = owner
    this.lockIdx = svc.slots.lockIdx(id)
    // Shared listeners (module functions with `this` = the net socket), not closures per socket:
    // a connection costs no function allocations for its events (issue #8: per-connection cost).
    ;(net as NetOf)[SOCK] = this
    net.on('data', netData)
    net.on('end', netEnd)
    net.on('error', netError)
    net.on('close', netClose)
    net.on('drain', netDrain)
  }

  // ---------------- the user API (SsSocketApi) ----------------

  get shard(): number { return this.svc.shard }
  get ctx(): object { return this.svc.ctx }
  get localAddress() { return this.net.localAddress }
  get localPort() { return this.net.localPort }
  get remoteAddress() { return this.net.remoteAddress }
  get remotePort() { return this.net.remotePort }
  get data(): unknown { return this.linkedData }
  get linked(): boolean { return this.isLinked }
  get queued(): number { return this.net.writableLength }

  /**
   * Link user data (sk_user_data). Linking and a local unlink are single atomic flag updates plus
   * owner-local JS state, so they are safe from inside any hook; foreign threads never touch data.
   */
  link(data: unknown): void {
    if (this.ended || this.final) {
      throw new SyncsockError('ERR_SS_CLOSED', `socket ${this.id} already ended; cannot link`)
    }
    this.linkedData = data
    if (!this.isLinked) {
      this.isLinked = true
      this.svc.slots.setFlags(this.id, F_LINKED)
    }
  }

  /** Local unlink: returns the data (its one release, L2); the socket keeps working. */
  unlink(): unknown {
    if (!this.isLinked) return undefined
    const d = this.linkedData
    this.dropLink()
    return d
  }

  send(bytes: Uint8Array): SendStatus {
    if (!(bytes instanceof Uint8Array)) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', 'sock.send takes a Uint8Array or Buffer')
    }
    if (!this.acceptsWrites() || this.net.writableEnded) {
      this.svc.counters.add(C.sendRefused)
      return 'ERR_SS_CLOSED'
    }
    if (this.net.writableLength + bytes.length > Math.max(this.svc.limits.maxQueue, this.water.high)) {
      this.svc.counters.add(C.sendRefused)
      return 'ERR_SS_QUEUE_FULL'
    }
    return this.write(bytes)
  }

  /**
   * May bytes be queued now? Open, or a one-shot socket still connecting (its bytes wait in the
   * queue, within the same bounds, and go out once it is established).
   */
  acceptsWrites(): boolean {
    return (this.phase === 'open' || (this.phase === 'connecting' && this.kind === 'outbound'))
      && !this.final && !this.net.destroyed
  }

  /** Write without the caller-side checks (ring messages were checked by their producer). */
  write(bytes: Uint8Array): SendStatus {
    const net = this.net
    if (bytes.length === 0) return this.wantWritable ? 'high-water' : 'ok'
    // A chunk that leaves more than low water queued gets the (shared, allocation-free) flush
    // callback: the queue crossing low water is seen as the chunks complete, not only when it is
    // empty ('drain'), so a writer above high water resumes while the pipe is still full.
    if (net.writableLength + bytes.length > this.water.low) net.write(bytes, this.flushCb ??= () => this.flushed())
    else net.write(bytes)
    this.svc.counters.add(C.bytesOut, bytes.length)
    if (net.writableLength > 0) this.svc.watchdog.watchSend(this)
    if (net.writableLength >= this.water.high) {
      if (!this.wantWritable) {
        this.wantWritable = true
        this.svc.slots.setFlags(this.id, F_HIGH_WATER)
      }
      return 'high-water'
    }
    return 'ok'
  }

  /** Intentional, final close: 'graceful' (default) or 'abort', or { mode } (ss/options.ts closeModeOf). */
  close(how?: CloseModeArg): void {
    const mode = closeModeOf(how, 'sock.close')
    this.svc.dispatcher.locked(this, () => this.finalize('local', mode))
  }

  /**
   * Half-close: end our write side once the queue has flushed (FIN) and keep reading. With
   * connectionEnd the protocol sees the peer's FIN; when both directions are done the socket ends
   * normally, released by whichever side finished it: the peer's FIN after our shutdown is a drop
   * ('fin'); our shutdown after the peer's FIN (connectionEnd already ran) is a local close.
   * Without connectionEnd a peer FIN is a drop as always. Idempotent; a no-op once it ended.
   */
  shutdown(): void {
    if (this.writeShut || this.ended || this.final || this.phase === 'closing' || this.phase === 'closed') return
    this.writeShut = true
    if (this.readEnded) { this.svc.dispatcher.locked(this, () => this.finalize('local', 'graceful')); return }
    this.net.end() // queued behind the pending writes, also while a one-shot socket still connects
  }

  pause(): void { this.userPaused = true; this.net.pause() }
  resume(): void { this.userPaused = false; if (!this.backlog) this.net.resume() }

  /** While work waits for a contended lock, stop reading so the backlog stays bounded. */
  onBacklog(waiting: boolean): void {
    if (waiting) this.net.pause()
    else if (!this.userPaused) this.net.resume()
  }

  // ---------------- hooks, under the lock ----------------

  /** May a hook of this incarnation run now? (call under the lock: L1) */
  runnable(): boolean {
    return this.isLinked && !this.final && (this.svc.slots.flags(this.id) & BLOCKS_HOOKS) === 0
  }

  /** Call a hook (caller holds the lock). A failing hook aborts the socket (cause hook-error). */
  hook(name: HookName, a?: unknown, b?: unknown): unknown {
    return this.svc.dispatcher.call(this.proto, name, this, a, b)
  }

  /**
   * A hook threw or returned a Promise (reported and counted by the dispatcher). It ends this
   * INCARNATION, never the connection (hardening bug 2): an accepted socket is closed (cause
   * 'hook-error'); a server connection's incarnation is aborted and the connection fails over
   * like after any drop. Exceptions: a throwing release hook (connectionClose/connectionDrop)
   * already released, and a throwing failover/retry is a connection-level decision the owner
   * replaces by its default (server.ts).
   */
  hookError(f: HookFailure): void {
    this.svc.hookFailed(this, f)
    if (f.hook === 'connectionClose' || f.hook === 'connectionDrop' || f.hook === 'failover' || f.hook === 'retry') return
    this.hookFailed()
  }

  /** End this incarnation after a hook error (under the lock). */
  hookFailed(): void {
    if (!this.owner) { this.finalize('hook-error', 'abort'); return }
    if (this.ended || this.final) return
    this.ended = true
    this.svc.counters.add(C.closed)
    this.svc.counters.add(C.closedHookError)
    if (this.isLinked) this.hook('connectionClose', 'hook-error')
    this.dropLink()
    this.endIo('abort')
    this.owner.dropped(this, 'hook-error')
  }

  /** Registered: run connectionNew (it links data). Without the hook, link null so data flows. */
  started(): void {
    this.svc.dispatcher.locked(this, () => {
      if (this.final) return
      if (typeof this.proto.connectionNew === 'function') this.hook('connectionNew')
      else if (!this.isLinked) this.link(null) // a one-shot socket's data is linked from the start
    })
  }

  // ---------------- endings ----------------

  /**
   * We end it (F1): FINAL first, then connectionClose hands the data back, then the I/O. Runs
   * under the lock. Idempotent: a second close only upgrades graceful to abort.
   */
  finalize(cause: CloseCause, mode: CloseMode): void {
    if (!this.final) {
      this.final = true
      this.svc.slots.setFlags(this.id, F_FINAL)
      this.owner?.finalized(this)
      if (!this.ended) {
        this.ended = true
        if (this.isLinked) this.hook('connectionClose', cause)
        this.dropLink()
      }
      this.svc.counters.add(C.closed)
      this.svc.counters.add(CLOSE_COUNTER[cause])
    }
    this.endIo(mode)
  }

  /** The peer or the network ended it: connectionDrop, then the owner's failover (F2). */
  dropped(reason: DropReason): void {
    this.svc.dispatcher.locked(this, () => {
      if (this.endedByPendingRequests()) return
      this.ended = true
      if (reason !== 'ready-timeout') { // never usable: the owner counts it as a failed connect
        this.svc.counters.add(C.dropped)
        this.svc.counters.add(DROP_COUNTER[reason])
      }
      if (this.isLinked) this.hook('connectionDrop', reason)
      this.dropLink()
      this.owner?.dropped(this, reason)
    })
    if (reason === 'send-timeout' || reason === 'liveness' || reason === 'ready-timeout') this.endIo('abort')
  }

  /**
   * Under the lock, as the peer or the network ends this incarnation: has it ended already, or
   * does a foreign close/unlink recorded before (and not yet applied) end it now? The request
   * wins: it was intentional (F1), and the incarnation is about to vanish, so it is applied here
   * rather than after the barrier. Only while this incarnation has not ended: a late event
   * ('error' after 'end') on incarnation k must not take the requests of k+1 (a server
   * connection keeps its slot and generation across incarnations; found by the model check).
   */
  private endedByPendingRequests(): boolean {
    if (this.ended || this.final) return true
    const req = this.svc.slots.takeFlags(this.id, REQ_BITS)
    if (req) this.applyRequests(req)
    return this.ended || this.final
  }

  private dropLink(): void {
    if (this.isLinked) {
      this.isLinked = false
      this.linkedData = undefined
      this.svc.slots.clearFlags(this.id, F_LINKED)
    }
  }

  /** Hard stop of the I/O, whatever the state (close timeout, stop's last resort). */
  abortNow(): void {
    if (this.net.destroyed) return
    if (this.net.connecting || this.phase === 'connecting') this.net.destroy()
    else this.reset()
  }

  /** RST: the TCP socket's (under TLS, the raw one's; the TLS socket goes with it). */
  private reset(): void {
    if (this.raw) {
      if (!this.raw.destroyed) this.raw.resetAndDestroy()
      this.net.destroy()
    } else if (!this.net.destroyed) {
      this.net.resetAndDestroy()
    }
  }

  private endIo(mode: CloseMode): void {
    if (this.phase === 'closed') return
    // Still connecting (TCP, or a TLS handshake after it): nothing to flush or half-close.
    const connecting = this.phase === 'connecting'
    if (this.phase !== 'closing') {
      this.phase = 'closing'
      this.svc.slots.setState(this.id, ST_CLOSING)
      // A graceful close waits for the flush and the peer's FIN, but not forever: a peer that
      // never closes its end is aborted after closeTimeoutMs by the shard's housekeeping.
      this.svc.watchdog.watchClose(this)
    }
    if (this.net.connecting || connecting) {
      // Never resetAndDestroy a connecting socket: Node defers that until 'connect', so a close
      // or stop during a blackholed connect would wait for the kernel's SYN retries (minutes).
      this.net.destroy()
    } else if (mode === 'abort') {
      this.reset()
    } else if (!this.net.writableEnded) {
      this.net.end()
    }
  }

  // ---------------- net events ----------------

  onData(chunk: Buffer): void {
    if (this.recvCount++ === 0 && this.owner) this.owner.firstData(this)
    this.svc.counters.add(C.bytesIn, chunk.length)
    const d = this.svc.dispatcher
    if (d.enter(this)) {
      try { this.recv(chunk) } finally { d.exit(this) }
    } else {
      d.locked(this, () => this.recv(chunk))
    }
  }

  /** Under the lock: deliver, or (unlinked / closing / request pending) discard and count. */
  private recv(chunk: Buffer): void {
    if (this.runnable()) {
      this.hook('connectionRecv', chunk)
    } else {
      // Tempesta: an unlinked socket still works; its data is eaten and counted (L2).
      this.svc.counters.add(C.discardedAfterUnlink, chunk.length)
      this.svc.counters.add(C.discardedChunks)
    }
  }

  onEnd(): void {
    if (typeof this.proto.connectionEnd === 'function' && this.phase === 'open') {
      // Half-open: the peer is done sending; we may still write until we close. Only a hook can
      // close it then: with no hook to see the FIN (unlinked, or a request pending) it is an
      // ordinary peer end, else the socket and its slot would leak (hardening bug 7).
      this.svc.dispatcher.locked(this, () => {
        if (!this.runnable()) { this.peerEnded(); return }
        this.readEnded = true
        this.hook('connectionEnd')
        // Both directions are done (our side was shut before the peer's FIN): the socket ends,
        // and the peer's FIN, which finished it, releases the data (connectionDrop 'fin').
        if (this.writeShut && !this.ended && !this.final) this.peerEnded()
      })
      return
    }
    this.peerEnded()
  }

  /** The peer's FIN with nobody to hand it to: a drop ('fin'), then our side ends too. */
  private peerEnded(): void {
    this.dropped('fin')
    // Nothing left to flush: close outright (the kernel sends our FIN on close) instead of
    // shutdown() and a second trip through the loop; thousands of peers that leave at once
    // (a storm) then cost one pass each. With bytes still queued, flush them first.
    if (this.net.writableLength === 0) this.net.destroy()
    else if (!this.net.writableEnded) this.net.end()
  }

  onError(err: Error): void {
    this.lastError = err
    if (this.phase === 'connecting') return // 'close' follows; the owner treats it as a connect failure
    this.dropped(dropReasonOf(err))
  }

  /**
   * A chunk flushed (write callback) or the queue emptied ('drain'): once a queue that went above
   * high water is down to low water, foreign sends are accepted again and connectionWritable runs.
   */
  flushed(): void {
    if (!this.wantWritable || this.net.writableLength > this.water.low) return
    this.wantWritable = false
    this.svc.slots.clearFlags(this.id, F_HIGH_WATER)
    this.svc.dispatcher.locked(this, () => { if (this.runnable()) this.hook('connectionWritable') })
  }

  onClose(): void {
    if (this.phase === 'connecting') {
      this.phase = 'closed'
      const error = this.lastError ?? new Error('connection closed before it was established')
      if (this.owner) this.owner.connectFailed(this, error)
      else this.openFailed(error)
    } else {
      if (!this.ended && !this.final) this.dropped(this.lastError ? dropReasonOf(this.lastError) : 'fin')
      this.phase = 'closed'
    }
    if (this.timers) { for (const t of this.timers) clearTimeout(t); this.timers = null }
    // Work queued behind a busy lock (this incarnation's last bytes, its drop) runs before the
    // slot can be released and handed to another socket: `locked` queues behind the backlog
    // (hardening bug 4). Uncontended, this runs at once.
    this.svc.dispatcher.locked(this, this.release)
  }

  private readonly release = (): void => {
    this.svc.released(this)
    this.owner?.released(this)
  }

  // ---------------- outbound (server connection incarnations) ----------------

  /**
   * Mark as connecting (the owner created `net` with net.connect, or tls.connect: then it is
   * established at 'secureConnect', after the handshake, not at the TCP 'connect').
   */
  connecting(established: 'connect' | 'secureConnect' = 'connect'): void {
    this.phase = 'connecting'
    this.svc.slots.setState(this.id, ST_CONNECTING)
    this.net.once(established, netConnect)
  }

  onConnect(): void {
    if (this.phase !== 'connecting') return
    this.phase = 'open'
    this.svc.slots.setState(this.id, ST_ESTABLISHED)
    if (this.owner) { this.owner.established(this); return }
    this.svc.counters.add(C.outboundConnected)
    this.started()
  }

  // ---------------- one-shot outbound sockets (ctx.open) ----------------
  //
  //   opening ──connect──▶ open ──▶ (as any socket: drop, close, shutdown)
  //      └── refused / unreachable / connect timeout ──▶ connectionDrop(sock, 'connect-failed', error)
  //
  // No owner: no failover, no retry, no gate. Data is linked from the start (ctx.open's `data`),
  // so it is released exactly once whatever happens. The connect deadline is on the shard's
  // housekeeping tick (watchdog.ts), not a timer per socket.

  /** Start connecting a one-shot socket (ctx.open created `net` with net.connect). */
  opening(connectTimeoutMs: number): void {
    this.connecting()
    this.svc.watchdog.watchConnect(this, connectTimeoutMs)
  }

  /** The connect deadline passed (watchdog): a failed connect. */
  connectTimedOut(ms: number): void {
    if (this.phase !== 'connecting') return
    this.lastError = new SyncsockError('ERR_SS_TIMEOUT', `connect to ${this.remoteAddress ?? ''}:${this.remotePort ?? ''} timed out after ${ms} ms`)
    this.net.destroy() // 'close' while connecting → openFailed
  }

  /** A one-shot socket's connect failed: its data is released by connectionDrop with the cause. */
  private openFailed(error: Error): void {
    this.svc.counters.add(C.connectFailed)
    this.svc.counters.add(connectFailCounter(error))
    this.svc.dispatcher.locked(this, () => {
      if (this.endedByPendingRequests()) return
      this.ended = true
      if (this.isLinked) this.hook('connectionDrop', 'connect-failed', error)
      this.dropLink()
    })
  }

  /** Mark an accepted socket established. */
  accepted(): void { this.svc.slots.setState(this.id, ST_ESTABLISHED) }

  /** Apply foreign requests recorded in the slot (Q1). Called by the shard under the lock. */
  applyRequests(bits: number): void {
    if (bits & F_REQ_UNLINK) {
      if (this.isLinked) {
        this.hook('connectionClose', 'unlink')
        this.dropLink()
        this.svc.counters.add(C.closedUnlink)
      }
    }
    if (bits & (F_REQ_CLOSE | F_REQ_ABORT)) this.finalize('foreign', bits & F_REQ_ABORT ? 'abort' : 'graceful')
  }
}
