// Persistent server connections (Tempesta's TfwSrvConn): a connection outlives its socket
// incarnations. One slot for its whole life (its id is stable; FINAL there is final for every
// incarnation), one SsSocket per incarnation.
//
// F2: established then dropped by the peer/network → connectionDrop → failover (default:
// reconnect to the same target after backoff; may reselect a target or give up). A connect that
// never established (refused, unreachable, connect timeout, ready timeout) → retry(attempt, err)
// (default: exponential backoff with jitter, capped, optional max attempts → dead).
// F1: FINAL or STOPPING is checked under the lock before failover/retry run, inside `arm` before a
// reconnect is scheduled, and again right before connect — a stop can never be followed by a
// reconnect (Tempesta #107, #270). `reconnectsAfterStop` counts any that slipped through.
//
// Storm control (Icinga #6517, Tempesta #2588/#2599): no per-connection reconnect timers — one
// min-heap and one timer per shard; connects in flight are bounded per shard (admission control:
// due connects wait in a FIFO, never dropped), so 10,000 simultaneous reconnects become a steady
// stream the loop can finish instead of a burst of self-inflicted timeouts.

import { connect as netConnect } from 'node:net'
import {
  C, F_FINAL, F_SERVER, H_STOPPING, ST_CONNECTING, ST_WAITING, ST_DEAD, idSlot,
} from '../ss/layout.ts'
import { SsSocket, REQ_BITS, type IncarnationOwner, type ShardServices } from '../ss/socket.ts'
import { SyncsockError } from '../ss/errors.ts'
import { backoffDelay, type NormalizedConnect } from './retry.ts'
import { HOOK_FAILED, type Lockable } from './dispatch.ts'
import { Gates, type Gate } from './gate.ts'
import type { DropReason, FailoverDecision, Protocol, Target } from './types.ts'

type ConnState = 'queued' | 'connecting' | 'open' | 'waiting' | 'parked' | 'dead' | 'final'

export class ServerConn implements Lockable, IncarnationOwner {
  readonly id: number
  readonly lockIdx: number
  backlog: (() => void)[] | null = null
  readonly proto: Protocol
  readonly cfg: NormalizedConnect
  target: Target
  state: ConnState = 'queued'
  current: SsSocket | null = null
  /** failed connects in a row since the last incarnation that became ready (retry's `attempt`) */
  attempt = 0
  /** drops in a row of incarnations that lived less than resetAfterMs (flapping) */
  flaps = 0
  prevDelay = 0
  establishedAt = 0
  /** the current incarnation has been counted as ready (connected) */
  readyCounted = false
  downSince = 0
  everUp = false
  dueAt = 0
  heapIdx = -1
  /** the gate this connection is parked in (gate.ts), or null */
  parkedIn: Gate | null = null
  private connectTimer: NodeJS.Timeout | null = null
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

  get final(): boolean { return this.state === 'final' || (this.mgr.svc.slots.flags(this.id) & F_FINAL) !== 0 }

