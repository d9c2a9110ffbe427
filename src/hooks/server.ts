// Persistent server connections (Tempesta's TfwSrvConn): a connection outlives its socket
// incarnations. One slot for its whole life (its id is stable; FINAL there is final for every
// incarnation), one SsSocket per incarnation.
//
//            create                      startConnect                 established
//   (new) ──────────▶ queued ──admission──▶ connecting ───────────────▶ open
//                      ▲  │                    │ connectFailed            │ dropped, hook error
//                      │  └─ gate down ─▶ parked (no timer)              │   (failover)
//                      │     gate opened ◀─┘   ▼ retry                    ▼
//                      └──── due ◀────────── waiting (reconnect heap) ◀───┘
//   retry → false, failover declines, maxAttempts rounds ─▶ dead (slot kept: the id answers
//                                                                until closed)
//   intentional close (sock.close, ctx/engine.close, stop) in any state ─▶ final ─▶ finished
//                                                  (slot freed once no incarnation is left)
//
// Each transition is one small function (to*); `state` is assigned only there, and `final` only
// in toFinal. F2: established then dropped → connectionDrop → failover; a connect that never
// became usable → retry(attempt, err). F1: FINAL or STOPPING is checked under the lock before
// failover/retry run, inside `arm` before a reconnect is scheduled, and again right before
// connect — a stop can never be followed by a reconnect (Tempesta #107, #270).
// `reconnectsAfterStop` counts any that slipped through.
//
// Storm control (Icinga #6517, Tempesta #2588/#2599): no per-connection reconnect timers (one
// heap and one timer per shard: reconnect.ts); connects in flight are bounded per shard
// (admission control: due connects wait in a FIFO, never dropped); target gates (gate.ts).

