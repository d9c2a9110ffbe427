// A model of syncsock's slot protocol, small enough to explore every interleaving.
//
// ONE shard's slot table (a few slots), its owner thread, foreign producers (main thread or other
// shards) and the environment (peers, connect outcomes, timers, stop, shard death), each step an
// atomic action on shared words or on the owner's private state. The model is the INTENDED
// protocol (DESIGN §4/§4b plus the hardening issue), not a transcript of src/:
//
// - slot word = generation + flags (IN_USE, FINAL, SERVER, REQ_CLOSE, REQ_ABORT, REQ_UNLINK,
//   LINKED, HIGH_WATER); an id = (slot, generation); releasing a slot bumps the generation and
//   clears every flag; free slots are reused FIFO.
// - a foreign close/unlink is four steps: try-lock (gets the lock, or falls back to the CAS
//   alone), one generation-checked CAS that ORs the request bit (close also FINAL), unlock,
//   then summary bit + doorbell and the answer. A foreign send is two: the checks, then the
//   publish into its own SPSC ring (RING_FULL when full).
// - the owner runs every hook under the slot's lock; the runnable check (LINKED, !FINAL, no REQ
//   bit, generation matches, incarnation current) and the hook's start are one step; the hook's
//   end (return, local close/unlink, throw) is another, so foreign steps interleave with a
//   running hook. Lock busy (a preempted foreign holder) → the event is deferred on the
//   incarnation (its backlog) and retried later. Requests are applied after a barrier that
//   consumed every ring record published before the wake-up saw them (Q1).
// - endings: drop (peer FIN/RST) applies pending requests first, then connectionDrop and, for a
//   server connection, failover; intentional close sets FINAL first, then connectionClose; a
//   local unlink returns the data; a foreign unlink is connectionClose('unlink'). A throwing hook
//   ends the incarnation; a server connection then fails over like a drop.
// - shard death: the supervisor bumps the epoch (locks of the dead owner become breakable) and
//   seals slot by slot (one exchange per slot: read the old word, bump the generation), so a
//   close either landed before the seal (the connection is not re-created) or finds a stale id.
//   The replacement re-creates the server connections that were not FINAL, with new ids.
//
// Ghost state (never read by the protocol, only by the checks) records what each incarnation and
// each answer meant, so every step can be checked against L1, L2, F1, Q1 and "a stale id never
// reaches a new incarnation". `BUGS` are deliberately broken variants: the explorer must find a
// violation in each (test/model.test.ts), which proves the checks can fail.

// ---------------------------------------------------------------- words

export const IN_USE = 1
export const FINAL = 2
export const SERVER = 4
export const REQ_CLOSE = 8
export const REQ_ABORT = 16
export const REQ_UNLINK = 32
export const LINKED = 64
export const HIGH_WATER = 128
export const REQ = REQ_CLOSE | REQ_ABORT | REQ_UNLINK

const ST_FREE = 0, ST_CONNECTING = 1, ST_EST = 2, ST_WAITING = 4

// ---------------------------------------------------------------- configuration

export const BUGS = [
  /** the owner's runnable check ignores the REQ_* bits (looks at LINKED and FINAL only) */
  'ignore-req-bits',
  /** deferred work reads/takes slot bits without a generation check, and the slot is freed
   *  while it is still queued (the reuse bug: A's queued work runs against B in A's slot) */
  'deferred-no-gen',
  /** the slot is freed while deferred work of its incarnation is still queued (deferred work
   *  itself generation-checked): the incarnation's pending request bits are lost with the slot */
  'release-with-backlog',
  /** the foreign CAS checks IN_USE but not the generation */
  'cas-no-gen',
  /** connectionDrop does not clear the link: a later request releases the data again */
  'double-release',
  /** requests are applied as soon as the owner wakes, before the ring records published
   *  before them were consumed */
  'no-barrier',
  /** a throwing hook finalizes the whole server connection (FINAL) instead of its incarnation */
  'throw-finalizes',
  /** failover's arm and the reconnect timer do not re-check FINAL / STOPPING */
  'arm-no-final-check',
  /** the supervisor decides what to re-create when the shard dies and resets the slots only
   *  when the replacement starts: a close in between answers 'ok' and is lost */
  'restart-window',
  /** generations wrap after 2 values (the 15-bit wrap, shrunk): a stale id aliases a new socket */
  'narrow-gen',
  /** HIGH_WATER of an ended incarnation survives into the next one */
  'hw-not-reset',
  /** ring records are matched to a socket by slot only, not by generation */
  'drain-no-gen',
  /** half-open protocol: a peer FIN on a socket whose hooks may not run is ignored (never closes) */
  'half-unlinked-stuck',
  /** the barrier applies every request bit set when it fires, also those recorded after its
   *  ring snapshot (what src/workers/shard.ts applySlotRequests does today) */
  'take-all-bits',
] as const
export type Bug = typeof BUGS[number]

export type OpKind = 'send' | 'close' | 'abort' | 'unlink'
export type HookAction = 'close' | 'unlink' | 'throw'

export interface Scenario {
  name: string
  /** slots in the table */
  slots: number
  /** client sockets the peers may open over the whole run (accept budget) */
  clients: number
  /** persistent server connections created at the start */
  servers: number
  /** foreign producers (main thread, another shard) */
  producers: number
  /** operations per producer (one number for all, or one per producer) */
  ops: number | number[]
  opKinds: OpKind[]
  /** records each producer's ring holds */
  ringCap: number
  /** data chunks a peer may send per incarnation */
  chunks: number
  /** what a recv hook may do besides returning */
  hookActions: HookAction[]
  /** hook actions other than a plain return, over the whole run */
  actions: number
  /** peer FIN/RST of open server incarnations (each causes a failover) */
  drops: number
  /** failed connects of server incarnations (each causes a retry) */
  connectFails: number
  /** socket timer firings, over the whole run */
  timers: number
  /** high-water on/off transitions of the send queue, over the whole run */
  highWater: number
  /** the owner's acquire may give up against a (preempted) foreign holder and defer the work */
  deferred: boolean
  /** engine.stop() may be called */
  stop: boolean
  /** the shard may die (inside a hook too) and be restarted */
  death: boolean
  /** the protocol defines connectionEnd (half-close): peer FIN → connectionEnd → local close */
  halfOpen: boolean
  bug?: Bug
}

export const BASE: Scenario = {
  name: 'base', slots: 1, clients: 1, servers: 0, producers: 1, ops: 2, opKinds: ['send', 'close', 'unlink'],
  ringCap: 1, chunks: 1, hookActions: [], actions: 0, drops: 0, connectFails: 0, timers: 0, highWater: 0,
  deferred: false, stop: false, death: false, halfOpen: false,
}

export const scenario = (name: string, o: Partial<Scenario>): Scenario => ({ ...BASE, ...o, name })

// ---------------------------------------------------------------- state

/** Socket I/O: open, connecting, closing (our FIN out, waiting for the peer's), closed, gone (slot freed). */
type Io = 'o' | 'c' | 'g' | 'x' | '-'

