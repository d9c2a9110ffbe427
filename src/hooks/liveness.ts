// Liveness of server connections (Meridio #522: heal vs reconnect). One tick timer per shard,
// not one per connection. A probe belongs to one incarnation: its bookkeeping lives on that
// SsSocket, so a late verdict can never touch the next incarnation.
//
// With a `connectionIdle` hook the protocol sends its own ping each interval, and any bytes that
// arrive before `timeoutMs` answer it (a pong or real traffic alike). `misses` unanswered probes
// in a row drop the incarnation with reason 'liveness' → failover (reconnect), never a silent
// hang. Without the hook, the kernel's TCP keepalive does the probing at the same interval.
//
// Readiness: with `readyTimeoutMs`, an incarnation must receive its first bytes within that time
// after the TCP handshake, or it is dropped as 'ready-timeout' and retried (a connect that
// TCP-completes into an overflowing accept queue never becomes usable).

import type { SsSocket } from '../ss/socket.ts'
import { C } from '../ss/layout.ts'
import type { CounterBlock } from '../ss/counters.ts'
import type { Dispatcher } from '../ss/upcall.ts'
import type { LivenessHooks, ServerConn } from './server.ts'

export class Liveness implements LivenessHooks {
  private readonly watched = new Set<ServerConn>()
  private readonly ready = new Map<SsSocket, number>() // incarnation → deadline
  private timer: NodeJS.Timeout | null = null
  private tickMs = 1000
  private timerMs = 0
  private readonly dispatcher: Dispatcher
  private readonly counters: CounterBlock

  constructor(dispatcher: Dispatcher, counters: CounterBlock) {
    this.dispatcher = dispatcher
    this.counters = counters
  }

  add(c: ServerConn): void {
    const s = c.current
    const l = c.cfg.liveness
    if (!s || !l) return
    if (typeof c.proto.connectionIdle !== 'function') {
      s.net.setKeepAlive(true, l.intervalMs) // kernel probes; failure surfaces as an error → drop
      return
    }
    // First probe at a random point of the first interval: incarnations that came up in one burst
    // (a reconnect storm) would otherwise probe in the same tick forever after, 5,000 pings per
    // shard per tick at N = 10,000 (bench/reconnect-storm.ts). An earlier probe never delays a verdict.
    s.lastProbeAt = Date.now() - Math.floor(Math.random() * l.intervalMs)
    this.watched.add(c)
    this.tickMs = Math.min(this.tickMs, Math.max(10, Math.floor(Math.min(l.intervalMs, l.timeoutMs) / 4)))
    this.ensureTimer()
  }

  remove(c: ServerConn): void { this.watched.delete(c) }

  watchReady(s: SsSocket, ms: number): void {
    this.ready.set(s, Date.now() + ms)
    this.tickMs = Math.min(this.tickMs, Math.max(10, Math.floor(ms / 4)))
    this.ensureTimer()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    this.watched.clear()
    this.ready.clear()
  }

  private ensureTimer(): void {
    // A watch finer than the running tick restarts it: else a 300 ms ready deadline added after
    // a 10 s liveness interval would be checked only once a second.
    if (this.timer && this.timerMs <= this.tickMs) return
    if (this.timer) clearInterval(this.timer)
    this.timerMs = this.tickMs
    this.timer = setInterval(this.tick, this.tickMs)
  }

  private tick = (): void => {
    const now = Date.now()
    for (const [s, deadline] of this.ready) {
      if (s.phase !== 'open' || s.recvCount > 0) { this.ready.delete(s); continue }
      if (now >= deadline) { this.ready.delete(s); s.dropped('ready-timeout') }
    }
    for (const c of this.watched) {
      const s = c.current
      const l = c.cfg.liveness!
      if (!s || s.phase !== 'open' || s.ended) { this.watched.delete(c); continue }
      if (s.probeSentAt) {
        if (s.recvCount > s.probeRecvCount) { s.probeSentAt = 0; s.probeMisses = 0 }
        else if (now - s.probeSentAt >= l.timeoutMs) {
          s.probeSentAt = 0
          s.probeMisses++
          this.counters.add(C.livenessFailures)
          if (s.probeMisses >= l.misses) { this.watched.delete(c); s.dropped('liveness'); continue }
          s.lastProbeAt = 0 // probe again at once
        }
      }
      if (!s.probeSentAt && now - s.lastProbeAt >= l.intervalMs) this.probe(s, now)
    }
    if (this.watched.size === 0 && this.ready.size === 0 && this.timer) {
      clearInterval(this.timer)
      this.timer = null
    }
  }

  private probe(s: SsSocket, now: number): void {
    s.lastProbeAt = now
    s.probeSentAt = now
    s.probeRecvCount = s.recvCount
    this.counters.add(C.livenessProbes)
    this.dispatcher.locked(s, () => { if (s.runnable()) s.hook('connectionIdle') })
  }
}