import { connect as netConnect, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { performance } from 'node:perf_hooks'
import {
  C, F_FINAL, F_SERVER, H_STOPPING, ST_CONNECTING, ST_WAITING, ST_DEAD, idSlot,
} from '../ss/layout.ts'
import { SsSocket, REQ_BITS, connectFailCounter, type IncarnationOwner, type ShardServices } from '../ss/socket.ts'
import { SyncsockError } from '../ss/errors.ts'
import { backoffDelay, type NormalizedConnect } from './retry.ts'
import { HOOK_FAILED, type Lockable } from '../ss/upcall.ts'
import { GatePolicy, type GateMember, type Gate } from './gate.ts'
import { ReconnectTimer, type Scheduled } from './reconnect.ts'
import type { FailoverDecision, FailoverReason, Protocol, Target } from './types.ts'
import type { TlsClientSpec } from '../tls/options.ts'
import { tlsConnectError } from '../tls/shard-tls.ts'

type ConnState = 'queued' | 'connecting' | 'open' | 'waiting' | 'parked' | 'dead' | 'final'

export class ServerConn implements Lockable, IncarnationOwner, GateMember, Scheduled {
  // ---- connection lifetime: from create to finish (DESIGN §4b) ----
  readonly id: number
  readonly lockIdx: number
  backlog: (() => void)[] | null = null
  readonly proto: Protocol
  readonly cfg: NormalizedConnect
  /** where the next incarnation connects (a failover/retry may reselect it) */
  target: Target
  private state: ConnState = 'queued'
  /** the incarnation up or connecting, or null between incarnations */
  current: SsSocket | null = null
  /** failed connects in a row since the last incarnation that became ready (retry's `attempt`) */
  attempt = 0
  /** drops in a row of incarnations that lived less than resetAfterMs (flapping) */
  flaps = 0
  prevDelay = 0
  downSince = 0
  everUp = false
  /** reconnect heap bookkeeping (reconnect.ts), valid while waiting */
  dueAt = 0
  heapIdx = -1
  /** the gate this connection is parked in (gate.ts), or null */
  parkedIn: Gate | null = null
  private finished = false
  // ---- incarnation lifetime: reset when an incarnation starts ----
  establishedAt = 0
  /** the current incarnation has been counted as ready (connected) */
  readyCounted = false
  private connectTimer: NodeJS.Timeout | null = null
  /** TLS: when this incarnation's TCP connect completed and its handshake began (0: not in one) */
  private handshakeStart = 0
  /** this incarnation holds one of the shard's connect slots (admission), given back exactly once */
  private admitted = false
  private readonly mgr: ConnManager

  constructor(mgr: ConnManager, id: number, proto: Protocol, cfg: NormalizedConnect) {
    this.mgr = mgr
    this.id = id
    this.lockIdx = mgr.svc.slots.lockIdx(id)
    this.proto = proto
    this.cfg = cfg
    this.target = cfg.target
  }

  /** An intentional close happened, here or by a foreign request recorded in the slot (F1). */
  get final(): boolean { return this.state === 'final' || (this.mgr.svc.slots.flags(this.id) & F_FINAL) !== 0 }
  get isDead(): boolean { return this.state === 'dead' }
  get isParked(): boolean { return this.state === 'parked' }
  get isQueued(): boolean { return this.state === 'queued' }
  get isWaiting(): boolean { return this.state === 'waiting' }

  // ---------------- transitions ----------------

  /** Due: waiting for a connect slot (admission control). */
  toQueued(): void {
    this.state = 'queued'
    this.mgr.svc.slots.setState(this.id, ST_CONNECTING)
  }

  /** Its target's gate is down and another connection probes it: wait, no timer. */
  toParked(): void {
    this.state = 'parked'
    this.mgr.svc.slots.setState(this.id, ST_WAITING)
  }

  /** Between incarnations, in the reconnect heap. */
  private toWaiting(): void {
    this.state = 'waiting'
    this.mgr.svc.slots.setState(this.id, ST_WAITING)
  }

  /** Start one incarnation's connect (admission already granted). */
  startConnect(): void {
    const svc = this.mgr.svc
    this.admitted = true
    if (this.final || this.mgr.stopping()) { this.releaseAdmission(); this.finish(); return }
    this.state = 'connecting'
    svc.counters.add(C.connectAttempts)
    if (this.everUp) svc.counters.add(C.reconnects)
    if (this.mgr.stopping()) svc.counters.add(C.reconnectsAfterStop) // F1 tripwire: must stay 0
    // A new incarnation starts clean: LINKED, HIGH_WATER and a pending unlink were about the last
    // one (hardening bug 1: its high water refused every send to this one).
    svc.slots.beginIncarnation(this.id)
    this.readyCounted = false
    // allowHalfOpen: a peer's FIN does not end our side on its own; the socket's onEnd decides
    // (a protocol with connectionEnd is half-open, any other drops with 'fin': socket.ts).
    const tls = this.cfg.tlsSpec
    const raw = netConnect({ host: this.target.host, port: this.target.port, noDelay: true, allowHalfOpen: true })
    // TLS: established only once the handshake completed ('secureConnect'); until then the
    // incarnation is connecting and holds its admission slot (handshakes count against
    // maxConnectsInFlight: a storm is admitted at the rate handshakes finish, Icinga #6517).
    const net = tls ? svc.tls.connect(raw, tls, this.target.host) : raw
    const sock = new SsSocket(svc, this.id, 'server', this.cfg.protocol, this.proto, net, this, this.cfg.water)
    this.handshakeStart = 0
    if (tls) {
      sock.raw = raw
      raw.once('connect', () => this.handshaking(sock, tls))
    }
    this.current = sock
    svc.register(sock)
    sock.connecting(tls ? 'secureConnect' : 'connect')
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null
      if (sock.phase === 'connecting') {
        sock.lastError = new SyncsockError('ERR_SS_TIMEOUT', `connect to ${this.target.host}:${this.target.port} timed out after ${this.cfg.connectTimeoutMs} ms`)
        net.destroy() // 'close' while connecting → connectFailed
      }
    }, this.cfg.connectTimeoutMs)
  }

  /**
   * TLS: the TCP connect completed and the handshake starts. The connect deadline becomes the
   * handshake deadline (handshakeTimeoutMs); missing it is a failed connect (ERR_SS_TLS_TIMEOUT).
   */
  private handshaking(s: SsSocket, tls: TlsClientSpec): void {
    if (this.current !== s || s.phase !== 'connecting') return
    this.handshakeStart = performance.now()
    this.mgr.svc.tls.outboundStarted()
    if (this.connectTimer) clearTimeout(this.connectTimer)
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null
      if (s.phase === 'connecting') {
        s.lastError = new SyncsockError('ERR_SS_TLS_TIMEOUT', `TLS handshake with ${this.target.host}:${this.target.port} did not finish within ${tls.handshakeTimeoutMs} ms`)
        s.net.destroy() // 'close' while connecting → connectFailed
      }
    }, tls.handshakeTimeoutMs)
  }

  /** The incarnation's TCP connect completed (with TLS: its handshake too). */
  established(s: SsSocket): void {
    if (this.handshakeStart) {
      this.mgr.svc.tls.outboundDone(this.handshakeStart, (s.net as TLSSocket).isSessionReused())
      this.handshakeStart = 0
    }
    this.releaseAdmission()
    const svc = this.mgr.svc
    if (this.mgr.stopping()) {
      // §6b.1: a socket that becomes established during stop is closed without hooks.
      svc.counters.add(C.establishedAfterStop)
      svc.dispatcher.locked(this, () => s.finalize('shutdown', 'abort'))
      return
    }
    if (this.final) {
      // Closed (engine.close / ctx.close) while it was connecting: final, no hooks.
      svc.dispatcher.locked(this, () => { svc.slots.takeFlags(this.id, REQ_BITS); s.finalize('foreign', 'abort') })
      return
    }
    this.state = 'open'
    this.establishedAt = Date.now()
    // With a ready deadline the connection counts as up only once its first bytes arrive.
    if (this.cfg.readyTimeoutMs > 0) this.mgr.liveness.watchReady(s, this.cfg.readyTimeoutMs)
    else this.ready(s)
    if (this.cfg.liveness) this.mgr.liveness.add(this)
    s.started()
  }

  firstData(s: SsSocket): void { if (this.cfg.readyTimeoutMs > 0) this.ready(s) }

  /** The incarnation is usable: count it, reset the failed-connect count (attempt). */
  ready(s: SsSocket): void {
    if (this.readyCounted || this.current !== s) return
    this.readyCounted = true
    const svc = this.mgr.svc
    svc.counters.add(C.connected)
    if (this.downSince) svc.counters.max(C.reconnectLatencyMaxMs, Date.now() - this.downSince)
    this.downSince = 0
    this.everUp = true
    this.attempt = 0
    this.mgr.gates.opened(this)
  }

  /**
   * Under the lock, after the incarnation's data was released: it was dropped by the peer or the
   * network, or a hook of it threw ('hook-error'). F2: failover.
   */
  dropped(s: SsSocket, reason: FailoverReason): void {
    const svc = this.mgr.svc
    this.mgr.liveness.remove(this)
    if (this.final || this.mgr.stopping()) return
    if (reason === 'ready-timeout') {
      // It never became usable: a failed connect (retry), not a failover.
      svc.counters.add(C.connectFailed)
      svc.counters.add(C.connectFailedTimeout)
      this.failed(s, new SyncsockError('ERR_SS_TIMEOUT', `no bytes within readyTimeoutMs (${this.cfg.readyTimeoutMs} ms) after connect`))
      return
    }
    svc.counters.add(C.failovers)
    this.downSince = Date.now()
    // Flapping: a connection that keeps dying young gets growing delays; one that stayed up
    // resetAfterMs gets a fast first reconnect (uniform in [0, baseMs]).
    if (Date.now() - this.establishedAt >= this.cfg.retry.resetAfterMs) { this.flaps = 0; this.prevDelay = 0 }
    else this.flaps++
    let d: FailoverDecision = { reconnect: true }
    if (typeof this.proto.failover === 'function') {
      // A throwing failover is reported; its default applies (it must not end the connection).
      const v = s.hook('failover', reason)
      if (v === HOOK_FAILED || v === undefined || v === true) d = { reconnect: true }
      else if (v === false) d = { reconnect: false }
      else d = v as FailoverDecision
    }
    if (this.final) return // the hook closed the connection (ctx.close(sock.id)): nothing to decide
    if (!d.reconnect) { this.giveUp(new SyncsockError('ERR_SS_CLOSED', `failover gave up after ${reason}`)); return }
    if (d.target) this.target = d.target
    const delay = d.delayMs ?? this.nextDelay(this.flaps + 1)
    this.mgr.arm(this, delay)
  }

  /** The incarnation's connect failed (refused, unreachable, timeout, TLS handshake failed or timed out). */
  connectFailed(s: SsSocket, error: Error): void {
    if (this.handshakeStart) {
      // Failed after TCP was up: a TLS failure, whatever Node called it (a certificate error,
      // an alert, the peer closing): retry gets ERR_SS_TLS (cause attached) or ERR_SS_TLS_TIMEOUT.
      error = tlsConnectError(error, this.target.host, this.target.port)
      this.mgr.svc.tls.outboundFailed(error)
      this.handshakeStart = 0
    }
    this.releaseAdmission()
    const svc = this.mgr.svc
    svc.counters.add(C.connectFailed)
    svc.counters.add(connectFailCounter(error))
    svc.dispatcher.locked(this, () => {
      // A foreign close recorded while connecting: the connection is final, nothing to retry.
      if (svc.slots.takeFlags(this.id, REQ_BITS)) s.finalize('foreign', 'abort')
      this.failed(s, error)
    })
  }

  /** Under the lock: a connect that never became usable → retry(attempt, error). */
  private failed(s: SsSocket, error: Error): void {
    if (this.final || this.mgr.stopping()) return
    if (!this.downSince) this.downSince = Date.now()
    this.attempt++
    const g = this.mgr.gates.failed(this)
    // maxAttempts rounds in a row: the target is dead, with every connection waiting on it.
    if (g.rounds >= this.cfg.retry.maxAttempts) { this.mgr.gates.dead(g, this, error); return }
    // Backoff grows with the target's rounds too: with the probe role rotating, each
    // connection's own count stays low while the target stays down.
    let delay = this.nextDelay(Math.max(this.attempt, g.rounds))
    let target: Target | undefined
    if (typeof this.proto.retry === 'function') {
      // A throwing retry is reported; the default backoff applies.
      const v = s.hook('retry', this.attempt, error)
      if (this.final) return // the hook closed the connection: nothing to schedule
      if (v === false) { this.giveUp(error); return }
      if (typeof v === 'number' && Number.isFinite(v) && v >= 0) delay = v
      else if (v !== null && typeof v === 'object') {
        const o = v as { delayMs: number; target?: Target }
        if (typeof o.delayMs === 'number' && o.delayMs >= 0) delay = o.delayMs
        if (o.target) target = o.target
      }
    }
    this.mgr.svc.counters.add(C.retries) // a retry that will be scheduled, not a give-up
    if (target && (target.host !== this.target.host || target.port !== this.target.port)) {
      this.mgr.gates.leave(this, delay) // reselect: this connection now waits on another gate
      this.target = target
      this.mgr.arm(this, delay)
      return
    }
    this.mgr.gates.retryAfter(g, this, delay)
  }

  private nextDelay(n: number): number {
    const d = backoffDelay(this.cfg.retry, Math.max(1, n), this.prevDelay || this.cfg.retry.baseMs)
    this.prevDelay = d
    return d
  }

  /** Schedule the next incarnation (called by the manager's arm). */
  scheduled(): void { this.toWaiting() }

  /**
   * Give up: the connection is dead and reported; its slot stays (the id answers until it is
   * closed). Never over a final connection: a hook that closed it decided first (issue #8: a
   * ctx.close inside failover/retry was overwritten here and leaked the slot).
   */
  giveUp(error: Error): void {
    if (this.final || this.state === 'dead') return
    // Leaving its gate hands the probe role on, so connections parked behind a probe that
    // died (failover declined, retry said no) are not orphaned.
    this.mgr.gates.leave(this, this.cfg.retry.baseMs)
    this.state = 'dead'
    this.mgr.svc.slots.setState(this.id, ST_DEAD)
    this.mgr.svc.counters.add(C.deadConnections)
    this.mgr.report('dead', { id: this.id, host: this.target.host, port: this.target.port, attempts: this.attempt, error: error.message })
  }

  /** Intentional close (F1), in one place: FINAL in the slot, out of every schedule. */
  private toFinal(): void {
    if (this.state === 'final') return
    this.state = 'final'
    this.mgr.svc.slots.setFlags(this.id, F_FINAL)
    this.mgr.liveness.remove(this)
    this.mgr.disarm(this)
    this.mgr.gates.leave(this, this.cfg.retry.baseMs)
  }

  /** The current incarnation was closed on purpose: final for the connection too (F1). */
  finalized(_s: SsSocket): void { this.toFinal() }

  /** Intentional close with no incarnation up (waiting, queued, parked or dead): stop for good. */
  closeIdle(): void {
    if (this.state !== 'final') {
      this.toFinal()
      this.mgr.svc.counters.add(C.closed)
    }
    this.finish()
  }

  /** The incarnation's socket is gone (after its queued work ran: socket.ts). */
  released(s: SsSocket): void {
    if (this.current === s) {
      if (this.handshakeStart) { this.mgr.svc.tls.outboundAbandoned(); this.handshakeStart = 0 } // closed mid-handshake
      this.releaseAdmission()
      this.current = null
    }
    // Final already, or a foreign close is recorded in the slot and not yet applied: it is over.
    if (this.final) this.closeIdle()
    else if (this.state === 'open' || this.state === 'connecting') this.toWaiting()
  }

  /** Free the slot once: the connection is over (final, and no incarnation left). */
  finish(): void {
    if (this.finished || this.current) return
    this.finished = true
    this.state = 'final'
    this.mgr.forget(this)
  }

  /**
   * The connect attempt is over (established, failed, or the incarnation closed while still
   * connecting): stop its timer and give its admission back, once. Without the last case a close
   * or stop during connect leaked an in-flight slot and left the timer holding the shard alive.
   */
  private releaseAdmission(): void {
    if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null }
    if (this.admitted) { this.admitted = false; this.mgr.connectDone() }
  }
}