/** One socket incarnation: owner-private state plus ghost fields. */
export interface Sock {
  inc: number
  slot: number
  gen: number
  /** server connection index, -1 for a client socket */
  conn: number
  io: Io
  linked: boolean
  ended: boolean
  final: boolean
  hw: boolean
  /** pending I/O events: n new, d data, t timer, f FIN, r RST, e established, x connect failed;
   *  A..H a request apply (its REQ bits) */
  ev: string
  /** work deferred because the lock was busy (same letters), in order */
  bl: string
  chunks: number
  /** the peer ended its side */
  peer: boolean
  // ghost
  /** data was linked at some point */
  ever: boolean
  /** times the linked data was handed back */
  rel: number
  relBy: string
  /** a foreign close/unlink for this incarnation was answered 'ok': no hook may start after */
  okReq: boolean
  /** a foreign close was answered 'ok' while the incarnation had not ended: it must end FINAL */
  okClose: boolean
  /** died with its shard (no release possible: the data lived in the dead thread) */
  dead: boolean
}

/** A persistent server connection (owner-private) — one slot for its whole life. */
export interface Conn {
  slot: number
  gen: number
  /** connecting, open, waiting (reconnect armed), idle (arm refused), final, gone, dead shard */
  st: 'c' | 'o' | 'w' | 'i' | 'f' | 'g' | 'D'
  cur: number
  // ghost
  intentional: boolean
  okClose: boolean
}

export interface SlotW { gen: number; flags: number; state: number; lock: number; lockEpoch: number; sum: boolean }

interface Op { k: OpKind; t: number; stage: number; locked: boolean; res: string; req: number }

export interface Known { slot: number; gen: number; inc: number; conn: number }

/** A foreign send (ghost): where it was meant to go and what became of it. */
interface Send { p: number; n: number; slot: number; gen: number; inc: number; conn: number; st: 0 | 1 | 2 }

/** A foreign request that passed the CAS (ghost). */
interface Req {
  p: number; k: OpKind; slot: number; gen: number; inc: number; conn: number; sendsBefore: number
  /** the incarnation the request reached at the CAS (-1 none), and whether it had linked data then */
  si: number; had: boolean
  answered: boolean; applied: boolean
}

export interface State {
  phase: 'run' | 'dead' | 'gone'
  epoch: number
  stopping: boolean
  slots: SlotW[]
  freeQ: number[]
  socks: Sock[]
  conns: Conn[]
  hook: null | { s: number; h: string }
  reqPending: boolean
  /** requests seen at a wake, applied once every ring is consumed up to `tails` (Q1) */
  barriers: { tails: number[]; seen: { slot: number; gen: number; bits: number }[] }[]
  rings: { q: number[]; pub: number; con: number }[]
  prods: { left: number; op: Op | null; sent: number }[]
  known: Known[]
  sends: Send[]
  reqs: Req[]
  /** supervisor: next slot to seal, and the server connections (old conn index) to re-create */
  seal: number
  want: number[]
  budget: { clients: number; actions: number; drops: number; fails: number; timers: number; hw: number; deaths: number; stops: number }
  nextInc: number
}

// ---------------------------------------------------------------- violations

export type Rule = 'L1' | 'L2' | 'F1' | 'F2' | 'Q1' | 'STALE' | 'LOST' | 'HW' | 'LIVE'

export class ModelViolation extends Error {
  readonly rule: Rule
  constructor(rule: Rule, message: string) {
    super(`${rule}: ${message}`)
    this.rule = rule
  }
}

const fail = (rule: Rule, msg: string): never => { throw new ModelViolation(rule, msg) }

// ---------------------------------------------------------------- initial state

export function initial(sc: Scenario): State {
  const st: State = {
    phase: 'run', epoch: 1, stopping: false,
    slots: Array.from({ length: sc.slots }, () => ({ gen: 1, flags: 0, state: ST_FREE, lock: 0, lockEpoch: 0, sum: false })),
    freeQ: Array.from({ length: sc.slots }, (_, i) => i),
    socks: [], conns: [], hook: null, reqPending: false, barriers: [],
    rings: Array.from({ length: sc.producers }, () => ({ q: [], pub: 0, con: 0 })),
    prods: Array.from({ length: sc.producers }, (_, i) => ({ left: Array.isArray(sc.ops) ? sc.ops[i] ?? 0 : sc.ops, op: null, sent: 0 })),
    known: [], sends: [], reqs: [], seal: 0, want: [],
    budget: {
      clients: sc.clients, actions: sc.actions, drops: sc.drops, fails: sc.connectFails, timers: sc.timers,
      hw: sc.highWater, deaths: sc.death ? 1 : 0, stops: sc.stop ? 1 : 0,
    },
    nextInc: 1,
  }
  const m = new Machine(st, sc)
  for (let i = 0; i < sc.servers; i++) m.createConn()
  return st
}

// ---------------------------------------------------------------- the machine

/** Steps over one (mutable) state. Every public step is atomic; checks throw ModelViolation. */
export class Machine {
  readonly st: State
  readonly sc: Scenario
  private readonly bug: Bug | undefined
  /** set while running an item from a backlog (the deferred context) */
  private deferredCtx = false

  constructor(st: State, sc: Scenario) {
    this.st = st
    this.sc = sc
    this.bug = sc.bug
  }

  // ---------------- helpers

  private nextGen(g: number): number { return this.bug === 'narrow-gen' ? (g % 2) + 1 : g + 1 }

  private alloc(flags: number, state: number): number {
    const slot = this.st.freeQ.shift()!
    const w = this.st.slots[slot]
    w.flags = flags | IN_USE
    w.state = state
    w.sum = false
    return slot
  }

  private freeSlot(slot: number): void {
    const w = this.st.slots[slot]
    w.gen = this.nextGen(w.gen)
    w.flags = 0
    w.state = ST_FREE
    w.sum = false
    this.st.freeQ.push(slot)
  }

  private newSock(slot: number, conn: number, io: Io, ev: string): number {
    const w = this.st.slots[slot]
    this.st.socks.push({
      inc: this.st.nextInc++, slot, gen: w.gen, conn, io, linked: false, ended: false, final: false, hw: false,
      ev, bl: '', chunks: 0, peer: false, ever: false, rel: 0, relBy: '', okReq: false, okClose: false, dead: false,
    })
    return this.st.socks.length - 1
  }

  /** An id becomes known to the producers (connectionNew posts it; engine.connect returns it). */
  private publish(k: Known): void { this.st.known = [...this.st.known, k] }

  createConn(): number {
    const slot = this.alloc(SERVER, ST_CONNECTING)
    const w = this.st.slots[slot]
    const c = this.st.conns.length
    this.st.conns.push({ slot, gen: w.gen, st: 'c', cur: -1, intentional: false, okClose: false })
    this.publish({ slot, gen: w.gen, inc: -1, conn: c })
    this.st.conns[c].cur = this.newSock(slot, c, 'c', '')
    return c
  }

  /**
   * Is the slot word this incarnation's? The generation check every owner read makes — and, for a
   * server connection (one generation for all its incarnations), "this incarnation is current".
   */
  private mine(s: Sock): boolean {
    if (this.deferredCtx && this.bug === 'deferred-no-gen') return true
    const w = this.st.slots[s.slot]
    if (w.gen !== s.gen || (w.flags & IN_USE) === 0) return false
    return s.conn < 0 || this.st.socks[this.st.conns[s.conn].cur] === s
  }

  private flagsFor(s: Sock): number { return this.mine(s) ? this.st.slots[s.slot].flags : 0 }

