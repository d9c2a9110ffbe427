// Slot tables: one per shard, Int32 words in the SharedArrayBuffer (see layout.ts).
// A slot is one socket, or one persistent server connection for its whole life. Its id encodes
// (shard, slot, generation); the generation lives in the same word as the flags and is bumped
// when the slot is released, so a stale id can never reach a reused slot: every foreign request
// is one compareExchange that checks the generation and sets the bit together (no ABA).
//
// Lifetimes (DESIGN §4b): the SLOT is reused by many sockets over time; the CONNECTION owns the
// slot from alloc to release (connection-level flags); an INCARNATION (one TCP connection of a
// server connection) owns the incarnation-level flags, cleared by beginIncarnation.
//
// Only the owner shard allocates and releases (O1), and every owner-side operation takes the id
// and checks its generation: work deferred behind a busy lock may run after its socket ended, and
// must then touch nothing (hardening bug 4: socket A's queued recv/drop read and took socket B's
// flags after B reused A's slot). Any thread may read a slot or record a request.

import {
  type Layout, S_LOCK, S_STATE, S_GENFLAGS, S_INCARNATION, GEN_SHIFT, GEN_MAX, FLAGS_MASK, F_IN_USE, F_FINAL,
  INCARNATION_FLAGS, SLOT_QUARANTINE, ST_FREE, T_ALIVE, T_REQ_PENDING, encodeId, idShard, idSlot, idGen,
  isSocketId,
} from './layout.ts'
import { SyncsockError } from './errors.ts'

export const genOf = (word: number) => (word >>> GEN_SHIFT) & GEN_MAX
export const flagsOf = (word: number) => word & FLAGS_MASK
function nextGen(gen: number, max = GEN_MAX): number { return gen >= max ? 1 : gen + 1 }
/** What an owner-side read of a stale id answers: final, so no hook runs and no request is taken. */
export const STALE_FLAGS = F_FINAL

/** Tests shrink the table to check the reuse bound at a small scale; the engine uses the defaults. */
export interface SlotTableTuning {
  /** generation wrap (default GEN_MAX) */
  genMax?: number
  /** free slots held back (default SLOT_QUARANTINE) */
  quarantine?: number
  /** slots used, from slot 0 (default: the layout's whole table) */
  size?: number
}

/** Owner side of one shard's slot table. */
export class SlotTable {
  readonly shard: number
  /** slots in the table, quarantine included */
  readonly size: number
  readonly quarantine: number
  readonly genMax: number
  private readonly i32: Int32Array
  private readonly layout: Layout
  /** FIFO ring of free slot indices: reuse is spread over the whole table (bug 5) */
  private readonly free: Int32Array
  private head = 0
  private freeCount: number
  inUse = 0