export interface ConnServices extends ShardServices {
  register(s: SsSocket): void
  report(type: string, detail: Record<string, unknown>): void
  /** the shard's TLS (src/tls/shard-tls.ts): client contexts and handshake accounting */
  readonly tls: TlsConnector
}

/** What a server connection needs of the shard's TLS. */
export interface TlsConnector {
  connect(raw: Socket, spec: TlsClientSpec, host: string): Socket
  outboundStarted(): void
  outboundDone(start: number, resumed: boolean): void
  outboundFailed(error: Error): void
  outboundAbandoned(): void
}

export interface LivenessHooks {
  add(c: ServerConn): void
  remove(c: ServerConn): void
  watchReady(s: SsSocket, ms: number): void
}

/**
 * Connects started per loop turn, on top of the in-flight bound. On loopback a connect() does the
 * whole handshake inside the syscall (0.1-0.3 ms each on 2 busy cores), so refilling 256 free
 * in-flight slots in one macrotask blocked a shard for 75+ ms in bench/reconnect-storm.ts; the
 * rest of a refill waits for the next turn (setImmediate), after the loop has served its I/O.
 */
export const CONNECTS_PER_TURN = 64

/** Per-shard owner of all server connections: the reconnect schedule, admission control, gates. */
export class ConnManager {
  readonly svc: ConnServices
  readonly conns = new Map<number, ServerConn>() // by slot index
  liveness: LivenessHooks
  readonly gates: GatePolicy<ServerConn>
  private readonly i32: Int32Array
  private readonly maxInFlight: number
  private inFlight = 0
  private readonly pending: ServerConn[] = [] // due, waiting for admission (FIFO)
  private pendingHead = 0
  private readonly schedule: ReconnectTimer<ServerConn>
  private shut = false
  private turnStarts = 0 // connects started in this loop turn (CONNECTS_PER_TURN)
  private turnImmediate: NodeJS.Immediate | null = null