  private current(si: number): boolean {
    const s = this.st.socks[si]
    return s.conn < 0 || this.st.conns[s.conn].cur === si
  }

  /** L1: may a hook of this incarnation run? (caller holds the lock) */
  private runnable(si: number): boolean {
    const s = this.st.socks[si]
    const block = this.bug === 'ignore-req-bits' ? FINAL : FINAL | REQ
    return s.linked && !s.final && !s.ended && (this.flagsFor(s) & block) === 0 && this.current(si)
  }

  /** The owner takes a slot's lock: free, or held by a dead owner epoch (broken, R1). */
  private acquire(slot: number): boolean {
    const w = this.st.slots[slot]
    if (w.lock === 0 || (w.lock === 1 && w.lockEpoch !== this.st.epoch)) {
      w.lock = 1
      w.lockEpoch = this.st.epoch
      return true
    }
    return false
  }

  private unlock(slot: number): void { this.st.slots[slot].lock = 0 }

  // ---------------- ghost checks

  /** Start a hook that needs the incarnation linked and unrequested (recv, timer, end). */
  private startHook(si: number, h: string): void {
    const s = this.st.socks[si]
    const w = this.st.slots[s.slot]
    const wordMine = w.gen === s.gen && (w.flags & IN_USE) !== 0
    if (s.rel > 0) fail('L2', `${h} hook of incarnation ${s.inc} after its data was released (${s.relBy})`)
    if (!s.linked) fail('L1', `${h} hook of incarnation ${s.inc} while unlinked`)
    if (s.final || s.ended) fail('L1', `${h} hook of incarnation ${s.inc} after it ended`)
    if (s.okReq) fail('L1', `${h} hook of incarnation ${s.inc} started after a foreign close/unlink answered 'ok'`)
    if (wordMine && (w.flags & (FINAL | REQ))) fail('L1', `${h} hook of incarnation ${s.inc} while its slot has FINAL/REQ bits ${w.flags}`)
    if (!this.current(si)) fail('STALE', `${h} hook of incarnation ${s.inc} while a later incarnation is current`)
    this.st.hook = { s: si, h }
  }

  /** failover/retry: belong to the connection; never after FINAL or stop (F1). */
  private startConnHook(si: number, h: 'failover' | 'retry'): void {
    const s = this.st.socks[si]
    const c = this.st.conns[s.conn]
    const w = this.st.slots[c.slot]
    if (this.st.stopping) fail('F1', `${h} of connection ${s.conn} after stop began`)
    if (w.gen === c.gen && (w.flags & FINAL)) fail('F1', `${h} of connection ${s.conn} while FINAL`)
    if (c.okClose) fail('F1', `${h} of connection ${s.conn} after a close answered 'ok'`)
    this.st.hook = { s: si, h }
  }

  private release(si: number, by: string): void {
    const s = this.st.socks[si]
    s.rel++
    s.relBy = s.relBy ? `${s.relBy}+${by}` : by
    if (s.rel > 1) fail('L2', `data of incarnation ${s.inc} released twice (${s.relBy})`)
    if (s.okClose && by === 'drop') fail('LOST', `incarnation ${s.inc}: a foreign close answered 'ok' earlier, yet its data went back by connectionDrop`)
  }

  private dropLink(si: number): void {
    const s = this.st.socks[si]
    if (!s.linked) return
    s.linked = false
    if (this.mine(s)) this.st.slots[s.slot].flags &= ~LINKED
  }

  /** The request ghost for bits applied to an incarnation: someone must have asked for exactly it. */
  private checkRequestTarget(si: number, kind: 'close' | 'unlink'): void {
    const s = this.st.socks[si]
    const ok = this.st.reqs.some((r) => (kind === 'unlink' ? r.k === 'unlink' : r.k !== 'unlink' && r.k !== 'send') &&
      (s.conn >= 0 ? r.conn === s.conn : r.inc === s.inc))
    if (!ok) fail('STALE', `a foreign ${kind} reached incarnation ${s.inc} (slot ${s.slot}) though no request was made for it: a stale id's request hit a later incarnation`)
  }

  // ---------------- endings

  /** We end it (F1): FINAL first, then connectionClose, then the I/O. Under the lock. */
  private finalize(si: number, cause: string, mode: 'graceful' | 'abort'): void {
    const s = this.st.socks[si]
    if (!s.final) {
      s.final = true
      if (this.mine(s)) this.st.slots[s.slot].flags |= FINAL
      if (s.conn >= 0) this.finalizeConn(s.conn, cause)
      if (!s.ended) {
        s.ended = true
        if (s.linked) { this.release(si, `close:${cause}`); this.dropLink(si) }
      }
    }
    this.endIo(si, mode)
  }

  private finalizeConn(c: number, cause: string): void {
    const conn = this.st.conns[c]
    if (cause === 'hook-error') fail('F2', `a hook error made connection ${c} FINAL: it must end only the incarnation and fail over`)
    conn.intentional = true
    const w = this.st.slots[conn.slot]
    if (w.gen === conn.gen) w.flags |= FINAL
    if (conn.st !== 'g' && conn.st !== 'D') conn.st = 'f'
  }

  private endIo(si: number, mode: 'graceful' | 'abort'): void {
    const s = this.st.socks[si]
    if (s.io === 'o') s.io = mode === 'abort' || s.peer ? 'x' : 'g'
    else if (s.io === 'c') s.io = 'x'
  }

  /** The incarnation ends without FINAL for its connection: a throwing hook of a server connection. */
  private endIncarnation(si: number): void {
    const s = this.st.socks[si]
    s.final = true // incarnation-local: no further hook of it
    if (!s.ended) {
      s.ended = true
      if (s.linked) { this.release(si, 'close:hook-error'); this.dropLink(si) }
    }
    this.endIo(si, 'abort')
  }

  /** Apply foreign request bits to an incarnation (under its lock). */
  private applyRequests(si: number, bits: number, viaBarrier: boolean): void {
    const s = this.st.socks[si]
    if (bits & REQ_UNLINK) {
      this.checkRequestTarget(si, 'unlink')
      if (s.linked) { this.release(si, 'close:unlink'); this.dropLink(si) }
      this.markApplied(si, 'unlink')
    }
    if (bits & (REQ_CLOSE | REQ_ABORT)) {
      this.checkRequestTarget(si, 'close')
      if (viaBarrier && s.io === 'o') this.checkQ1(si)
      this.markApplied(si, 'close')
      if (s.conn >= 0) this.finalizeConn(s.conn, 'foreign') // a close is for the connection, whatever its incarnation
      this.finalize(si, 'foreign', bits & REQ_ABORT ? 'abort' : 'graceful')
    }
  }

  private markApplied(si: number, kind: 'close' | 'unlink'): void {
    const s = this.st.socks[si]
    for (const r of this.st.reqs) {
      if ((kind === 'unlink') !== (r.k === 'unlink')) continue
      if (s.conn >= 0 ? r.conn === s.conn : r.inc === s.inc) r.applied = true
    }
  }

