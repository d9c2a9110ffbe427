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
//
// Lifetime: a gate lives while its target is down or someone waits on it; an idle gate (up, no
// probe, nobody parked) is dropped, so one-off connects leave nothing behind (issue #8 measured
// 470 B leaked per ctx.connect when gates were kept per options object forever).
// Only the owning shard touches a gate (O1): gates are per shard.

import type { NormalizedConnect } from './retry.ts'
import type { Target } from './types.ts'

/** What a gate needs of a server connection (server.ts ServerConn). */
export interface GateMember {
  readonly cfg: NormalizedConnect
  readonly target: Target
  readonly attempt: number
  readonly final: boolean
  readonly isDead: boolean
  readonly isParked: boolean
  /** the gate it is parked in, or null */
  parkedIn: Gate | null
  /** lifecycle transitions the policy drives */
  toParked(): void
  giveUp(error: Error): void
}

/** What the policy asks of the connection manager. */
export interface GateHost<M extends GateMember> {
  admit(c: M): void
  arm(c: M, delayMs: number): void
  parkedChanged(n: number): void
  /** gates alive now (a gauge: it must not grow with connects that came and went) */
  gatesChanged(n: number): void
}

export class Gate {
  readonly key: string
  down = false
  /** probe rounds failed in a row (maxAttempts) */
  rounds = 0
  probe: GateMember | null = null
  private parked: (GateMember | null)[] = []
  constructor(key: string) { this.key = key }

  push(c: GateMember): void { this.parked.push(c) }

  /** someone is parked here */
  get waiting(): boolean {
    for (const c of this.parked) if (c && c.parkedIn === this) return true
    return false
  }

  get idle(): boolean { return !this.down && this.probe === null && !this.waiting }

  /**
   * The next probe: the parked connection with the fewest attempts (earliest parked on a tie),
   * so the attempts spread over everyone waiting, including late arrivals that never tried.
   * O(parked) per probe round; rounds are paced by backoff, so this is cheap.
   */
  take(): GateMember | null {
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
  takeAll(): GateMember[] {
    const out = this.parked.filter((c): c is GateMember => c !== null && c.parkedIn === this)
    this.parked = []
    return out
  }
}

/** The gate policy of one shard: which gate a connection waits on, and every gate transition. */
export class GatePolicy<M extends GateMember> {
  private readonly gates = new Map<string, Gate>()
  private parkedCount = 0
  private readonly host: GateHost<M>

  constructor(host: GateHost<M>) { this.host = host }

  /** Gates open now (tests and leak checks). */
  get size(): number { return this.gates.size }

  /** The gate of c's connect spec and current target. Specs with equal options share gates. */
  of(c: M): Gate {
    const key = gateKey(c.cfg, c.target)
    let g = this.gates.get(key)
    if (!g) { this.gates.set(key, (g = new Gate(key))); this.host.gatesChanged(this.gates.size) }
    return g
  }

  /** Forget a gate nobody needs any more. */
  private tidy(g: Gate): void {
    if (g.idle && this.gates.get(g.key) === g) { this.gates.delete(g.key); this.host.gatesChanged(this.gates.size) }
  }

  /** c may connect now: unless its target's gate is down with another probe out. */
  due(c: M): void {
    const g = this.of(c)
    if (g.down) {
      const p = g.probe
      if (p && p !== c && !p.final && !p.isDead) { this.park(g, c); return }
      g.probe = c
    } else {
      this.tidy(g)
    }
    this.host.admit(c)
  }

  private park(g: Gate, c: M): void {
    c.toParked()
    if (!c.parkedIn) this.host.parkedChanged(++this.parkedCount)
    c.parkedIn = g
    g.push(c)
  }

  /** c leaves whatever gate it was parked in (promoted, released, dead or closed). */
  unpark(c: GateMember): void {
    if (!c.parkedIn) return
    c.parkedIn = null
    this.host.parkedChanged(--this.parkedCount)
  }

  /**
   * A failed connect of c (under its lock). Counts a probe round if it is the probe's, or the
   * first failure since the target was up. Returns the gate's rounds, for backoff and maxAttempts.
   */
  failed(c: M): Gate {
    const g = this.of(c)
    if (g.probe === c || !g.down) g.rounds++
    g.down = true
    return g
  }

  /** The probe (or the first of a wave) failed: rotate the probe role, park the rest. */
  retryAfter(g: Gate, c: M, delayMs: number): void {
    if (g.probe !== null && g.probe !== c) { this.park(g, c); return }
    const next = g.take() as M | null
    if (next) {
      this.unpark(next)
      this.park(g, c)
      g.probe = next
      this.host.arm(next, delayMs)
    } else {
      g.probe = c
      this.host.arm(c, delayMs)
    }
  }

  /** c stops waiting on its gate (gave up, closed, or reselected): hand the probe role on. */
  leave(c: M, delayMs: number): void {
    const g = this.gates.get(gateKey(c.cfg, c.target))
    this.unpark(c)
    if (!g) return
    if (g.probe === c) {
      g.probe = null
      const next = g.take() as M | null
      if (next) { this.unpark(next); g.probe = next; this.host.arm(next, delayMs) }
    }
    // Nobody waits on it any more: forget that it was down (the next connection tries at once).
    if (g.probe === null && !g.waiting) { g.down = false; g.rounds = 0 }
    this.tidy(g)
  }

  /** A connection to c's target became ready: open its gate and release everyone parked there. */
  opened(c: M): void {
    const g = this.gates.get(gateKey(c.cfg, c.target))
    if (!g) return
    if (g.down) {
      g.down = false
      g.rounds = 0
      g.probe = null
      for (const p of g.takeAll() as M[]) {
        this.unpark(p)
        if (!p.final && p.isParked) this.host.admit(p)
      }
    }
    this.tidy(g)
  }

  /** maxAttempts rounds failed: the target is dead for this spec — one verdict for all waiting. */
  dead(g: Gate, c: M, error: Error): void {
    const waiting = g.takeAll() as M[]
    g.down = false
    g.rounds = 0
    g.probe = null
    c.giveUp(error)
    for (const p of waiting) {
      this.unpark(p)
      if (p !== c && p.isParked) p.giveUp(error)
    }
    this.tidy(g)
  }

  /** Stop: forget every gate (parked connections are closed by the manager). */
  clear(): void {
    this.gates.clear()
    this.host.gatesChanged(0)
    this.parkedCount = 0
    this.host.parkedChanged(0)
  }
}

function gateKey(cfg: NormalizedConnect, t: Target): string {
  const r = cfg.retry
  return `${t.host}:${t.port}|${cfg.protocol}|${r.baseMs},${r.capMs},${r.maxAttempts},${r.jitter}`
}