  constructor(svc: ConnServices, sab: SharedArrayBuffer, maxInFlight: number, liveness: LivenessHooks) {
    this.svc = svc
    this.i32 = new Int32Array(sab)
    this.maxInFlight = maxInFlight
    this.liveness = liveness
    this.gates = new GatePolicy<ServerConn>({
      admit: (c) => this.admit(c),
      arm: (c, ms) => this.arm(c, ms),
      parkedChanged: (n) => this.svc.counters.set(C.parked, n),
      gatesChanged: (n) => this.svc.counters.set(C.gates, n),
    })
    // F1 again, under the connection's lock, right before it may connect.
    this.schedule = new ReconnectTimer<ServerConn>((c) => this.svc.dispatcher.locked(c, () => {
      if (!c.final && !this.stopping() && c.isWaiting) this.gates.due(c)
    }))
  }

  stopping(): boolean { return this.shut || Atomics.load(this.i32, H_STOPPING) !== 0 }

  report(type: string, detail: Record<string, unknown>): void { this.svc.report(type, detail) }

  create(proto: Protocol, cfg: NormalizedConnect): number {
    if (this.stopping()) throw new SyncsockError('ERR_SS_STOPPED', 'engine is stopping: no new connections')
    const id = this.svc.slots.alloc(F_SERVER, ST_CONNECTING)
    if (id < 0) throw new SyncsockError('ERR_SS_SLOTS_EXHAUSTED', `shard ${this.svc.shard} has no free slot`)
    const c = new ServerConn(this, id, proto, cfg)
    this.conns.set(idSlot(id), c)
    this.svc.counters.add(C.serverConns)
    this.gates.due(c)
    return id
  }