  /** Q1: every send a producer had accepted before its close is written before the close acts. */
  private checkQ1(si: number): void {
    const s = this.st.socks[si]
    for (const r of this.st.reqs) {
      if (r.k !== 'close' && r.k !== 'abort') continue
      if (r.applied || !(s.conn >= 0 ? r.conn === s.conn : r.inc === s.inc)) continue
      for (const x of this.st.sends) {
        if (x.p === r.p && x.n < r.sendsBefore && x.st === 0 && (s.conn >= 0 ? x.conn === s.conn : x.inc === s.inc)) {
          fail('Q1', `producer ${r.p}'s close of incarnation ${s.inc} took effect before its earlier send #${x.n} was written`)
        }
      }
    }
  }

  /** A connection with no incarnation up is closed: final, no hooks, slot freed. */
  private closeIdle(c: number): void {
    const conn = this.st.conns[c]
    this.finalizeConn(c, 'foreign')
    for (const r of this.st.reqs) if (r.conn === c && r.k !== 'send') r.applied = true
    if (conn.cur < 0) this.finishConn(c)
  }

  private finishConn(c: number): void {
    const conn = this.st.conns[c]
    if (conn.st !== 'f') return
    conn.st = 'g'
    this.freeSlot(conn.slot)
  }

  /** Failover (drop) or retry (failed connect) decided: arm a reconnect unless FINAL/stopping (F1). */
  private arm(c: number): void {
    const conn = this.st.conns[c]
    const w = this.st.slots[conn.slot]
    if (this.bug !== 'arm-no-final-check' && (this.st.stopping || (w.flags & FINAL))) {
      if (conn.st !== 'f' && conn.st !== 'g') conn.st = 'i'
      return
    }
    if (conn.st === 'f' || conn.st === 'g') return
    conn.st = 'w'
    w.state = ST_WAITING
  }

  /** Drop path (peer FIN/RST): pending requests first, then connectionDrop, then failover. */
  private dropped(si: number): void {
    const s = this.st.socks[si]
    const w = this.st.slots[s.slot]
    if (this.mine(s)) {
      const bits = w.flags & REQ
      w.flags &= ~REQ
      if (bits) this.applyRequests(si, bits, false)
    }
    if (s.io === 'g') { s.io = 'x'; return } // our FIN was out: the peer's completes the close
    const already = this.bug === 'double-release' ? s.final : s.ended || s.final
    if (!already) {
      s.ended = true
      if (s.linked) {
        this.release(si, 'drop')
        if (this.bug !== 'double-release') this.dropLink(si)
      }
      s.io = 'x'
      if (s.conn >= 0) {
        const c = this.st.conns[s.conn]
        const cw = this.st.slots[c.slot]
        if (!this.st.stopping && !(cw.flags & FINAL)) { this.startConnHook(si, 'failover'); return }
        if (c.st !== 'f' && c.st !== 'g') c.st = 'i'
      }
    }
    s.io = 'x'
  }

  // ---------------- event handlers (owner holds the slot's lock)

  /** Handle one event of incarnation si. May start a hook (then the lock stays held). */
  private handle(si: number, e: string): void {
    const s = this.st.socks[si]
    const w = this.st.slots[s.slot]
    switch (e) {
      case 'n': { // connectionNew of a client socket: link, publish the id
        if (s.final || s.ended) return
        s.linked = true
        s.ever = true
        if (this.mine(s)) w.flags |= LINKED
        this.publish({ slot: s.slot, gen: s.gen, inc: s.inc, conn: -1 })
        return
      }
      case 'd': case 't': {
        if (this.runnable(si)) this.startHook(si, e === 'd' ? 'recv' : 'timer')
        return
      }
      case 'f': case 'r': {
        if (this.sc.halfOpen && e === 'f' && s.io === 'o' && !s.ended && !s.final) {
          if (this.runnable(si)) { this.startHook(si, 'end'); return }
          if (this.bug === 'half-unlinked-stuck') return
        }
        this.dropped(si)
        return
      }
      case 'e': { // a server incarnation's connect completed
        const c = this.st.conns[s.conn]
        if (s.io !== 'c') return
        if (this.st.stopping) { s.final = true; s.ended = true; s.io = 'x'; this.finalizeConn(s.conn, 'shutdown'); return }
        if (w.flags & FINAL) { // closed while it was connecting: final, no hooks
          const bits = w.flags & REQ
          w.flags &= ~REQ
          if (bits) this.markApplied(si, 'close')
          s.final = true; s.ended = true; s.io = 'x'
          if (c.st !== 'g') c.st = 'f'
          return
        }
        c.st = 'o'
        w.state = ST_EST
        if (this.bug !== 'hw-not-reset') w.flags &= ~HIGH_WATER
        s.io = 'o'
        s.linked = true // connectionNew links the incarnation's data
        s.ever = true
        w.flags |= LINKED
        return
      }
      case 'x': { // the connect failed: retry (F2) unless a close made it final
        s.io = 'x'
        s.ended = true
        const c = this.st.conns[s.conn]
        const bits = w.flags & REQ
        w.flags &= ~REQ
        if (bits & (REQ_CLOSE | REQ_ABORT)) { this.markApplied(si, 'close'); s.final = true; this.finalizeConn(s.conn, 'foreign') }
        if (!this.st.stopping && !(w.flags & FINAL) && !s.final) { this.startConnHook(si, 'retry'); return }
        if (c.st !== 'f' && c.st !== 'g') c.st = 'i'
        return
      }
      default: { // a request apply (A..H: the bits seen at the wake), now or deferred behind the lock
        const want = (e.charCodeAt(0) - 65) << 3
        const bits = this.flagsFor(s) & want
        if (this.mine(s)) w.flags &= ~bits
        if (bits) this.applyRequests(si, bits, true)
        return
      }
    }
  }

  /** After a handler: release the lock unless a hook is now running. */
  private afterHandle(slot: number): void { if (this.st.hook === null) this.unlock(slot) }

  // ---------------- the moves