  constructor(sab: SharedArrayBuffer, layout: Layout, shard: number, tuning: SlotTableTuning = {}) {
    this.shard = shard
    this.size = tuning.size ?? layout.slotTableSize
    this.quarantine = tuning.quarantine ?? SLOT_QUARANTINE
    this.genMax = tuning.genMax ?? GEN_MAX
    if (this.size > layout.slotTableSize || this.quarantine >= this.size || this.genMax < 1 || this.genMax > GEN_MAX) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', `bad slot table tuning ${JSON.stringify(tuning)}`)
    }
    this.layout = layout
    this.i32 = new Int32Array(sab)
    this.free = new Int32Array(this.size)
    for (let s = 0; s < this.size; s++) this.free[s] = s
    this.freeCount = this.size
  }

  /**
   * Reset after a shard restart (R1): every slot freed with its generation bumped, so ids of the
   * dead incarnation answer ERR_SS_STALE. Locks held by the dead thread are cleared too. The
   * engine has already sealed the table when the old thread exited (sealShard); this is the
   * replacement making sure nothing of the old life is left.
   */
  resetAll(): void {
    for (let s = 0; s < this.size; s++) {
      const b = this.layout.slotBase(this.shard, s)
      const gen = genOf(Atomics.load(this.i32, b + S_GENFLAGS))
      Atomics.store(this.i32, b + S_GENFLAGS, nextGen(gen, this.genMax) << GEN_SHIFT)
      Atomics.store(this.i32, b + S_STATE, ST_FREE)
      Atomics.store(this.i32, b + S_LOCK, 0)
    }
    const sum = this.layout.summaryBase(this.shard)
    for (let w = 0; w < this.layout.summaryWords; w++) Atomics.store(this.i32, sum + w, 0)
  }

  /** Take a free slot; returns its socket id, or -1 when the table is full. */
  alloc(flags: number, state: number): number {
    if (this.freeCount <= this.quarantine) return -1
    const slot = this.free[this.head]
    this.head = this.head + 1 === this.size ? 0 : this.head + 1
    this.freeCount--
    const b = this.layout.slotBase(this.shard, slot)
    let gen = genOf(Atomics.load(this.i32, b + S_GENFLAGS))
    if (gen === 0 || gen > this.genMax) gen = 1 // generation 0 is never handed out
    Atomics.store(this.i32, b + S_STATE, state)
    Atomics.store(this.i32, b + S_INCARNATION, 0)
    Atomics.store(this.i32, b + S_GENFLAGS, (gen << GEN_SHIFT) | (flags & FLAGS_MASK) | F_IN_USE)
    this.inUse++
    return encodeId(this.shard, slot, gen)
  }

  /** Return a slot: bump its generation and clear every flag and request bit. */
  release(id: number): void {
    const slot = idSlot(id)
    const b = this.layout.slotBase(this.shard, slot)
    const word = Atomics.load(this.i32, b + S_GENFLAGS)
    if (genOf(word) !== idGen(id) || (word & F_IN_USE) === 0) {
      throw new SyncsockError('ERR_SS_STALE', `release of stale id ${id}`)
    }
    // One store: a foreign CAS racing with it fails on the generation (it never sets bits here).
    Atomics.store(this.i32, b + S_GENFLAGS, nextGen(genOf(word), this.genMax) << GEN_SHIFT)
    Atomics.store(this.i32, b + S_STATE, ST_FREE)
    let tail = this.head + this.freeCount
    if (tail >= this.size) tail -= this.size
    this.free[tail] = slot
    this.freeCount++
    this.inUse--
  }

  base(id: number): number { return this.layout.slotBase(this.shard, idSlot(id)) }
  lockIdx(id: number): number { return this.base(id) + S_LOCK }
  word(id: number): number { return Atomics.load(this.i32, this.base(id) + S_GENFLAGS) }
  /** Is id the live incarnation of its slot? */
  live(id: number): boolean {
    const w = this.word(id)
    return genOf(w) === idGen(id) && (w & F_IN_USE) !== 0
  }
  /** The slot's flags if id is live, else STALE_FLAGS (F_FINAL: nothing may run for it). */
  flags(id: number): number {
    const w = this.word(id)
    return genOf(w) === idGen(id) && (w & F_IN_USE) !== 0 ? flagsOf(w) : STALE_FLAGS
  }

  /**
   * Change flag bits of a live id (a CAS that checks the generation, like a foreign request);
   * returns the flags as they were, or -1 (and changes nothing) if the id is stale.
   */
  private update(id: number, set: number, clear: number): number {
    const idx = this.base(id) + S_GENFLAGS
    const gen = idGen(id)
    for (;;) {
      const w = Atomics.load(this.i32, idx)
      if (genOf(w) !== gen || (w & F_IN_USE) === 0) return -1
      const nw = (w | set) & ~clear
      if (nw === w || Atomics.compareExchange(this.i32, idx, w, nw) === w) return flagsOf(w)
    }
  }
  setFlags(id: number, bits: number): void { this.update(id, bits, 0) }
  clearFlags(id: number, bits: number): void { this.update(id, 0, bits) }
  /** Atomically take (read and clear) the given request bits of a live id; 0 if stale. */
  takeFlags(id: number, bits: number): number {
    const before = this.update(id, 0, bits)
    return before < 0 ? 0 : before & bits
  }
  /**
   * A new incarnation of the connection in this slot begins: its flags start clean and its
   * number is bumped (§4b). Foreign sends carry the number they saw, so bytes accepted for
   * incarnation k are never written to k+1 (they count as sendFailed).
   */
  beginIncarnation(id: number): void {
    if (this.update(id, 0, INCARNATION_FLAGS) < 0) return
    Atomics.add(this.i32, this.base(id) + S_INCARNATION, 1)
  }
  /** The incarnation number of a slot (see beginIncarnation). */
  incarnation(id: number): number { return Atomics.load(this.i32, this.base(id) + S_INCARNATION) }

  /** Publish the state of a live id (owner only; a stale id changes nothing). */
  setState(id: number, st: number): void {
    if (this.live(id)) Atomics.store(this.i32, this.base(id) + S_STATE, st)
  }
  state(id: number): number { return Atomics.load(this.i32, this.base(id) + S_STATE) }

  /** The slot word of a slot index (for the owner's wake-time snapshot of request bits, Q1). */
  slotWord(slot: number): number { return Atomics.load(this.i32, this.layout.slotBase(this.shard, slot) + S_GENFLAGS) }

  /**
   * Collect slots that foreign threads flagged (Q1). Cheap when nothing is pending: one load.
   * Returns slot indices; the caller maps them to its live sockets.
   */
  takeRequests(out: number[]): number[] {
    const pend = this.layout.threadBase(this.shard + 1) + T_REQ_PENDING
    if (Atomics.exchange(this.i32, pend, 0) === 0) return out
    const sum = this.layout.summaryBase(this.shard)
    for (let w = 0; w < this.layout.summaryWords; w++) {
      if (Atomics.load(this.i32, sum + w) === 0) continue
      let bits = Atomics.exchange(this.i32, sum + w, 0)
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits)
        bits &= ~(1 << b)
        out.push(w * 32 + b)
      }
    }
    return out
  }
}