  /** Arm a reconnect (F1: refused for good once stopping or final — checked here, not only in clear). */
  arm(c: ServerConn, delayMs: number): void {
    if (this.stopping() || c.final || c.isDead) return
    c.scheduled()
    this.schedule.push(c, delayMs)
  }

  disarm(c: ServerConn): void {
    this.schedule.remove(c)
    // queued entries are skipped when their state is no longer 'queued'
  }

  private admit(c: ServerConn): void {
    if (this.stopping() || c.final) return
    c.toQueued()
    // Straight in only when nobody queues ahead (FIFO) and this turn still has room.
    if (this.inFlight < this.maxInFlight && this.pendingHead === this.pending.length && this.takeTurnSlot()) {
      this.inFlight++; this.updateGauges(); c.startConnect(); return
    }
    this.pending.push(c)
    this.updateGauges()
  }

  /** One of this turn's CONNECTS_PER_TURN starts; the first one books the next turn's refill. */
  private takeTurnSlot(): boolean {
    if (this.turnStarts >= CONNECTS_PER_TURN) return false
    if (this.turnStarts++ === 0) this.turnImmediate = setImmediate(this.nextTurn)
    return true
  }

  private nextTurn = (): void => {
    this.turnImmediate = null
    this.turnStarts = 0
    if (!this.shut) this.pump()
  }

