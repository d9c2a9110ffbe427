// Per-thread counter blocks in the SharedArrayBuffer. Each block has exactly one writer (its
// thread), so increments need no RMW on the value itself; a seqlock word (T_SEQ) lets any other
// thread read the whole block as one consistent snapshot without tearing a Float64.

import { COUNTER_NAMES, MAX_COUNTERS, T_SEQ, type CounterName, type Layout } from './layout.ts'

export type CounterSnapshot = { [K in CounterName]: number }

export class CounterBlock {
  private readonly f64: Float64Array
  private readonly i32: Int32Array
  private readonly seq: number

  constructor(sab: SharedArrayBuffer, layout: Layout, tid: number) {
    this.f64 = new Float64Array(sab, layout.countersOffset(tid), layout.counterCount)
    this.i32 = new Int32Array(sab)
    this.seq = layout.threadBase(tid) + T_SEQ
  }

  add(idx: number, n = 1): void {
    Atomics.add(this.i32, this.seq, 1) // odd: write in progress
    this.f64[idx] += n
    Atomics.add(this.i32, this.seq, 1)
  }

  set(idx: number, v: number): void {
    Atomics.add(this.i32, this.seq, 1)
    this.f64[idx] = v
    Atomics.add(this.i32, this.seq, 1)
  }

  /** Raise a max-gauge (only the writer calls this). */
  max(idx: number, v: number): void { if (v > this.f64[idx]) this.set(idx, v) }

  get(idx: number): number { return this.f64[idx] }

  /**
   * Zero the block (a new writer taking it over: a restarted shard, or main for a dead one). The
   * previous writer may have died mid-update and left SEQ odd; `add` would keep it odd for good
   * (readers then spin to their bound on every read), so store an odd value, write, then the even
   * one after it (hardening bug 8).
   */
  reset(): void { this.rewrite(() => this.f64.fill(0)) }

  /** Zero some counters (gauges of a shard that died and stays down), as reset() does. */
  zero(idxs: readonly number[]): void { this.rewrite(() => { for (const i of idxs) this.f64[i] = 0 }) }

  private rewrite(fn: () => void): void {
    const odd = Atomics.load(this.i32, this.seq) | 1
    Atomics.store(this.i32, this.seq, odd)
    fn()
    Atomics.store(this.i32, this.seq, odd + 1)
  }
}

/** Read one thread's block consistently. Bounded: after 1000 torn tries it returns the last read. */
export function readCounters(sab: SharedArrayBuffer, layout: Layout, tid: number): CounterSnapshot {
  const f64 = new Float64Array(sab, layout.countersOffset(tid), layout.counterCount)
  const i32 = new Int32Array(sab)
  const seq = layout.threadBase(tid) + T_SEQ
  const out = {} as CounterSnapshot
  for (let tries = 0; tries < 1000; tries++) {
    const s1 = Atomics.load(i32, seq)
    // Odd = a write in progress; but a writer terminated mid-add leaves it odd for good, so the
    // last try reads anyway (as documented) rather than returning an empty snapshot.
    if ((s1 & 1) && tries < 999) continue
    for (let i = 0; i < COUNTER_NAMES.length; i++) out[COUNTER_NAMES[i]] = f64[i]
    if (Atomics.load(i32, seq) === s1) break
  }
  return out
}

/** Sum blocks: events and gauges add up; delay and latency maxima take the max. */
export function sumCounters(blocks: CounterSnapshot[]): CounterSnapshot {
  const out = {} as CounterSnapshot
  for (const n of COUNTER_NAMES) {
    let v = 0
    for (const b of blocks) v = MAX_COUNTERS.has(n) ? Math.max(v, b[n]) : v + b[n]
    out[n] = v
  }
  return out
}

