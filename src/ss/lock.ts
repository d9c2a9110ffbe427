// The callback lock (kernel sk_callback_lock) on one Int32 word of a slot, futex-style.
//
// Word layout: 0 = free. Held = (epoch & EPOCH_MASK) << 10 | CONTENDED? | (tid + 1).
// The holder and its epoch live in the word so that R1 (robust lock) needs no side table: a
// holder whose thread epoch has moved on is dead, and its lock is broken like a robust pthread
// mutex (EOWNERDEAD): the breaker gets LOCK_BROKEN and must treat the protected words as
// possibly half-updated (slot words are single-word updates, so they never are).
//
// Who may do what (O1, S1):
// - the owner shard acquires with `acquire`: fast CAS, then a bounded spin against a foreign
//   holder (foreign holds are a few instructions). It never calls Atomics.wait: that would
//   freeze its event loop. If the bound runs out (a foreign holder was preempted), it fails and
//   the caller defers the event to its next loop turn.
// - a foreign I/O thread uses `tryLock`: a short bounded spin, never waits; on failure it records
//   its request in the slot word instead (Q1).
// - threads without an event loop to protect (tests, benches) may use `lockBlocking`, which
//   sleeps with Atomics.wait after setting CONTENDED; `release` notifies only when that bit was set.

import { T_EPOCH, type Layout } from './layout.ts'
import type { CounterBlock } from './counters.ts'
import { C } from './layout.ts'

const TID_MASK = 0x1ff
const CONTENDED = 1 << 9
const EPOCH_SHIFT = 10
const EPOCH_MASK = 0x1fffff

export const LOCK_FAILED = 0
export const LOCK_ACQUIRED = 1
export const LOCK_BROKEN = 2
export type LockResult = typeof LOCK_FAILED | typeof LOCK_ACQUIRED | typeof LOCK_BROKEN

/**
 * Spins for the owner: a few microseconds of loads (about 10 ns each here). A foreign hold is a
 * few instructions (one CAS on the slot word), so a longer wait means the holder was preempted;
 * spinning on would stall this shard's loop for nothing (2^18 spins cost 1.4–7 ms, twice per
 * onData, before the hardening issue). The caller defers the event to the next loop turn instead.
 */
export const OWNER_SPIN = 512
/** Spins for a foreign tryLock: it has a fallback, so it gives up quickly. */
export const FOREIGN_SPIN = 256

export function lockHolder(word: number): number { return word === 0 ? -1 : (word & TID_MASK) - 1 }

export class CallbackLock {
  private readonly i32: Int32Array
  private readonly layout: Layout
  private readonly tid: number
  private readonly counters: CounterBlock | undefined

  constructor(sab: SharedArrayBuffer, layout: Layout, tid: number, counters?: CounterBlock) {
    this.i32 = new Int32Array(sab)
    this.layout = layout
    this.tid = tid
    this.counters = counters
  }

  /** The word this thread writes when it holds a lock; its epoch is read fresh (it may be restarted). */
  private mine(): number {
    const epoch = Atomics.load(this.i32, this.layout.threadBase(this.tid) + T_EPOCH) & EPOCH_MASK
    return (epoch << EPOCH_SHIFT) | (this.tid + 1)
  }

  /** Is the holder recorded in `word` dead (its thread's epoch moved on)? */
  private holderDead(word: number): boolean {
    const holder = (word & TID_MASK) - 1
    if (holder < 0 || holder >= this.layout.threads) return true // garbage: nobody can own it
    const epoch = Atomics.load(this.i32, this.layout.threadBase(holder) + T_EPOCH) & EPOCH_MASK
    return epoch !== ((word >>> EPOCH_SHIFT) & EPOCH_MASK)
  }

  private spin(idx: number, mine: number, spins: number): LockResult {
    let seen = Atomics.compareExchange(this.i32, idx, 0, mine)
    if (seen === 0) return LOCK_ACQUIRED
    this.counters?.add(C.lockContended)
    for (let i = 0; i < spins; i++) {
      if (seen !== 0 && (i & 63) === 0 && this.holderDead(seen)) {
        if (Atomics.compareExchange(this.i32, idx, seen, mine) === seen) {
          this.counters?.add(C.lockBroken)
          return LOCK_BROKEN
        }
      }
      seen = Atomics.load(this.i32, idx)
      if (seen === 0) {
        seen = Atomics.compareExchange(this.i32, idx, 0, mine)
        if (seen === 0) return LOCK_ACQUIRED
      }
    }
    return LOCK_FAILED
  }

  /** Owner acquire (see header). `idx` is the Int32 index of the lock word. */
  acquire(idx: number): LockResult { return this.spin(idx, this.mine(), OWNER_SPIN) }

  /** Foreign try-lock: short bounded spin, never waits. */
  tryLock(idx: number, spins = FOREIGN_SPIN): LockResult { return this.spin(idx, this.mine(), spins) }

  /**
   * Blocking acquire for threads with no event loop to protect. Sleeps in Atomics.wait with the
   * CONTENDED bit set so release knows to notify. Bounded by `timeoutMs` overall.
   */
  lockBlocking(idx: number, timeoutMs = 10_000): LockResult {
    const mine = this.mine()
    const r = this.spin(idx, mine, 64)
    if (r !== LOCK_FAILED) return r
    const deadline = Date.now() + timeoutMs
    for (;;) {
      let seen = Atomics.load(this.i32, idx)
      if (seen === 0) {
        // Take it with CONTENDED set: others may still sleep on it, so our release must wake one.
        if (Atomics.compareExchange(this.i32, idx, 0, mine | CONTENDED) === 0) return LOCK_ACQUIRED
        continue
      }
      if (this.holderDead(seen)) {
        if (Atomics.compareExchange(this.i32, idx, seen, mine | CONTENDED) === seen) {
          this.counters?.add(C.lockBroken)
          return LOCK_BROKEN
        }
        continue
      }
      if ((seen & CONTENDED) === 0) {
        if (Atomics.compareExchange(this.i32, idx, seen, seen | CONTENDED) !== seen) continue
        seen |= CONTENDED
      }
      const left = deadline - Date.now()
      if (left <= 0) return LOCK_FAILED
      // Short waits so a holder that dies (and never notifies) is noticed by the epoch check.
      Atomics.wait(this.i32, idx, seen, Math.min(left, 20))
    }
  }

  /** Release; wakes one sleeper only if one announced itself with CONTENDED. */
  release(idx: number): void {
    const prev = Atomics.exchange(this.i32, idx, 0)
    if (prev & CONTENDED) Atomics.notify(this.i32, idx, 1)
  }

  /** Is the lock word held by this thread? (assertions and tests) */
  heldByMe(idx: number): boolean { return lockHolder(Atomics.load(this.i32, idx)) === this.tid }
}
