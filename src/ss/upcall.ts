// Upcalls: run hooks under the socket's callback lock (L1), one lock at a time (Tempesta #61),
// with exceptions and Promise-returning hooks contained (the shard lives on; the incarnation
// ends). The socket layer owns this (Tempesta's SS_CALL in sock.c): it calls a protocol's hook
// table (types.ts HookTable); src/hooks supplies the tables and the server-connection policy.
//
// `locked(sock, fn)` is the only way shard code runs anything that reads or changes linked state:
// - re-entrant on the same socket (a hook calling sock.close() on itself runs inline);
// - a request for a second socket while one is held is queued and runs right after the
//   release, so no thread ever holds two callback locks;
// - if the owner cannot get the lock within its bounded spin (a foreign holder was preempted),
//   the work is queued on the socket and retried on the next loop turn (S1: never block).

import { CallbackLock, LOCK_FAILED } from './lock.ts'
import { C } from './layout.ts'
import type { CounterBlock } from './counters.ts'
import { SyncsockError } from './errors.ts'
import type { HookName, HookTable } from './types.ts'

export interface Lockable {
  readonly lockIdx: number
  /**
   * Work waiting for the lock, in order; null when none. It belongs to the Lockable's lifetime
   * and must never run against another: an SsSocket's backlog is its incarnation's (the socket's
   * release is queued behind it, so the slot cannot be reused before it ran: hardening bug 4); a
   * ServerConn's is its connection's (each closure re-checks `final`, and slot reads by a stale id
   * answer FINAL, so work that outlives the connection does nothing).
   */
  backlog: (() => void)[] | null
  onBacklog?(waiting: boolean): void
}

export const HOOK_FAILED: unique symbol = Symbol('syncsock.hookFailed')

export interface HookFailure { hook: HookName | 'timer' | 'offload'; error: unknown }

/** What a hook is called on: it is the hook's `sock` argument and hears of the hook's failure. */
export interface HookCaller { hookError(f: HookFailure): void }

export class Dispatcher {
  private holding = -1
  private readonly afterRelease: (() => void)[] = []
  private readonly lock: CallbackLock
  private readonly counters: CounterBlock

  constructor(lock: CallbackLock, counters: CounterBlock) {
    this.lock = lock
    this.counters = counters
  }

  holds(s: Lockable): boolean { return this.holding === s.lockIdx }

  locked(s: Lockable, fn: () => void): void {
    if (this.holding === s.lockIdx) { fn(); return }
    if (this.holding !== -1) { this.afterRelease.push(() => this.locked(s, fn)); return }
    if (s.backlog) { s.backlog.push(fn); return }
    if (this.lock.acquire(s.lockIdx) === LOCK_FAILED) { this.defer(s, [fn]); return }
    this.hold(s, fn)
  }

  /**
   * Fast path for the hot events (recv): take the lock inline with no closure. false = the
   * caller must fall back to `locked` (nested hold, queued work, or contention).
   */
  enter(s: Lockable): boolean {
    if (this.holding !== -1 || s.backlog) return false
    if (this.lock.acquire(s.lockIdx) === LOCK_FAILED) {
      // Start the backlog here, so the caller's `locked` queues without a second bounded spin.
      this.defer(s, [])
      return false
    }
    this.holding = s.lockIdx
    return true
  }

  /** The lock is held by someone else: queue `work` on the socket, retry next loop turn (S1). */
  private defer(s: Lockable, work: (() => void)[]): void {
    s.backlog = work
    s.onBacklog?.(true)
    setImmediate(() => this.flushBacklog(s))
  }

  exit(s: Lockable): void {
    this.holding = -1
    this.lock.release(s.lockIdx)
    if (this.afterRelease.length > 0) this.runAfterRelease()
  }

  private hold(s: Lockable, fn: () => void): void {
    this.holding = s.lockIdx
    try {
      fn()
    } finally {
      this.holding = -1
      this.lock.release(s.lockIdx)
    }
    this.runAfterRelease()
  }

  private flushBacklog(s: Lockable): void {
    const work = s.backlog
    if (!work) return
    if (this.holding !== -1 || this.lock.acquire(s.lockIdx) === LOCK_FAILED) {
      setImmediate(() => this.flushBacklog(s))
      return
    }
    s.backlog = null
    this.hold(s, () => { for (const fn of work) fn() })
    s.onBacklog?.(false)
  }

  private runAfterRelease(): void {
    while (this.afterRelease.length > 0 && this.holding === -1) this.afterRelease.shift()!()
  }

  /**
   * Call one hook of `proto` (the caller holds the lock) with `sock` as its first argument.
   * Returns the hook's value, undefined if the protocol does not define it, or HOOK_FAILED if it
   * threw or returned a Promise — the failure is counted and handed to `sock.hookError`, which
   * ends the incarnation.
   */
  call(proto: HookTable, name: HookName, sock: HookCaller, a?: unknown, b?: unknown): unknown {
    const onFail = sock
    const h = proto[name] as ((...a: unknown[]) => unknown) | undefined
    if (typeof h !== 'function') return undefined
    let v: unknown
    try {
      v = h.call(proto, sock, a, b)
    } catch (error) {
      this.counters.add(C.hookErrors)
      onFail.hookError({ hook: name, error })
      return HOOK_FAILED
    }
    if (v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function') {
      ;(v as Promise<unknown>).then(undefined, () => {}) // its rejection is not ours to crash on
      this.counters.add(C.hookErrors)
      onFail.hookError({
        hook: name,
        error: new SyncsockError('ERR_SS_HOOK', `hook ${name} returned a Promise: hooks are synchronous`),
      })
      return HOOK_FAILED
    }
    return v
  }
}