  moves(): string[] {
    const st = this.st
    const sc = this.sc
    const out: string[] = []
    const owner = st.phase === 'run'
    if (owner && st.hook) {
      const h = st.hook.h
      out.push('hook:ret')
      if (h === 'recv' && st.budget.actions > 0) for (const a of sc.hookActions) out.push(`hook:${a}`)
      if (h === 'timer' && st.budget.actions > 0 && sc.hookActions.includes('throw')) out.push('hook:throw')
    }
    const idle = owner && !st.hook
    if (idle) {
      if (st.budget.clients > 0 && !st.stopping && st.freeQ.length > 0) out.push('accept')
      if (st.reqPending) out.push('wake')
      for (let p = 0; p < st.rings.length; p++) if (st.rings[p].q.length > 0) out.push(`drain:${p}`)
      const b = st.barriers[0]
      if (b && b.tails.every((t, p) => st.rings[p].con >= t)) out.push('barrier')
    }
    st.socks.forEach((s, i) => {
      if (s.dead) return
      if (s.io === '-') { if (idle && s.bl.length > 0) out.push(`bl:${i}`); return } // broken variants only
      if (idle) {
        if (s.ev.length > 0) out.push(`io:${i}`)
        if (s.bl.length > 0) out.push(`bl:${i}`)
        if (s.io === 'x' && s.ev.length === 0 &&
          (s.bl.length === 0 || this.bug === 'deferred-no-gen' || this.bug === 'release-with-backlog')) out.push(`free:${i}`)
        if (st.budget.hw > 0 && s.io === 'o' && !s.final && !s.ended && s.linked) out.push(`hw:${i}`)
        if (st.stopping && (s.io === 'o' || s.io === 'c') && !s.final && s.conn < 0) out.push(`stopsock:${i}`)
      }
      // environment
      if (s.io === 'o' || s.io === 'g') {
        if (!s.peer && s.chunks < sc.chunks) out.push(`data:${i}`)
        if (!s.peer && (s.io === 'g' || s.conn < 0 || st.budget.drops > 0)) {
          out.push(`fin:${i}`)
          if (sc.halfOpen) out.push(`rst:${i}`)
        }
        if (st.budget.timers > 0 && s.ever && s.io === 'o') out.push(`timer:${i}`)
      }
      if (s.io === 'c' && !s.ev.includes('e') && !s.ev.includes('x') && !s.bl.includes('e') && !s.bl.includes('x')) {
        out.push(`est:${i}`)
        if (st.budget.fails > 0) out.push(`cfail:${i}`)
      }
    })
    if (idle) {
      st.conns.forEach((c, i) => {
        if (c.st === 'w') out.push(`recon:${i}`)
        if (st.stopping && c.st !== 'f' && c.st !== 'g' && c.st !== 'D') out.push(`stopconn:${i}`)
      })
    }
    // producers
    st.prods.forEach((p, i) => {
      if (p.op) out.push(`p${i}`)
      else if (p.left > 0) {
        for (const k of sc.opKinds) for (let t = 0; t < st.known.length; t++) out.push(`p${i}:${k}:${t}`)
      }
    })
    // stop, death, supervisor
    if (st.budget.stops > 0) out.push('stop')
    if (st.budget.deaths > 0 && st.phase === 'run') out.push('die')
    if (st.phase === 'dead') {
      if (this.bug === 'restart-window') { if (!st.stopping) out.push('restart') }
      else if (st.seal < st.slots.length) out.push('seal')
      else if (!st.stopping) out.push('restart')
    }
    return out
  }

  step(mv: string): void {
    const st = this.st
    const [a, b, c] = mv.split(':')
    const i = b === undefined ? -1 : Number(b)
    if (/^p\d+$/.test(a)) { this.producer(Number(a.slice(1)), b as OpKind | undefined, c === undefined ? -1 : Number(c)); return }
    switch (a) {
      case 'hook': return this.hookEnd(b)
      case 'accept': {
        st.budget.clients--
        const slot = this.alloc(0, ST_EST)
        this.newSock(slot, -1, 'o', 'n')
        return
      }
      case 'wake': {
        // Take the summary, read the request bits of those slots, THEN snapshot the ring tails:
        // a producer's sends published before its CAS are then inside the snapshot.
        st.reqPending = false
        const seen: { slot: number; gen: number; bits: number }[] = []
        st.slots.forEach((w, k) => { if (w.sum) { w.sum = false; seen.push({ slot: k, gen: w.gen, bits: w.flags & REQ }) } })
        if (seen.length === 0) return
        const tails = st.rings.map((r) => this.bug === 'no-barrier' ? r.con : r.pub)
        st.barriers.push({ tails, seen })
        return
      }
      case 'barrier': return this.barrier()
      case 'drain': return this.drain(i)
      case 'io': return this.io(i)
      case 'bl': return this.backlog(i)
      case 'free': return this.free(i)
      case 'hw': {
        st.budget.hw--
        const s = st.socks[i]
        s.hw = !s.hw // the send queue crossed its high (or low) water mark
        if (this.mine(s)) { if (s.hw) st.slots[s.slot].flags |= HIGH_WATER; else st.slots[s.slot].flags &= ~HIGH_WATER }
        return
      }
      case 'stopsock': {
        const s = st.socks[i]
        if (!this.acquire(s.slot)) return this.blocked()
        this.finalize(i, 'shutdown', 'graceful')
        this.unlock(s.slot)
        return
      }
      case 'stopconn': {
        const conn = st.conns[i]
        if (!this.acquire(conn.slot)) return this.blocked()
        const cur = conn.cur >= 0 ? st.socks[conn.cur] : null
        if (cur && (cur.io === 'o' || cur.io === 'c')) this.finalize(conn.cur, 'shutdown', 'graceful')
        else { this.finalizeConn(i, 'shutdown'); if (conn.cur < 0) this.finishConn(i) }
        this.unlock(conn.slot)
        return
      }
      case 'data': { const s = st.socks[i]; s.chunks++; s.ev += 'd'; return }
      case 'fin': case 'rst': {
        const s = st.socks[i]
        s.peer = true
        if (s.conn >= 0 && s.io === 'o') st.budget.drops--
        s.ev += a === 'fin' ? 'f' : 'r'
        return
      }
      case 'timer': { st.budget.timers--; st.socks[i].ev += 't'; return }
      case 'est': { st.socks[i].ev += 'e'; return }
      case 'cfail': { st.budget.fails--; st.socks[i].ev += 'x'; return }
      case 'recon': return this.reconnect(i)
      case 'stop': { st.budget.stops--; st.stopping = true; return }
      case 'die': return this.die()
      case 'seal': return this.sealNext()
      case 'restart': return this.restart()
    }
    throw new Error(`unknown move ${mv}`)
  }

  /** The owner could not take a lock held by a foreign thread and must wait: not a step. */
  private blocked(): never { throw BLOCKED }

  private hookEnd(action: string): void {
    const st = this.st
    const { s: si, h } = st.hook!
    const s = st.socks[si]
    st.hook = null
    if (action !== 'ret') st.budget.actions--
    if (h === 'failover' || h === 'retry') {
      this.arm(s.conn)
    } else if (h === 'end') {
      // the half-close protocol answers the peer's FIN by closing its side (fixtures' 'half')
      this.finalize(si, 'local', 'graceful')
    } else if (action === 'close') {
      this.finalize(si, 'local', 'graceful')
    } else if (action === 'unlink') {
      if (s.linked) { this.release(si, 'local-unlink'); this.dropLink(si) }
    } else if (action === 'throw') {
      if (s.conn < 0) this.finalize(si, 'hook-error', 'abort')
      else if (this.bug === 'throw-finalizes') this.finalize(si, 'hook-error', 'abort')
      else {
        this.endIncarnation(si)
        const c = st.conns[s.conn]
        const w = st.slots[c.slot]
        if (!st.stopping && !(w.flags & FINAL)) this.startConnHook(si, 'failover')
        else if (c.st !== 'f' && c.st !== 'g') c.st = 'i'
      }
    }
    if (st.hook === null) this.unlock(s.slot)
  }

  private io(si: number): void {
    const s = this.st.socks[si]
    const e = s.ev[0]
    if (s.bl.length > 0 || !this.acquire(s.slot)) {
      // keep the order behind deferred work; or the lock is held by a (preempted) foreign thread
      if (s.bl.length === 0 && !this.sc.deferred) return this.blocked()
      s.ev = s.ev.slice(1)
      s.bl += e
      // without half-close a FIN/RST destroys the net socket at once (onEnd), whatever the
      // hooks still wait for: the incarnation's I/O is over, its release is still to come
      if ((e === 'f' || e === 'r') && !this.sc.halfOpen && s.io === 'o') s.io = 'x'
      return
    }
    s.ev = s.ev.slice(1)
    this.handle(si, e)
    this.afterHandle(s.slot)
  }