  connectDone(): void {
    this.inFlight--
    this.pump()
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.pendingHead < this.pending.length) {
      const c = this.pending[this.pendingHead]
      if (!c.isQueued || c.final || this.stopping()) { this.pendingHead++; continue }
      if (!this.takeTurnSlot()) break // the booked setImmediate pumps again
      this.pendingHead++
      this.inFlight++
      c.startConnect()
    }
    if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      this.pending.splice(0, this.pendingHead)
      this.pendingHead = 0
    }
    this.updateGauges()
  }

  private updateGauges(): void {
    this.svc.counters.set(C.connectsInFlight, this.inFlight)
    this.svc.counters.set(C.pendingConnects, this.pending.length - this.pendingHead)
  }

  /** The connection is over: free its slot. */
  forget(c: ServerConn): void {
    this.disarm(c)
    this.gates.leave(c, c.cfg.retry.baseMs)
    const slot = idSlot(c.id)
    if (this.conns.get(slot) === c) {
      this.conns.delete(slot)
      this.svc.slots.release(c.id)
      this.svc.counters.add(C.serverConns, -1)
    }
  }

  /** Stop (§6b.3): every connection FINAL, reconnect timer shut down so it can never re-arm. */
  shutdown(closeIncarnation: (s: SsSocket) => void): void {
    this.shut = true
    this.schedule.shutdown()
    if (this.turnImmediate) { clearImmediate(this.turnImmediate); this.turnImmediate = null }
    this.gates.clear()
    this.pending.length = 0
    this.pendingHead = 0
    for (const c of [...this.conns.values()]) {
      c.parkedIn = null
      this.svc.dispatcher.locked(c, () => {
        const s = c.current
        if (s && s.phase !== 'closed') closeIncarnation(s)
        else c.closeIdle()
      })
    }
    this.updateGauges()
  }
}
