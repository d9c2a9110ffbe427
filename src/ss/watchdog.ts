// The connect, send and close timeouts of one shard's sockets, scanned by the shard's housekeeping tick
// (no timer per socket). It owns the per-socket bookkeeping both need and nothing else touches it.
//
// S3 (Kuma #5373): a peer that reads nothing for sendTimeoutMs while we have bytes queued is
// dropped ('send-timeout', RST), never waited on: sending can never deadlock two endpoints that
// both write while neither reads. Close timeout: a graceful close waits for the flush and then
// the peer's FIN, but not forever: closeTimeoutMs after the flush it is aborted. The clock of the
// close timeout runs only once our bytes are out (while flushing, the send timeout decides).
//
// Lifetime: an entry belongs to one socket incarnation, from its first unsent byte (or its
// close) until its 'close' event (forget) or the verdict.

import type { Socket } from 'node:net'
import { C } from './layout.ts'
import type { CounterBlock } from './counters.ts'

/** What the watchdog needs of a socket (socket.ts SsSocket). */
export interface Watched {
  readonly net: Socket
  readonly phase: 'connecting' | 'open' | 'closing' | 'closed'
  readonly ended: boolean
  readonly final: boolean
  dropped(reason: 'send-timeout'): void
  abortNow(): void
  connectTimedOut(ms: number): void
}

export interface WatchdogLimits { sendTimeoutMs: number; closeTimeoutMs: number }

export class Watchdog {
  /** socket → bytes flushed at the last progress, and when */
  private readonly sending = new Map<Watched, { flushed: number; at: number }>()
  /** socket → since when it waits for the peer's FIN with nothing left to flush */
  private readonly closing = new Map<Watched, number>()
  /** one-shot socket still connecting → its deadline, and the timeout it was given */
  private readonly connecting = new Map<Watched, { deadline: number; ms: number }>()
  private readonly limits: WatchdogLimits
  private readonly counters: CounterBlock

  constructor(limits: WatchdogLimits, counters: CounterBlock) {
    this.limits = limits
    this.counters = counters
  }

  /** The socket has unsent bytes: start (or keep) its send clock. */
  watchSend(s: Watched): void {
    if (this.sending.has(s)) return
    this.sending.set(s, { flushed: s.net.bytesWritten - s.net.writableLength, at: Date.now() })
  }

  /** The socket began a graceful close. */
  watchClose(s: Watched): void { if (!this.closing.has(s)) this.closing.set(s, Date.now()) }

  /** A one-shot socket connects: fail it if it is still connecting `ms` from now. */
  watchConnect(s: Watched, ms: number): void { this.connecting.set(s, { deadline: Date.now() + ms, ms }) }

  /** The socket is gone. */
  forget(s: Watched): void {
    this.sending.delete(s)
    this.closing.delete(s)
    this.connecting.delete(s)
  }

  scan(now: number): void {
    for (const [s, c] of this.connecting) {
      if (s.phase !== 'connecting') { this.connecting.delete(s); continue }
      if (now >= c.deadline) { this.connecting.delete(s); s.connectTimedOut(c.ms) }
    }
    for (const [s, p] of this.sending) {
      if (s.phase !== 'open' && s.phase !== 'closing') { this.sending.delete(s); continue }
      if (s.net.writableLength === 0) { this.sending.delete(s); continue }
      const flushed = s.net.bytesWritten - s.net.writableLength
      if (flushed > p.flushed) { p.flushed = flushed; p.at = now; continue }
      if (now - p.at >= this.limits.sendTimeoutMs) {
        this.sending.delete(s)
        if (s.ended || s.final) s.abortNow()
        else s.dropped('send-timeout')
      }
    }
    for (const [s, since] of this.closing) {
      if (s.phase === 'closed') { this.closing.delete(s); continue }
      if (s.net.writableLength > 0) { this.closing.set(s, now); continue }
      if (now - since >= this.limits.closeTimeoutMs) {
        this.closing.delete(s)
        this.counters.add(C.closeTimeouts)
        s.abortNow()
      }
    }
  }
}