  /** Start one incarnation's connect (admission already granted). */
  startConnect(): void {
    const svc = this.mgr.svc
    this.admitted = true
    if (this.final || this.mgr.stopping()) { this.releaseAdmission(); this.finish(); return }
    this.state = 'connecting'
    svc.counters.add(C.connectAttempts)
    if (this.everUp) svc.counters.add(C.reconnects)
    if (this.mgr.stopping()) svc.counters.add(C.reconnectsAfterStop) // F1 tripwire: must stay 0
    const net = netConnect({ host: this.target.host, port: this.target.port, noDelay: true })
    const sock = new SsSocket(svc, this.id, 'server', this.cfg.protocol, this.proto, net, this)
    this.current = sock
    svc.register(sock)
    sock.connecting()
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null
      if (sock.phase === 'connecting') {
        sock.lastError = new SyncsockError('ERR_SS_TIMEOUT', `connect to ${this.target.host}:${this.target.port} timed out after ${this.cfg.connectTimeoutMs} ms`)
        net.destroy() // 'close' while connecting → connectFailed
      }
    }, this.cfg.connectTimeoutMs)
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

  established(s: SsSocket): void {
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
    this.readyCounted = false
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
    this.mgr.gateOpened(this)
  }

  /** Under the lock, after connectionDrop (F2: established then dropped → failover). */
  dropped(s: SsSocket, reason: DropReason): void {
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
      const v = s.hook('failover', reason)
      if (v === HOOK_FAILED || v === undefined || v === true) d = { reconnect: true }
      else if (v === false) d = { reconnect: false }
      else d = v as FailoverDecision
    }
    if (!d.reconnect) { this.giveUp(new SyncsockError('ERR_SS_CLOSED', `failover gave up after ${reason}`)); return }
    if (d.target) this.target = d.target
    const delay = d.delayMs ?? this.nextDelay(this.flaps + 1)
    this.mgr.arm(this, delay)
  }

  connectFailed(s: SsSocket, error: Error): void {
    this.releaseAdmission()
    const svc = this.mgr.svc
    const code = (error as NodeJS.ErrnoException).code
    svc.counters.add(C.connectFailed)
    svc.counters.add(code === 'ECONNREFUSED' ? C.connectFailedRefused
      : code === 'ERR_SS_TIMEOUT' || code === 'ETIMEDOUT' ? C.connectFailedTimeout
        : code?.startsWith('ERR_TLS') || code?.startsWith('ERR_SSL') ? C.connectFailedTls : C.connectFailedOther)
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
    const g = this.mgr.gates.of(this)
    // This failure is a probe round if it is the probe's, or the first since the target was up.
    if (g.probe === this || !g.down) g.rounds++
    g.down = true
    // maxAttempts rounds in a row: the target is dead, with every connection waiting on it.
    if (g.rounds >= this.cfg.retry.maxAttempts) { this.mgr.gateDead(g, this, error); return }
    // Backoff grows with the target's rounds too: with the probe role rotating, each
    // connection's own count stays low while the target stays down.
    let delay = this.nextDelay(Math.max(this.attempt, g.rounds))
    let target: Target | undefined
    if (typeof this.proto.retry === 'function') {
      const v = s.hook('retry', this.attempt, error)
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
      this.mgr.gateLeave(g, this, delay) // reselect: this connection now waits on another gate
      this.target = target
      this.mgr.arm(this, delay)
      return
    }
    this.mgr.gateFailed(g, this, delay)
  }

  private nextDelay(n: number): number {
    const d = backoffDelay(this.cfg.retry, Math.max(1, n), this.prevDelay || this.cfg.retry.baseMs)
    this.prevDelay = d
    return d
  }

  giveUp(error: Error): void {
    // Leaving its gate hands the probe role on, so connections parked behind a probe that
    // died (failover declined, retry said no) are not orphaned.
    this.mgr.gateLeave(this.mgr.gates.of(this), this, this.cfg.retry.baseMs)
    this.state = 'dead'
    this.mgr.svc.slots.setState(this.id, ST_DEAD)
    this.mgr.svc.counters.add(C.deadConnections)
    this.mgr.report('dead', { id: this.id, host: this.target.host, port: this.target.port, attempts: this.attempt, error: error.message })
  }

  finalized(_s: SsSocket): void {
    this.state = 'final'
    this.mgr.svc.slots.setFlags(this.id, F_FINAL)
    this.mgr.liveness.remove(this)
    this.mgr.disarm(this)
  }

  released(s: SsSocket): void {
    if (this.current === s) { this.releaseAdmission(); this.current = null }
    if (this.state === 'final') this.finish()
    else if (this.state === 'open' || this.state === 'connecting') this.state = 'waiting'
  }

  /** Intentional close with no incarnation up (waiting, queued or dead): stop for good. */
  closeIdle(): void {
    this.mgr.unpark(this)
    this.state = 'final'
    this.mgr.svc.slots.setFlags(this.id, F_FINAL)
    this.mgr.disarm(this)
    this.mgr.svc.counters.add(C.closed)
    this.finish()
  }

  private finished = false
  /** Free the slot once: the connection is over. */
  finish(): void {
    if (this.finished || this.current) return
    this.finished = true
    this.state = 'final'
    this.mgr.forget(this)
  }

  setWaitingState(): void { this.mgr.svc.slots.setState(this.id, ST_WAITING) }
  setConnectingState(): void { this.mgr.svc.slots.setState(this.id, ST_CONNECTING) }
}

