// Slot tables: one per shard, Int32 words in the SharedArrayBuffer (see layout.ts).
// A slot is one socket (or one persistent server connection, for its whole life). Its id encodes
// (shard, slot, generation); the generation lives in the same word as the flags and is bumped
// when the slot is freed, so a stale id can never reach a reused slot: every foreign request is
// one compareExchange that checks the generation and sets the bit together (no ABA).
//
// Only the owner shard allocates and frees (O1); any thread may read a slot or record a request.

import {
  type Layout, S_LOCK, S_STATE, S_GENFLAGS, S_AUX, GEN_SHIFT, GEN_MAX, FLAGS_MASK, F_IN_USE,
  ST_FREE, T_REQ_PENDING, encodeId, idShard, idSlot, idGen, isSocketId,
} from './layout.ts'
import { SyncsockError } from './errors.ts'

export const genOf = (word: number) => (word >>> GEN_SHIFT) & GEN_MAX
export const flagsOf = (word: number) => word & FLAGS_MASK

/** Owner side of one shard's slot table. */
export class SlotTable {
  readonly shard: number
  readonly size: number
  private readonly i32: Int32Array
  private readonly layout: Layout
  private readonly free: Int32Array // stack of free slot indices (LIFO keeps hot slots hot)
  private top: number
  inUse = 0

  constructor(sab: SharedArrayBuffer, layout: Layout, shard: number) {
    this.shard = shard
    this.size = layout.slotsPerShard
    this.layout = layout
    this.i32 = new Int32Array(sab)
    this.free = new Int32Array(this.size)
    this.top = 0
    for (let s = this.size - 1; s >= 0; s--) this.free[this.top++] = s
  }

  /**
   * Reset after a shard restart (R1): every slot freed with its generation bumped, so ids of the
   * dead incarnation answer ERR_SS_STALE. Locks held by the dead thread are cleared too.
   */
  resetAll(): void {
    for (let s = 0; s < this.size; s++) {
      const b = this.layout.slotBase(this.shard, s)
      const gen = genOf(Atomics.load(this.i32, b + S_GENFLAGS))
      Atomics.store(this.i32, b + S_GENFLAGS, nextGen(gen) << GEN_SHIFT)
      Atomics.store(this.i32, b + S_STATE, ST_FREE)
      Atomics.store(this.i32, b + S_LOCK, 0)
    }
    const sum = this.layout.summaryBase(this.shard)
    for (let w = 0; w < this.layout.summaryWords; w++) Atomics.store(this.i32, sum + w, 0)
  }

  /** Take a free slot; returns its socket id, or -1 when the table is full. */
  alloc(flags: number, state: number): number {
    if (this.top === 0) return -1
    const slot = this.free[--this.top]
    const b = this.layout.slotBase(this.shard, slot)
    let gen = genOf(Atomics.load(this.i32, b + S_GENFLAGS))
    if (gen === 0) gen = 1 // generation 0 is never handed out
    Atomics.store(this.i32, b + S_STATE, state)
    Atomics.store(this.i32, b + S_AUX, 0)
    Atomics.store(this.i32, b + S_GENFLAGS, (gen << GEN_SHIFT) | flags | F_IN_USE)
    this.inUse++
    return encodeId(this.shard, slot, gen)
  }

  /** Return a slot: bump its generation and clear every flag and request bit. */
  release(id: number): void {
    const slot = idSlot(id)
    const b = this.layout.slotBase(this.shard, slot)
    const word = Atomics.load(this.i32, b + S_GENFLAGS)
    if (genOf(word) !== idGen(id)) throw new SyncsockError('ERR_SS_STALE', `release of stale id ${id}`)
    Atomics.store(this.i32, b + S_GENFLAGS, nextGen(genOf(word)) << GEN_SHIFT)
    Atomics.store(this.i32, b + S_STATE, ST_FREE)
    this.free[this.top++] = slot
    this.inUse--
  }

  base(id: number): number { return this.layout.slotBase(this.shard, idSlot(id)) }
  lockIdx(id: number): number { return this.base(id) + S_LOCK }
  word(id: number): number { return Atomics.load(this.i32, this.base(id) + S_GENFLAGS) }
  flags(id: number): number { return flagsOf(this.word(id)) }
  /** Is id the live incarnation of its slot? */
  live(id: number): boolean {
    const w = this.word(id)
    return genOf(w) === idGen(id) && (w & F_IN_USE) !== 0
  }
  setFlags(id: number, bits: number): void { Atomics.or(this.i32, this.base(id) + S_GENFLAGS, bits) }
  clearFlags(id: number, bits: number): void { Atomics.and(this.i32, this.base(id) + S_GENFLAGS, ~bits) }
  /** Atomically take (read and clear) the given request bits. */
  takeFlags(id: number, bits: number): number {
    return Atomics.and(this.i32, this.base(id) + S_GENFLAGS, ~bits) & bits
  }
  setState(id: number, st: number): void { Atomics.store(this.i32, this.base(id) + S_STATE, st) }
  state(id: number): number { return Atomics.load(this.i32, this.base(id) + S_STATE) }
  setAux(id: number, v: number): void { Atomics.store(this.i32, this.base(id) + S_AUX, v) }

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

function nextGen(gen: number): number { return gen >= GEN_MAX ? 1 : gen + 1 }

export type SlotCheck = 'ok' | 'ERR_SS_STALE'

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
    return isSocketId(id) && idShard(id) < this.layout.shards && idSlot(id) < this.layout.slotsPerShard
  }

  base(id: number): number { return this.layout.slotBase(idShard(id), idSlot(id)) }
  word(id: number): number { return Atomics.load(this.i32, this.base(id) + S_GENFLAGS) }
  state(id: number): number { return Atomics.load(this.i32, this.base(id) + S_STATE) }
  lockIdx(id: number): number { return this.base(id) + S_LOCK }

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