  private backlog(si: number): void {
    const s = this.st.socks[si]
    if (!this.acquire(s.slot)) return this.blocked()
    const e = s.bl[0]
    s.bl = s.bl.slice(1)
    this.deferredCtx = true
    try {
      // Deferred work is tagged with its incarnation: it runs against that incarnation only, and
      // (its checks being generation-checked) is discarded if the incarnation has ended.
      this.handle(si, e)
    } finally { this.deferredCtx = false }
    this.afterHandle(s.slot)
  }

  private free(si: number): void {
    const st = this.st
    const s = st.socks[si]
    // (exactly-once release and "an 'ok' close ends it FINAL" are checked when the run is
    // quiescent: a broken variant may still release later, from its backlog)
    s.io = '-'
    if (s.conn < 0) { if (st.slots[s.slot].gen === s.gen) this.freeSlot(s.slot); return }
    const c = st.conns[s.conn]
    if (c.cur === si) c.cur = -1
    if (c.st === 'f' && c.cur < 0) this.finishConn(s.conn)
    else if (c.st === 'o' || c.st === 'c') c.st = 'i'
  }

  /** Which incarnation (or idle connection) occupies a slot now. */
  private occupant(slot: number): { si: number; c: number } {
    const st = this.st
    const c = st.conns.findIndex((x) => x.slot === slot && x.st !== 'g' && x.st !== 'D')
    if (c >= 0) {
      const cur = st.conns[c].cur
      return { si: cur >= 0 && st.socks[cur].io !== '-' ? cur : -1, c }
    }
    const w = st.slots[slot]
    const si = st.socks.findIndex((s) => s.slot === slot && s.conn < 0 && s.io !== '-' && !s.dead && s.gen === w.gen)
    return { si, c: -1 }
  }

  /**
   * The head barrier's ring snapshot is consumed: apply the first slot's requests. Only the bits
   * seen at the wake (and only for the generation seen then) — a request recorded after the
   * snapshot belongs to a later barrier, or a send its producer published after the snapshot
   * would be overtaken (Q1). ('take-all-bits' takes whatever is set now.)
   */
  private barrier(): void {
    const st = this.st
    const b = st.barriers[0]
    const seen = b.seen.shift()!
    if (b.seen.length === 0) st.barriers.shift()
    const slot = seen.slot
    const w = st.slots[slot]
    if (w.gen !== seen.gen) return // the incarnation it was for is gone with its slot
    const bits = this.bug === 'take-all-bits' ? REQ : seen.bits
    if (!bits) return
    const { si, c } = this.occupant(slot)
    if (si >= 0) {
      const s = st.socks[si]
      const item = reqItem(bits)
      if (s.bl.length > 0) { s.bl += item; return } // behind the incarnation's deferred work
      if (!this.acquire(slot)) {
        if (!this.sc.deferred) return this.blocked()
        s.bl += item
        return
      }
      this.handle(si, item)
      this.afterHandle(slot)
    } else if (c >= 0) {
      if (!this.acquire(slot)) return this.blocked()
      const took = w.flags & bits
      w.flags &= ~took
      if (took & (REQ_CLOSE | REQ_ABORT)) this.closeIdle(c)
      this.unlock(slot)
    }
  }

  private drain(p: number): void {
    const st = this.st
    const r = st.rings[p]
    const x = st.sends[r.q.shift()!]
    r.con++
    const w = st.slots[x.slot]
    const genOk = this.bug === 'drain-no-gen' || w.gen === x.gen
    let target = -1
    const c = st.conns.findIndex((k) => k.slot === x.slot && k.st !== 'g' && k.st !== 'D')
    if (c >= 0) {
      const conn = st.conns[c]
      if ((genOk || conn.gen === x.gen) && conn.cur >= 0) target = conn.cur
    } else {
      target = st.socks.findIndex((s) => s.slot === x.slot && s.conn < 0 && s.io !== '-' && !s.dead && (genOk ? s.gen === w.gen : s.gen === x.gen))
    }
    const s = target >= 0 ? st.socks[target] : null
    if (!s || s.io !== 'o' || s.final) { x.st = 2; return } // accepted, then reported failed (S2)
    if (s.conn >= 0 ? s.conn !== x.conn : s.inc !== x.inc) {
      fail('STALE', `producer ${x.p}'s send #${x.n} for incarnation ${x.inc >= 0 ? x.inc : `of connection ${x.conn}`} was written to incarnation ${s.inc}`)
    }
    x.st = 1
  }

  private reconnect(c: number): void {
    const st = this.st
    const conn = st.conns[c]
    if (!this.acquire(conn.slot)) return this.blocked()
    const w = st.slots[conn.slot]
    if (this.bug !== 'arm-no-final-check' && (st.stopping || (w.flags & FINAL))) { conn.st = 'i'; this.unlock(conn.slot); return }
    if (st.stopping) fail('F1', `reconnect of connection ${c} after stop began`)
    if (w.flags & FINAL || conn.okClose) fail('F1', `reconnect of connection ${c} after FINAL`)
    conn.st = 'c'
    w.state = ST_CONNECTING
    conn.cur = this.newSock(conn.slot, c, 'c', '')
    this.unlock(conn.slot)
  }

  // ---------------- producers

  private producer(p: number, k: OpKind | undefined, t: number): void {
    const st = this.st
    const pr = st.prods[p]
    if (!pr.op) {
      pr.left--
      pr.op = { k: k!, t, stage: 0, locked: false, res: '', req: -1 }
      if (k === 'send') return this.sendCheck(p)
      return this.tryLock(p)
    }
    const op = pr.op
    if (op.k === 'send') return this.sendPublish(p)
    if (op.stage === 1) return this.cas(p)
    if (op.stage === 2) { this.unlock(st.known[op.t].slot); op.locked = false; op.stage = 3; return }
    return this.markAndAnswer(p)
  }

  private sendCheck(p: number): void {
    const st = this.st
    const op = st.prods[p].op!
    const id = st.known[op.t]
    const w = st.slots[id.slot]
    let res = 'ok'
    if (st.stopping) res = 'ERR_SS_STOPPED'
    else if (w.gen !== id.gen || !(w.flags & IN_USE)) res = 'ERR_SS_STALE'
    else if (w.flags & (FINAL | REQ_CLOSE | REQ_ABORT)) res = 'ERR_SS_CLOSED'
    else if (w.flags & HIGH_WATER) {
      res = 'ERR_SS_BACKPRESSURE'
      // HW: refused for high water only if the incarnation the id reaches now is above it
      const cur = id.conn >= 0 ? st.conns[id.conn].cur : st.socks.findIndex((s) => s.inc === id.inc)
      const s = cur >= 0 ? st.socks[cur] : null
      if (s && s.io === 'o' && !s.hw) fail('HW', `send to incarnation ${s.inc} refused for the high water of an earlier incarnation`)
    } else if ((w.flags & SERVER) && w.state !== ST_EST) res = 'ERR_SS_NOT_CONNECTED'
    if (res !== 'ok') { st.prods[p].op = null; return }
    op.stage = 1
  }

  private sendPublish(p: number): void {
    const st = this.st
    const pr = st.prods[p]
    const op = pr.op!
    pr.op = null
    const r = st.rings[p]
    if (r.q.length >= this.sc.ringCap) return // ERR_SS_RING_FULL: refused at the call, nothing lost
    const id = st.known[op.t]
    st.sends.push({ p, n: pr.sent++, slot: id.slot, gen: id.gen, inc: id.inc, conn: id.conn, st: 0 })
    r.q.push(st.sends.length - 1)
    r.pub++
  }