export interface ConnServices extends ShardServices {
  register(s: SsSocket): void
  report(type: string, detail: Record<string, unknown>): void
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
/** Due reconnects moved from the heap into admission per timer callback (a 5,000-entry pop took 36 ms). */
export const DUE_PER_TURN = 512

/** Per-shard owner of all server connections: batched reconnect timer + admission control. */
export class ConnManager {
  readonly svc: ConnServices
  readonly conns = new Map<number, ServerConn>() // by slot index
  liveness: LivenessHooks
  private readonly i32: Int32Array
  private readonly maxInFlight: number
  private inFlight = 0
  private readonly pending: ServerConn[] = [] // due, waiting for admission (FIFO)
  private pendingHead = 0
  private readonly heap: ServerConn[] = [] // waiting for their due time
  private timer: NodeJS.Timeout | null = null
  private timerAt = 0
  private shut = false
  readonly gates = new Gates()
  private parkedCount = 0
  private turnStarts = 0 // connects started in this loop turn (CONNECTS_PER_TURN)
  private turnImmediate: NodeJS.Immediate | null = null

  constructor(svc: ConnServices, sab: SharedArrayBuffer, maxInFlight: number, liveness: LivenessHooks) {
    this.svc = svc
    this.i32 = new Int32Array(sab)
    this.maxInFlight = maxInFlight
    this.liveness = liveness
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
    this.due(c)
    return id
  }

  /** A connection may connect now: unless its target's gate is down with another probe out. */
  private due(c: ServerConn): void {
    const g = this.gates.of(c)
    if (g.down) {
      const p = g.probe
      if (p && p !== c && !p.final && p.state !== 'dead') { this.park(g, c); return }
      g.probe = c
    }
    this.admit(c)
  }

  private park(g: Gate, c: ServerConn): void {
    c.state = 'parked'
    c.setWaitingState()
    if (!c.parkedIn) { this.parkedCount++; this.svc.counters.set(C.parked, this.parkedCount) }
    c.parkedIn = g
    g.push(c)
  }

  /** c leaves whatever gate it was parked in (promoted, released, dead or closed). */
  unpark(c: ServerConn): void {
    if (!c.parkedIn) return
    c.parkedIn = null
    this.parkedCount--
    this.svc.counters.set(C.parked, this.parkedCount)
  }

  /** The probe (or the first of a wave) failed: rotate the probe role, park the rest. */
  gateFailed(g: Gate, c: ServerConn, delayMs: number): void {
    if (g.probe !== null && g.probe !== c) { this.park(g, c); return }
    const next = g.take()
    if (next) {
      this.unpark(next)
      this.park(g, c)
      g.probe = next
      this.arm(next, delayMs)
    } else {
      g.probe = c
      this.arm(c, delayMs)
    }
  }

  /** c stops waiting on g (gave up, closed, or reselected): hand the probe role on. */
  gateLeave(g: Gate, c: ServerConn, delayMs: number): void {
    this.unpark(c)
    if (g.probe !== c) return
    g.probe = null
    const next = g.take()
    if (next) { this.unpark(next); g.probe = next; this.arm(next, delayMs) }
  }

  /** A connection to c's target became ready: open its gate and release everyone parked there. */
  gateOpened(c: ServerConn): void {
    const g = this.gates.of(c)
    if (!g.down) return
    g.down = false
    g.rounds = 0
    g.probe = null
    for (const p of g.takeAll()) {
      this.unpark(p)
      if (!p.final && p.state === 'parked') this.admit(p)
    }
  }

  /** maxAttempts rounds failed: the target is dead for this spec — one verdict for all waiting. */
  gateDead(g: Gate, c: ServerConn, error: Error): void {
    const waiting = g.takeAll()
    g.down = false
    g.rounds = 0
    g.probe = null
    c.giveUp(error)
    for (const p of waiting) if (p !== c && p.state === 'parked') p.giveUp(error)
  }

