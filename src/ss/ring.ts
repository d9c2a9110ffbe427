// Single-producer single-consumer ring of length-prefixed records on a SharedArrayBuffer, and the
// doorbell that wakes its consumer (Seastar smp queues; padenot/ringbuf.js).
//
// Memory: [head Int32 | pad to 64][tail Int32 | pad to 64][data: capacity bytes, a power of two].
// head/tail are free-running u32 byte counters (wrap at 2^32; position = index & mask), each on
// its own cache line so producer and consumer never write the same line.
// A record is [Int32 length][body], padded to 8 bytes. A record never straddles the end: if it
// does not fit before the end the producer writes WRAP there and starts at 0 (the skipped bytes
// count as used until the consumer passes them).
//
// The producer never blocks and never drops: `reserve` answers -1 when there is no room (S2),
// and the caller reports ERR_SS_RING_FULL. Several reserves may be committed together, so a
// fragmented message is published whole or not at all (`abort` forgets uncommitted reserves).
// Publication order: body bytes (plain stores), then Atomics.store(tail) — the consumer's
// Atomics.load(tail) synchronizes with it, so the body is visible before the length says so.

import { T_BELL, type Layout } from './layout.ts'

const WRAP = -1
const HDR = 4
const CTRL = 128 // head line + tail line

export const recordBytes = (len: number) => (HDR + len + 7) & ~7

export class Ring {
  readonly capacity: number
  readonly mask: number
  /** Largest body `reserve` accepts: half the ring, so an empty ring always takes it. */
  readonly maxBody: number
  readonly u8: Uint8Array
  readonly dv: DataView
  /** Byte offset in `u8`/`dv` where the data area starts. */
  readonly base: number
  private readonly i32: Int32Array
  private readonly headIdx: number
  private readonly tailIdx: number
  // producer-local
  private tailLocal: number
  private headCache: number
  // consumer-local
  private headLocal: number

  constructor(sab: SharedArrayBuffer, byteOffset: number, capacity: number) {
    this.capacity = capacity
    this.mask = capacity - 1
    this.maxBody = capacity / 2 - HDR
    this.i32 = new Int32Array(sab)
    this.u8 = new Uint8Array(sab)
    this.dv = new DataView(sab)
    this.headIdx = byteOffset >> 2
    this.tailIdx = (byteOffset + 64) >> 2
    this.base = byteOffset + CTRL
    this.tailLocal = Atomics.load(this.i32, this.tailIdx) >>> 0
    this.headCache = Atomics.load(this.i32, this.headIdx) >>> 0
    this.headLocal = this.headCache
  }

  static of(sab: SharedArrayBuffer, layout: Layout, producer: number, consumer: number): Ring {
    return new Ring(sab, layout.ringOffset(producer, consumer), layout.ringBytes)
  }

  // ---------------- producer side ----------------

  /**
   * Reserve room for a body of `len` bytes; returns the absolute byte offset (in `u8`/`dv`) where
   * the body goes, or -1 if the ring has no room now. Nothing is visible until `commit`.
   */
  reserve(len: number): number {
    if (len < 0 || len > this.maxBody) return -1
    const need = recordBytes(len)
    const pos = this.tailLocal & this.mask
    const toEnd = this.capacity - pos
    const skip = toEnd < need ? toEnd : 0
    if (!this.hasRoom(skip + need)) return -1
    if (skip) {
      this.dv.setInt32(this.base + pos, WRAP, true)
      this.tailLocal = (this.tailLocal + skip) >>> 0
    }
    const at = this.base + (this.tailLocal & this.mask)
    this.dv.setInt32(at, len, true)
    this.tailLocal = (this.tailLocal + need) >>> 0
    return at + HDR
  }

  private hasRoom(bytes: number): boolean {
    if (((this.tailLocal - this.headCache) >>> 0) + bytes <= this.capacity) return true
    this.headCache = Atomics.load(this.i32, this.headIdx) >>> 0
    return ((this.tailLocal - this.headCache) >>> 0) + bytes <= this.capacity
  }

  /** Bytes a producer could still reserve right now (upper bound for one record: maxBody). */
  freeBytes(): number {
    this.headCache = Atomics.load(this.i32, this.headIdx) >>> 0
    return this.capacity - ((this.tailLocal - this.headCache) >>> 0)
  }

  /** Publish every reserve since the last commit. */
  commit(): void { Atomics.store(this.i32, this.tailIdx, this.tailLocal | 0) }

  /** Forget uncommitted reserves (a multi-record message that did not fit whole). */
  abort(): void { this.tailLocal = Atomics.load(this.i32, this.tailIdx) >>> 0 }

  /** Convenience: copy one record in and publish it. false = full (nothing written). */
  tryPush(body: Uint8Array): boolean {
    const at = this.reserve(body.length)
    if (at < 0) return false
    this.u8.set(body, at)
    this.commit()
    return true
  }

  // ---------------- consumer side ----------------

  /** The producer's published tail (consumer's acquire load). */
  publishedTail(): number { return Atomics.load(this.i32, this.tailIdx) >>> 0 }
  /** How far the consumer has read (its own head, maybe not yet published). */
  consumed(): number { return this.headLocal }