  private tryLock(p: number): void {
    const st = this.st
    const op = st.prods[p].op!
    const w = st.slots[st.known[op.t].slot]
    if (w.lock === 0 || (w.lock === 1 && w.lockEpoch !== st.epoch)) { w.lock = 2 + p; op.locked = true }
    op.stage = 1
  }

  private cas(p: number): void {
    const st = this.st
    const pr = st.prods[p]
    const op = pr.op!
    const id = st.known[op.t]
    const w = st.slots[id.slot]
    const bits = op.k === 'unlink' ? REQ_UNLINK : FINAL | (op.k === 'abort' ? REQ_ABORT : REQ_CLOSE)
    const genOk = this.bug === 'cas-no-gen' || w.gen === id.gen
    if (!genOk || !(w.flags & IN_USE)) op.res = 'ERR_SS_STALE'
    else {
      // close on a FINAL slot answers ERR_SS_CLOSED and writes nothing (the CAS is not issued)
      op.res = (bits & FINAL) && (w.flags & FINAL) ? 'ERR_SS_CLOSED' : 'ok'
      if (op.res === 'ok') w.flags |= bits
      if (op.res === 'ok') {
        const si = id.conn >= 0 ? st.conns[id.conn].cur : st.socks.findIndex((s) => s.inc === id.inc)
        const had = si >= 0 && st.socks[si].ever && !st.socks[si].dead
        st.reqs.push({ p, k: op.k, slot: id.slot, gen: id.gen, inc: id.inc, conn: id.conn, sendsBefore: pr.sent, si, had, answered: false, applied: false })
        op.req = st.reqs.length - 1
      }
    }
    op.stage = op.locked ? 2 : 3
  }

  private markAndAnswer(p: number): void {
    const st = this.st
    const op = st.prods[p].op!
    st.prods[p].op = null
    if (op.res !== 'ok') return
    const id = st.known[op.t]
    st.slots[id.slot].sum = true
    st.reqPending = true
    const r = st.reqs[op.req]
    r.answered = true
    // ghost: what the 'ok' promises from now on, about the incarnation whose data the request
    // found at its CAS (a request that found no data — a server connection between incarnations
    // or still connecting — concerns no data; a close still makes the connection final)
    if (r.had) {
      const s = st.socks[r.si]
      s.okReq = true
      if (op.k !== 'unlink' && !s.ended) s.okClose = true
    }
    if (id.conn >= 0 && op.k !== 'unlink') st.conns[id.conn].okClose = true
  }

  // ---------------- shard death (R1)

  private die(): void {
    const st = this.st
    st.budget.deaths--
    st.phase = 'dead'
    st.epoch++ // the supervisor bumps the epoch: the dead owner's locks become breakable
    st.hook = null
    st.barriers = []
    st.reqPending = false
    for (const s of st.socks) if (s.io !== '-') { s.dead = true; s.io = '-' }
    st.seal = 0
    st.want = []
    if (this.bug === 'restart-window') {
      // decided now, from words that a close can still change before the reset
      st.conns.forEach((c, i) => {
        const w = st.slots[c.slot]
        if (c.st !== 'g' && c.st !== 'D' && w.gen === c.gen && (w.flags & IN_USE) && !(w.flags & FINAL)) st.want.push(i)
      })
    }
    for (const c of st.conns) if (c.st !== 'g') c.st = 'D' // owner-private state died with the thread
  }

  /** Supervisor: one exchange per slot — read the old word, bump the generation (seal). */
  private sealNext(): void {
    const st = this.st
    const k = st.seal++
    const w = st.slots[k]
    const c = st.conns.findIndex((x) => x.slot === k && x.gen === w.gen && x.st === 'D')
    if (c >= 0 && (w.flags & IN_USE) && (w.flags & SERVER) && !(w.flags & FINAL)) st.want.push(c)
    w.gen = this.nextGen(w.gen)
    w.flags = 0
    w.state = ST_FREE
    w.sum = false
  }

  private restart(): void {
    const st = this.st
    if (this.bug === 'restart-window') {
      for (const w of st.slots) { w.gen = this.nextGen(w.gen); w.flags = 0; w.state = ST_FREE; w.sum = false }
    }
    st.phase = 'run'
    st.reqPending = false
    for (const w of st.slots) w.sum = false
    st.freeQ = st.slots.map((_, k) => k)
    const want = st.want
    st.want = []
    for (const old of want) {
      if (st.stopping) fail('F1', 'a connection re-created after stop began')
      if (st.conns[old].okClose) fail('LOST', `connection ${old} re-created after a restart though a close for it was answered 'ok'`)
      this.createConn()
    }
  }
}

/** A request apply as a one-letter work item (A..H = the REQ bits it applies). */
const reqItem = (bits: number) => String.fromCharCode(65 + ((bits & REQ) >> 3))

/** Thrown by a step that cannot happen now (the owner would wait for a foreign lock holder). */
export const BLOCKED: unique symbol = Symbol('blocked')

// ---------------------------------------------------------------- terminal (quiescent) checks

export function quiescent(st: State, sc: Scenario): void {
  for (const s of st.socks) {
    if (s.dead) continue
    if (s.okClose && !s.final) fail('LOST', `incarnation ${s.inc}: a foreign close answered 'ok' never took effect`)
    if (s.peer && s.io !== '-' && s.io !== 'x') fail('LIVE', `incarnation ${s.inc}: the peer ended it but it never closed (io ${s.io})`)
    if (s.io === '-' && s.ever && s.rel !== 1) fail('L2', `incarnation ${s.inc} released ${s.rel} times`)
  }
  st.conns.forEach((c, i) => {
    if (c.okClose && c.st !== 'f' && c.st !== 'g' && c.st !== 'D') fail('LOST', `connection ${i}: a close answered 'ok' but it is ${c.st}`)
    const w = st.slots[c.slot]
    if (c.st !== 'g' && c.st !== 'D' && w.gen === c.gen && (w.flags & FINAL) && !c.intentional && !c.okClose) {
      fail('F1', `connection ${i} is FINAL though nobody closed it intentionally (a hook error must end only its incarnation)`)
    }
  })
  if (st.stopping && st.phase === 'run') {
    for (const s of st.socks) if (!s.dead && (s.io === 'o' || s.io === 'c')) fail('LIVE', `incarnation ${s.inc} still open after stop`)
  }
  void sc
}

// ---------------------------------------------------------------- the explorer

const key = (st: State) => JSON.stringify(st)

/**
 * 53-bit hash of a state's key (two 32-bit multiplicative hashes), so the visited set holds
 * numbers instead of kilobyte strings. A collision could only prune a state (less coverage),
 * never report a false violation; at 10^7 states its probability is below 1%.
 */
export function hash53(s: string): number {
  let h1 = 0xdeadbeef, h2 = 0x41c6ce57
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return 2097152 * (h2 >>> 0) + (h1 >>> 11)
}

