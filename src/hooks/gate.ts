// Target gates (Icinga 2 #6517; Tempesta #2599's review): once a connect to a target fails, only
// one connection at a time — the probe — keeps trying it; the other connections of the same
// connect spec that would try the same target park: no connects, no timers. The first probe that
// succeeds opens the gate and every parked connection is released through admission control.
// A server that is down for a minute then sees one connect per backoff step from each shard, not
// N; when it comes back every connection needs about one attempt, however long the gap was.
//
// The probe role rotates: a probe that fails parks and hands the next step to the parked
// connection with the fewest attempts, so no single connection accumulates them. `maxAttempts`
// counts probe rounds against the target (the first wave of failures is one round): when they run
// out the target is dead, and so is every connection waiting on it — one verdict, not N.
// Only the owning shard touches a gate (O1): gates are per shard.

import type { ServerConn } from './server.ts'
import type { NormalizedConnect } from './retry.ts'

export class Gate {
  down = false
  /** probe rounds failed in a row (maxAttempts) */
  rounds = 0
  probe: ServerConn | null = null
  private parked: (ServerConn | null)[] = []

  push(c: ServerConn): void { this.parked.push(c) }

  /**
   * The next probe: the parked connection with the fewest attempts (earliest parked on a tie),
   * so the attempts spread over everyone waiting, including late arrivals that never tried.
   * O(parked) per probe round; rounds are paced by backoff, so this is cheap.
   */
  take(): ServerConn | null {
    let best = -1
    let live = 0
    for (let i = 0; i < this.parked.length; i++) {
      const c = this.parked[i]
      if (!c || c.parkedIn !== this) { this.parked[i] = null; continue }
      live++
      if (best < 0 || c.attempt < this.parked[best]!.attempt) best = i
    }
    if (best < 0) { this.parked = []; return null }
    const c = this.parked[best]!
    this.parked[best] = null
    if (this.parked.length > 64 && live * 2 < this.parked.length) this.parked = this.parked.filter((x) => x !== null)
    return c
  }

  /** Every connection still parked here (the gate is emptied). */
  takeAll(): ServerConn[] {
    const out = this.parked.filter((c): c is ServerConn => c !== null && c.parkedIn === this)
    this.parked = []
    return out
  }
}

export class Gates {
  private readonly bySpec = new Map<NormalizedConnect, Map<string, Gate>>()

  of(c: ServerConn): Gate {
    let m = this.bySpec.get(c.cfg)
    if (!m) this.bySpec.set(c.cfg, (m = new Map()))
    const key = `${c.target.host}:${c.target.port}`
    let g = m.get(key)
    if (!g) m.set(key, (g = new Gate()))
    return g
  }

  clear(): void { this.bySpec.clear() }
}