/** A slot of a dead shard as it was when the engine sealed it. */
export interface SealedSlot { id: number; flags: number; state: number }

/**
 * Seal a dead shard's table (main thread, once the shard's thread has exited; R1): every slot in
 * use gets its generation bumped and is marked free in one CAS per slot, and what it was is
 * returned. A foreign close/unlink whose CAS landed before the seal is in the returned flags (the
 * engine then knows the connection was closed and does not re-create it); one that comes after
 * fails on the generation and answers an error — never 'ok' and lost (hardening bug 3).
 */
export function sealShard(sab: SharedArrayBuffer, layout: Layout, shard: number): SealedSlot[] {
  const i32 = new Int32Array(sab)
  const out: SealedSlot[] = []
  for (let s = 0; s < layout.slotTableSize; s++) {
    const b = layout.slotBase(shard, s)
    for (;;) {
      const w = Atomics.load(i32, b + S_GENFLAGS)
      if (Atomics.compareExchange(i32, b + S_GENFLAGS, w, nextGen(genOf(w)) << GEN_SHIFT) !== w) continue
      if (w & F_IN_USE) out.push({ id: encodeId(shard, s, genOf(w)), flags: flagsOf(w), state: Atomics.load(i32, b + S_STATE) })
      Atomics.store(i32, b + S_STATE, ST_FREE)
      break
    }
  }
  return out
}

/** Any thread's view of every slot table: id validation and request recording. */
export class SlotView {
  private readonly i32: Int32Array
  private readonly layout: Layout

  constructor(sab: SharedArrayBuffer, layout: Layout) {
    this.i32 = new Int32Array(sab)
    this.layout = layout
  }

  /** Is this a well-formed id for this engine (shard and slot in range)? */
  wellFormed(id: unknown): id is number {
    return isSocketId(id) && idShard(id) < this.layout.shards && idSlot(id) < this.layout.slotTableSize
  }

  base(id: number): number { return this.layout.slotBase(idShard(id), idSlot(id)) }
  word(id: number): number { return Atomics.load(this.i32, this.base(id) + S_GENFLAGS) }
  state(id: number): number { return Atomics.load(this.i32, this.base(id) + S_STATE) }
  incarnation(id: number): number { return Atomics.load(this.i32, this.base(id) + S_INCARNATION) }
  lockIdx(id: number): number { return this.base(id) + S_LOCK }
  /** Is the thread that owns this id's shard running (not dead, not yet replaced)? */
  ownerAlive(id: number): boolean {
    return Atomics.load(this.i32, this.layout.threadBase(idShard(id) + 1) + T_ALIVE) !== 0
  }

  /** Live incarnation check: generation matches and the slot is in use. */
  live(id: number): boolean {
    const w = this.word(id)
    return genOf(w) === idGen(id) && (w & F_IN_USE) !== 0
  }

  /**
   * Set `bits` in the slot's flag word iff the generation still matches (one CAS: no ABA).
   * Returns the flags as they were before, or -1 if the id is stale.
   */
  orIfLive(id: number, bits: number): number {
    const idx = this.base(id) + S_GENFLAGS
    const gen = idGen(id)
    for (;;) {
      const w = Atomics.load(this.i32, idx)
      if (genOf(w) !== gen || (w & F_IN_USE) === 0) return -1
      if ((w | bits) === w) return flagsOf(w)
      if (Atomics.compareExchange(this.i32, idx, w, w | bits) === w) return flagsOf(w)
    }
  }

  /** Tell the owner shard that slot requests are pending (the caller then rings its bell). */
  markRequest(id: number): void {
    const shard = idShard(id)
    const slot = idSlot(id)
    Atomics.or(this.i32, this.layout.summaryBase(shard) + (slot >> 5), 1 << (slot & 31))
    Atomics.store(this.i32, this.layout.threadBase(shard + 1) + T_REQ_PENDING, 1)
  }
}