/** Deep copy (hand-written: the explorer copies a state per step). */
export function cloneState(st: State): State {
  return {
    phase: st.phase, epoch: st.epoch, stopping: st.stopping,
    slots: st.slots.map((w) => ({ ...w })),
    freeQ: st.freeQ.slice(),
    socks: st.socks.map((s) => ({ ...s })),
    conns: st.conns.map((c) => ({ ...c })),
    hook: st.hook && { ...st.hook },
    reqPending: st.reqPending,
    barriers: st.barriers.map((b) => ({ tails: b.tails.slice(), seen: b.seen.map((x) => ({ ...x })) })),
    rings: st.rings.map((r) => ({ q: r.q.slice(), pub: r.pub, con: r.con })),
    prods: st.prods.map((p) => ({ left: p.left, op: p.op && { ...p.op }, sent: p.sent })),
    known: st.known, // append-only, copied on write (Machine.publish)
    sends: st.sends.map((x) => ({ ...x })),
    reqs: st.reqs.map((r) => ({ ...r })),
    seal: st.seal, want: st.want.slice(),
    budget: { ...st.budget },
    nextInc: st.nextInc,
  }
}

export interface ExploreOptions {
  /** longest schedule explored, in steps (default: unbounded — the budgets bound every run) */
  maxDepth?: number
  /** give up after this many distinct states */
  maxStates?: number
  /** give up at this time (Date.now() value) */
  deadline?: number
}

export interface ExploreResult {
  scenario: string
  bug?: Bug
  /** distinct states visited */
  states: number
  /** steps taken (edges of the state graph explored) */
  transitions: number
  /** quiescent states (no step possible): the ends of complete schedules */
  terminals: number
  /** steps not followed because of maxDepth or maxStates (0 = the bounded space was explored completely) */
  cut: number
  maxDepth: number
  ms: number
  violation: null | { rule: Rule; message: string; trace: string[] }
}

/**
 * Depth-first search over every interleaving of the scenario's steps, with state hashing: a state
 * already explored (at the same or a smaller depth) is not explored again. Every step runs the
 * transition checks; every quiescent state runs `quiescent`. Stops at the first violation and
 * returns the schedule that led to it.
 */
export function explore(sc: Scenario, opts: ExploreOptions = {}): ExploreResult {
  const maxDepth = opts.maxDepth ?? Infinity
  const maxStates = opts.maxStates ?? 2_000_000
  const deadline = opts.deadline ?? Infinity
  let late = false
  const seen = new Map<number, number>() // hash of a state → smallest depth it was explored at
  const res: ExploreResult = { scenario: sc.name, bug: sc.bug, states: 0, transitions: 0, terminals: 0, cut: 0, maxDepth: 0, ms: 0, violation: null }
  const t0 = Date.now()
  const path: string[] = []

  const dfs = (st: State, depth: number): void => {
    const h = hash53(key(st))
    const prev = seen.get(h)
    if (prev !== undefined && prev <= depth) return
    seen.set(h, depth)
    res.states++
    if (depth > res.maxDepth) res.maxDepth = depth
    let any = false
    if ((res.states & 1023) === 0 && Date.now() > deadline) late = true
    for (const mv of new Machine(st, sc).moves()) {
      if (res.states >= maxStates || late) { res.cut++; return }
      const next = cloneState(st)
      try {
        new Machine(next, sc).step(mv)
      } catch (e) {
        if (e === BLOCKED) continue
        if (e instanceof ModelViolation) {
          res.violation = { rule: e.rule, message: e.message, trace: [...path, mv] }
          return
        }
        throw new Error(`model error after ${[...path, mv].join(' ')}: ${(e as Error).stack}`)
      }
      any = true
      res.transitions++
      if (depth + 1 > maxDepth) { res.cut++; continue }
      path.push(mv)
      dfs(next, depth + 1)
      path.pop()
      if (res.violation) return
    }
    if (!any) {
      res.terminals++
      try { quiescent(st, sc) } catch (e) {
        if (e instanceof ModelViolation) { res.violation = { rule: e.rule, message: e.message, trace: [...path, '(quiescent)'] }; return }
        throw e
      }
    }
  }
  dfs(initial(sc), 0)
  res.ms = Date.now() - t0
  return res
}

/** Replay a trace (for reports and debugging): the states after each step. */
export function replay(sc: Scenario, trace: string[]): State[] {
  const out: State[] = []
  let st = initial(sc)
  for (const mv of trace) {
    if (mv === '(quiescent)') { quiescent(st, sc); continue }
    st = cloneState(st)
    new Machine(st, sc).step(mv)
    out.push(st)
  }
  return out
}

// ---------------------------------------------------------------- random walks (soak)

/** xorshift32: a seeded, replayable choice of steps. */
export function rng(seed: number): () => number {
  let x = (seed | 0) || 0x9e3779b9
  return () => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    return (x >>> 0) / 4294967296
  }
}

export interface WalkResult {
  scenario: string
  seed: number
  walks: number
  steps: number
  quiescent: number
  ms: number
  violation: null | { rule: Rule; message: string; walk: number; trace: string[] }
}

/**
 * Random schedules from a seed, each run to quiescence (or maxSteps), with every check on every
 * step: for scenarios far too large to explore. `walk(sc, seed)` with the printed seed replays it.
 */
export function walk(sc: Scenario, seed: number, opts: { walks?: number; maxSteps?: number; deadline?: number } = {}): WalkResult {
  const walks = opts.walks ?? 1000
  const maxSteps = opts.maxSteps ?? 2000
  const rand = rng(seed)
  const res: WalkResult = { scenario: sc.name, seed, walks: 0, steps: 0, quiescent: 0, ms: 0, violation: null }
  const t0 = Date.now()
  for (let w = 0; w < walks && (opts.deadline === undefined || Date.now() < opts.deadline); w++) {
    res.walks++
    let st = initial(sc)
    const trace: string[] = []
    for (let n = 0; n < maxSteps; n++) {
      const mvs = new Machine(st, sc).moves()
      let moved = false
      // Try moves in a random order until one is possible (a blocked owner step is not a step).
      // The order picks a kind of step first (io, drain, p0, data, …), then a step of that kind,
      // so the many ways a producer can start an op do not crowd out everything else.
      const kinds = new Map<string, string[]>()
      for (const m of mvs) { const k = m.split(':')[0]; const l = kinds.get(k); if (l) l.push(m); else kinds.set(k, [m]) }
      const order: string[] = []
      const groups = [...kinds.values()]
      while (groups.length > 0) {
        const g = Math.floor(rand() * groups.length)
        const l = groups[g]
        order.push(l.splice(Math.floor(rand() * l.length), 1)[0])
        if (l.length === 0) groups.splice(g, 1)
      }
      for (const mv of order) {
        const next = cloneState(st)
        try {
          new Machine(next, sc).step(mv)
        } catch (e) {
          if (e === BLOCKED) continue
          if (e instanceof ModelViolation) {
            res.violation = { rule: e.rule, message: e.message, walk: w, trace: [...trace, mv] }
            res.ms = Date.now() - t0
            return res
          }
          throw e
        }
        trace.push(mv)
        st = next
        moved = true
        res.steps++
        break
      }
      if (!moved) {
        res.quiescent++
        try { quiescent(st, sc) } catch (e) {
          if (e instanceof ModelViolation) {
            res.violation = { rule: e.rule, message: e.message, walk: w, trace: [...trace, '(quiescent)'] }
            res.ms = Date.now() - t0
            return res
          }
          throw e
        }
        break
      }
    }
  }
  res.ms = Date.now() - t0
  return res
}