  /** Arm a reconnect (F1: refused for good once stopping or final — checked here, not only in clear). */
  arm(c: ServerConn, delayMs: number): void {
    if (this.stopping() || c.final || c.state === 'dead') return
    c.state = 'waiting'
    c.setWaitingState()
    c.dueAt = Date.now() + Math.max(0, delayMs)
    this.heapPush(c)
    this.reschedule()
  }

  disarm(c: ServerConn): void {
    if (c.heapIdx >= 0) this.heapRemove(c)
    // queued entries are skipped when their state is no longer 'queued'
  }

  private admit(c: ServerConn): void {
    if (this.stopping() || c.final) return
    c.state = 'queued'
    c.setConnectingState()
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
      if (c.state !== 'queued' || c.final || this.stopping()) { this.pendingHead++; continue }
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

  private onTimer = (): void => {
    this.timer = null
    const now = Date.now()
    let budget = DUE_PER_TURN // the rest are still due: reschedule() fires again at once
    while (this.heap.length > 0 && this.heap[0].dueAt <= now && budget-- > 0) {
      const c = this.heapPop()
      // F1 again, under the connection's lock, right before it may connect.
      this.svc.dispatcher.locked(c, () => { if (!c.final && !this.stopping() && c.state === 'waiting') this.due(c) })
    }
    this.reschedule()
  }

  private reschedule(): void {
    if (this.shut || this.heap.length === 0) {
      if (this.timer) { clearTimeout(this.timer); this.timer = null }
      return
    }
    const at = this.heap[0].dueAt
    if (this.timer && this.timerAt <= at) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(this.onTimer, Math.max(0, at - Date.now()))
  }

  /** The connection is over: free its slot. */
  forget(c: ServerConn): void {
    this.disarm(c)
    const g = this.gates.of(c)
    if (g.probe === c || c.parkedIn) this.gateLeave(g, c, c.cfg.retry.baseMs)
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
    if (this.timer) { clearTimeout(this.timer); this.timer = null }
    if (this.turnImmediate) { clearImmediate(this.turnImmediate); this.turnImmediate = null }
    this.heap.length = 0
    this.gates.clear()
    this.pending.length = 0
    this.pendingHead = 0
    for (const c of [...this.conns.values()]) {
      c.heapIdx = -1
      this.svc.dispatcher.locked(c, () => {
        const s = c.current
        if (s && s.phase !== 'closed') closeIncarnation(s)
        else c.closeIdle()
      })
    }
    this.updateGauges()
  }

  // ---- min-heap by dueAt ----
  private heapPush(c: ServerConn): void {
    if (c.heapIdx >= 0) this.heapRemove(c)
    c.heapIdx = this.heap.length
    this.heap.push(c)
    this.siftUp(c.heapIdx)
  }
  private heapPop(): ServerConn {
    const top = this.heap[0]
    this.heapRemove(top)
    return top
  }
  private heapRemove(c: ServerConn): void {
    const i = c.heapIdx
    const last = this.heap.pop()!
    c.heapIdx = -1
    if (last !== c) {
      this.heap[i] = last
      last.heapIdx = i
      this.siftDown(i)
      this.siftUp(i)
    }
  }
  private siftUp(i: number): void {
    const h = this.heap
    while (i > 0) {
      const p = (i - 1) >> 1
      if (h[p].dueAt <= h[i].dueAt) break
      ;[h[p], h[i]] = [h[i], h[p]]
      h[p].heapIdx = p; h[i].heapIdx = i
      i = p
    }
  }
  private siftDown(i: number): void {
    const h = this.heap
    for (;;) {
      const l = 2 * i + 1, r = l + 1
      let m = i
      if (l < h.length && h[l].dueAt < h[m].dueAt) m = l
      if (r < h.length && h[r].dueAt < h[m].dueAt) m = r
      if (m === i) return
      ;[h[m], h[i]] = [h[i], h[m]]
      h[m].heapIdx = m; h[i].heapIdx = i
      i = m
    }
  }
}