  /**
   * Consume up to `budget` records, calling `fn(offset, length)` with the body's absolute offset.
   * If `fn` returns true the record continues in the next one (a fragment): the drain goes on past
   * the budget until the message is whole, so messages of one producer never interleave with
   * another's at the consumer. Publishes head once at the end. Returns records consumed.
   */
  drain(budget: number, fn: (off: number, len: number) => boolean | void): number {
    const tail = this.publishedTail()
    let head = this.headLocal
    let n = 0
    let more = false
    while (head !== tail && (n < budget || more)) {
      const pos = head & this.mask
      const len = this.dv.getInt32(this.base + pos, true)
      if (len === WRAP) { head = (head + (this.capacity - pos)) >>> 0; continue }
      more = fn(this.base + pos + HDR, len) === true
      head = (head + recordBytes(len)) >>> 0
      n++
    }
    if (head !== this.headLocal) {
      this.headLocal = head
      Atomics.store(this.i32, this.headIdx, head | 0)
    }
    return n
  }

  isEmpty(): boolean { return this.headLocal === this.publishedTail() }
}

/** A consumer's doorbell word. Producers `ring()` after publishing; the consumer waits on it. */
export class Doorbell {
  private readonly i32: Int32Array
  readonly idx: number
  constructor(sab: SharedArrayBuffer, layout: Layout, consumer: number) {
    this.i32 = new Int32Array(sab)
    this.idx = layout.threadBase(consumer) + T_BELL
  }
  /** Producer: publish first, then ring. Notifies only on the 0 -> 1 edge. */
  ring(): void {
    if (Atomics.exchange(this.i32, this.idx, 1) === 0) Atomics.notify(this.i32, this.idx, 1)
  }
  /** Consumer: clear before draining, so a publish during the drain re-rings (no lost wake-up). */
  clear(): void { Atomics.store(this.i32, this.idx, 0) }
  /** Consumer: resolves when rung (at once if already rung). Never blocks the loop. */
  wait(): Promise<unknown> | null {
    const r = Atomics.waitAsync(this.i32, this.idx, 0)
    return r.async ? r.value : null
  }
}

export interface InboxOptions {
  /** Records per loop turn before yielding with setImmediate (D1). */
  budget: number
  /** Called for each record: (producer tid, absolute body offset, length, ring); true = fragment continues. */
  onRecord: (producer: number, off: number, len: number, ring: Ring) => boolean | void
  /** Called after the bell is cleared and before each drain pass (e.g. to collect slot requests). */
  onWake?: () => void
  /** Called after each drain pass, before barriers run (e.g. to uncork what the pass wrote). */
  onDrained?: () => void
}

/**
 * The consumer loop of one thread over all rings addressed to it: wait on the bell inside the
 * event loop (Atomics.waitAsync), on wake clear the bell, drain every ring within a budget, then
 * either yield (budget spent) or wait again. `barrier(fn)` runs fn once every record published
 * before the call has been consumed (Q1: a close recorded in the slot is applied after the sends
 * its producer published before it).
 *
 * A pending waitAsync does not keep a worker alive (nodejs/node#44729): the owner of the Inbox
 * keeps a referenced handle of its own for as long as it runs.
 */
export class Inbox {
  private readonly rings: { producer: number; ring: Ring }[] = []
  private readonly bell: Doorbell
  private readonly opts: InboxOptions
  private running = false
  private scheduled = false
  private start = 0
  private barriers: { tails: number[]; fn: () => void }[] = []
  turns = 0
  records = 0

  constructor(sab: SharedArrayBuffer, layout: Layout, consumer: number, opts: InboxOptions) {
    for (let p = 0; p < layout.threads; p++) {
      if (p !== consumer) this.rings.push({ producer: p, ring: Ring.of(sab, layout, p, consumer) })
    }
    this.bell = new Doorbell(sab, layout, consumer)
    this.opts = opts
  }

  run(): void {
    if (this.running) return
    this.running = true
    this.turn()
  }

  /** Stop consuming; rings the bell so a pending waitAsync settles instead of dangling. */
  stop(): void {
    this.running = false
    this.bell.ring()
  }

  barrier(fn: () => void): void {
    this.barriers.push({ tails: this.rings.map((r) => r.ring.publishedTail()), fn })
  }

  private turn = (): void => {
    this.scheduled = false
    if (!this.running) return
    this.turns++
    this.bell.clear()
    this.opts.onWake?.()
    let budget = this.opts.budget
    const n = this.rings.length
    // Rotate the starting ring each turn so one busy producer cannot starve the others.
    for (let k = 0; k < n && budget > 0; k++) {
      const { producer, ring } = this.rings[(this.start + k) % n]
      const got = ring.drain(budget, (off, len) => this.opts.onRecord(producer, off, len, ring))
      budget -= got
      this.records += got
    }
    this.start = (this.start + 1) % n
    this.opts.onDrained?.()
    this.runBarriers()
    if (!this.running) return
    if (budget <= 0) { this.yieldTurn(); return } // D1: let sockets and timers run, then continue
    const p = this.bell.wait()
    if (p === null) this.yieldTurn()
    else p.then(() => { if (!this.scheduled && this.running) this.turn() })
  }

  private yieldTurn(): void {
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(this.turn)
  }

  private runBarriers(): void {
    if (this.barriers.length === 0) return
    const keep: typeof this.barriers = []
    for (const b of this.barriers) {
      let done = true
      for (let i = 0; i < this.rings.length; i++) {
        // free-running u32: consumed is at or past the snapshot when (consumed - tail) as int32 >= 0
        if (((this.rings[i].ring.consumed() - b.tails[i]) | 0) < 0) { done = false; break }
      }
      if (done) b.fn()
      else keep.push(b)
    }
    this.barriers = keep
  }
}
