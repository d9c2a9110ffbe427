// runProxy: the proxy's main thread. Starts the engine with the proxy's hooks in every shard,
// opens the listener on every shard, keeps the backend table (table.ts) and the backends'
// health connections in step with the configuration, reports (report.ts), and handles signals:
//
//   start ─▶ serving ──SIGHUP──▶ reload (table + health connections; live connections untouched)
//               │
//               └──SIGTERM/SIGINT──▶ draining: listener closed, wait until no client is left
//                                    or --grace passed (a second signal ends the wait)
//                                    ─▶ engine.stop() ─▶ metrics/timers closed ─▶ done (exit 0)
//
// Uses only the public API (src/index.ts). Never touches a socket: shards own them (O1).

import { createServer, type Server } from 'node:http'
import { availableParallelism } from 'node:os'
import { Engine, SyncsockError } from '../index.ts'
import { changedKeys, RELOADABLE, type HostPort, type ProxyConfig } from './config.ts'
import { BackendTable, HEALTH_NONE, HEALTH_PENDING, MAX_BACKENDS, type Member, type TableSettings } from './table.ts'
import { ProxyStats, SC, BACKEND_COUNTERS } from './stats.ts'
import { CLIENT_PROTOCOL, healthProtocol, type ProxyShardConfig } from './contract.ts'
import { metricsText, rates, sample, statsJson, statusLine, type BackendView, type Sample } from './report.ts'

/** Where the proxy writes, and how it reloads. */
export interface ProxyIo {
  /** stdout: the first JSON line and --stats-json lines */
  out(line: string): void
  /** stderr: human-readable events */
  err(line: string): void
  /** draw the live status line on stderr (a terminal) */
  tty: boolean
  /** install SIGTERM/SIGINT/SIGHUP handlers (default true) */
  signals?: boolean
  /** SIGHUP: produce the new configuration (re-read --config, flags over it); null: nothing to reload */
  reload?: (() => Promise<ProxyConfig>) | null
}

export interface RunningProxy {
  readonly engine: Engine
  readonly listening: HostPort
  readonly metrics: HostPort | null
  /** Stop accepting, drain up to graceMs, stop. Idempotent; a second call ends the drain wait. */
  stop(why?: string): Promise<void>
  /** Apply a new configuration (what SIGHUP does). Resolves false (and logs why) if it was refused. */
  reload(next?: ProxyConfig): Promise<boolean>
  /** resolves once stopped */
  readonly done: Promise<void>
}

/** Socket water marks of both ends of a proxied connection: per-connection buffering is bounded by these. */
const HIGH_WATER = 256 << 10
const LOW_WATER = 64 << 10
/** client bytes kept while the upstream connects before the client is paused */
const PENDING_LIMIT = 256 << 10
/** how long engine.stop waits without progress (after the drain) before it aborts what is left */
const STOP_GRACE_MS = 1000

const DRAIN_POLL_MS = 50

interface SlotInfo { host: string; port: number; healthId: number | null }

/** Main's side of the backend table: which backend holds which slot, and their health connections. */
class Backends {
  readonly table = BackendTable.create()
  readonly slots: (SlotInfo | null)[] = new Array(MAX_BACKENDS).fill(null)
  /** per slot: when its backend was removed (reuse the longest-free first); undefined: never used */
  private readonly freedAt: (number | undefined)[] = new Array(MAX_BACKENDS).fill(undefined)
  /** per slot, per backend counter: the sums when the current backend took the slot */
  private readonly base: number[][] = Array.from({ length: MAX_BACKENDS }, () => new Array(BACKEND_COUNTERS.length).fill(0))
  /** the configured backends in order */
  list: BackendView[] = []

  baseline = (slot: number, c: number): number => this.base[slot][c]

  /**
   * Make the table say `wanted` (in order), keeping the slot of every backend that stays. Returns
   * what main must do: health connections to open (added) and to close (removed).
   */
  apply(wanted: readonly HostPort[], settings: TableSettings, stats: ProxyStats | null): { added: BackendView[]; removed: SlotInfo[] } {
    const key = (h: HostPort) => `${h.host}:${h.port}`
    const current = new Map<string, number>()
    this.slots.forEach((s, i) => { if (s) current.set(key(s), i) })
    const keep = new Set(wanted.map(key))
    const removed: SlotInfo[] = []
    for (const [k, slot] of current) {
      if (keep.has(k)) continue
      removed.push(this.slots[slot]!)
      this.slots[slot] = null
      this.freedAt[slot] = Date.now()
      this.table.setHealthId(slot, HEALTH_NONE)
    }
    const added: BackendView[] = []
    const members: Member[] = wanted.map((h) => {
      let slot = current.get(key(h))
      if (slot === undefined || this.slots[slot] === null) {
        slot = this.freeSlot()
        this.slots[slot] = { host: h.host, port: h.port, healthId: null }
        this.table.resetSlot(slot)
        if (stats) this.base[slot] = BACKEND_COUNTERS.map((_, c) => stats.sumBackend(slot!, c))
        added.push({ slot, host: h.host, port: h.port })
      }
      return { slot, host: h.host, port: h.port, key: key(h) }
    })
    this.table.publish(members, settings)
    this.list = members.map((m) => ({ slot: m.slot, host: m.host, port: m.port }))
    return { added, removed }
  }

  /** A never-used slot first, else the one free the longest (its last upstreams are most likely gone). */
  private freeSlot(): number {
    let best = -1
    for (let s = 0; s < MAX_BACKENDS; s++) {
      if (this.slots[s] !== null) continue
      if (this.freedAt[s] === undefined) return s
      if (best < 0 || this.freedAt[s]! < this.freedAt[best]!) best = s
    }
    if (best < 0) throw new Error(`no free backend slot (at most ${MAX_BACKENDS})`)
    return best
  }
}

const settingsOf = (c: ProxyConfig): TableSettings =>
  ({ balance: c.balance, retries: c.retries, connectTimeoutMs: c.connectTimeoutMs, healthIntervalMs: c.healthIntervalMs })

/** The hooks module next to this file: hooks.ts from the sources, hooks.js from the build (no TypeScript in shards then). */
function hooksUrl(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './hooks.ts' : './hooks.js', import.meta.url)
}

export async function runProxy(initial: ProxyConfig, io: ProxyIo): Promise<RunningProxy> {
  let cfg = initial
  const shards = cfg.shards === 'auto' ? Math.min(255, availableParallelism()) : cfg.shards
  const backends = new Backends()
  const stats = ProxyStats.create(shards, MAX_BACKENDS)
  backends.apply(cfg.backends, settingsOf(cfg), stats)
  const shared: ProxyShardConfig = {
    table: backends.table.sab, stats: stats.sab, shards, highWater: HIGH_WATER, lowWater: LOW_WATER, pendingLimit: PENDING_LIMIT,
  }
  const engine = await Engine.start({ shards, hooks: hooksUrl(), config: shared, highWater: HIGH_WATER, lowWater: LOW_WATER })
  engine.on('hook-error', (d: { protocol?: string; hook?: string; message?: string }) => io.err(`hook error in ${d.protocol}.${d.hook}: ${d.message}`))
  for (const ev of ['shard-exit', 'shard-restart', 'shard-down', 'shard-error', 'listener-error', 'slots-exhausted']) {
    engine.on(ev, (d: unknown) => io.err(`${ev}: ${JSON.stringify(d)}`))
  }
  engine.on('dead', () => {}) // health connections never give up (no maxAttempts); nothing to report

  let listener: Awaited<ReturnType<Engine['listen']>>
  let metricsServer: Server | null = null
  let metricsAt: HostPort | null = null
  const startedAt = Date.now()
  let reloads = 0
  let reloadFailures = 0
  try {
    listener = await engine.listen({ host: cfg.listen.host, port: cfg.listen.port, protocol: CLIENT_PROTOCOL, highWater: HIGH_WATER, lowWater: LOW_WATER })
    for (const b of backends.list) await openHealth(b)
    if (cfg.metrics) {
      metricsServer = createServer((req, res) => {
        if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD' }).end(); return }
        if (req.url !== '/metrics' && !req.url?.startsWith('/metrics?')) { res.writeHead(404, { 'content-type': 'text/plain' }).end('syncsock proxy: metrics are at /metrics\n'); return }
        const body = metricsText({
          stats, table: backends.table, backends: backends.list, engine,
          baseline: backends.baseline, reloads, reloadFailures, startedAt,
        })
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(req.method === 'HEAD' ? undefined : body)
      })
      metricsAt = await new Promise<HostPort>((resolve, reject) => {
        metricsServer!.once('error', (e) => reject(new SyncsockError('ERR_SS_LISTEN', `--metrics ${cfg.metrics!.host}:${cfg.metrics!.port}: cannot listen (${(e as { code?: string }).code ?? e.message})`)))
        metricsServer!.listen(cfg.metrics!.port, cfg.metrics!.host, () => {
          const a = metricsServer!.address() as { address: string; port: number }
          resolve({ host: a.address, port: a.port })
        })
      })
    }
  } catch (e) {
    metricsServer?.close()
    await engine.stop({ graceMs: 0 }) // the shards would otherwise keep the process alive
    throw e
  }

  /** One persistent connection per backend, made by main, owned by one shard (round robin). */
  async function openHealth(b: BackendView): Promise<void> {
    const info = backends.slots[b.slot]
    if (!info) return
    try {
      const [id] = await engine.connect({
        host: b.host, port: b.port, protocol: healthProtocol(b.slot), count: 1,
        connectTimeoutMs: Math.min(cfg.connectTimeoutMs, cfg.healthIntervalMs * 2),
        retry: { baseMs: Math.min(100, cfg.healthIntervalMs), capMs: cfg.healthIntervalMs },
        liveness: { intervalMs: cfg.healthIntervalMs, timeoutMs: cfg.healthIntervalMs },
      })
      if (backends.slots[b.slot] !== info) { engine.close(id, 'abort'); return } // removed meanwhile
      info.healthId = id
      backends.table.setHealthId(b.slot, BigInt(id))
    } catch (e) {
      io.err(`backend ${b.host}:${b.port}: cannot start its health checks: ${(e as Error).message}`)
    }
  }

  // ---------------- the first line, then reports ----------------

  io.out(JSON.stringify({
    listening: { host: listener.host, port: listener.port },
    shards: engine.shardCount,
    pid: process.pid,
    backends: cfg.backends,
    metrics: metricsAt,
  }))

  let prev: Sample | null = null
  let lastStates = new Map<string, string>()
  let statusShown = false
  const clearStatus = () => { if (statusShown) { process.stderr.write('\r\x1b[K'); statusShown = false } }
  const log = (line: string) => { clearStatus(); io.err(line) }
  /** Log backends whose health changed since the last look (a first verdict "up" included). */
  const logStates = (cur: Sample) => {
    const states = new Map<string, string>()
    for (const b of cur.backends) {
      const k = `${b.host}:${b.port}`
      states.set(k, b.state)
      const was = lastStates.get(k)
      if (b.state !== was && b.state !== 'unknown') log(`backend ${k} is ${b.state}${was && was !== 'unknown' ? ` (was ${was})` : ''}`)
    }
    lastStates = states
  }
  const tick = () => {
    const cur = sample(stats, backends.table, backends.list, engine.stats(), backends.baseline)
    const r = rates(prev, cur)
    prev = cur
    logStates(cur)
    if (cfg.statsJson) io.out(statsJson(cur, r))
    else if (io.tty) { process.stderr.write(`\r\x1b[K${statusLine(cur, r)}`); statusShown = true }
  }
  const ticker = setInterval(tick, 1000)
  // the first health verdicts usually land within milliseconds: report them soon, not in a second
  const firstTick = setTimeout(() => logStates(sample(stats, backends.table, backends.list, engine.stats(), backends.baseline)), 250)

  // ---------------- reload ----------------

  let stopping = false
  let reloading: Promise<boolean> = Promise.resolve(true)
  const reload = (given?: ProxyConfig): Promise<boolean> => {
    reloading = reloading.then(() => applyReload(given))
    return reloading
  }
  async function applyReload(given?: ProxyConfig): Promise<boolean> {
    if (stopping) return false
    let next: ProxyConfig
    try {
      if (given) next = given
      else if (io.reload) next = await io.reload()
      else { log('reload: nothing to reload (no --config)'); return false }
    } catch (e) {
      reloadFailures++
      log(`reload failed, still serving the previous configuration: ${(e as Error).message}`)
      return false
    }
    const changed = changedKeys(cfg, next)
    const fixed = changed.filter((k) => !(RELOADABLE as readonly string[]).includes(k) && k !== 'configFile')
    if (fixed.length > 0) log(`reload: ${fixed.join(', ')} changed; that needs a restart (kept as it was)`)
    const kept: ProxyConfig = { ...cfg }
    for (const k of RELOADABLE) (kept as unknown as Record<string, unknown>)[k] = next[k]
    const healthChanged = kept.healthIntervalMs !== cfg.healthIntervalMs || kept.connectTimeoutMs !== cfg.connectTimeoutMs
    const { added, removed } = backends.apply(kept.backends, settingsOf(kept), stats)
    cfg = kept
    for (const r of removed) if (r.healthId !== null) engine.close(r.healthId, 'abort')
    // new health settings: re-create every health connection (the table keeps the verdicts)
    const renew = healthChanged ? backends.list.filter((b) => !added.some((a) => a.slot === b.slot)) : []
    for (const b of renew) {
      const info = backends.slots[b.slot]!
      const old = info.healthId
      info.healthId = null
      if (old !== null) engine.close(old, 'abort')
      backends.table.setHealthId(b.slot, HEALTH_PENDING)
    }
    for (const b of [...added, ...renew]) await openHealth(b)
    reloads++
    const applied = changed.filter((k) => (RELOADABLE as readonly string[]).includes(k))
    log(`reloaded${cfg.configFile ? ` ${cfg.configFile}` : ''}: ${applied.length ? applied.join(', ') : 'no change'}` +
      `${added.length ? `; added ${added.map((b) => `${b.host}:${b.port}`).join(' ')}` : ''}` +
      `${removed.length ? `; removed ${removed.map((b) => `${b.host}:${b.port}`).join(' ')} (their connections finish)` : ''}`)
    return true
  }

  // ---------------- stop ----------------

  let endDrain: () => void = () => {}
  let resolveDone!: () => void
  const done = new Promise<void>((r) => { resolveDone = r })
  let stopPromise: Promise<void> | null = null

  const stop = (why = 'stop'): Promise<void> => {
    if (stopPromise) { endDrain(); return stopPromise }
    stopping = true
    stopPromise = (async () => {
      await listener.close()
      const open = stats.sum(SC.clientsActive)
      log(`${why}: not accepting; ${open > 0 ? `draining ${open} connection${open === 1 ? '' : 's'} for up to ${cfg.graceMs} ms (${why} again to stop now)` : 'no connections open'}`)
      const deadline = Date.now() + cfg.graceMs
      await new Promise<void>((resolve) => {
        endDrain = resolve
        const poll = () => {
          if (stats.sum(SC.clientsActive) <= 0 || Date.now() >= deadline) { resolve(); return }
          setTimeout(poll, DRAIN_POLL_MS)
        }
        poll()
      })
      const left = stats.sum(SC.clientsActive)
      clearInterval(ticker)
      clearTimeout(firstTick)
      await reloading.catch(() => {})
      await engine.stop({ graceMs: STOP_GRACE_MS })
      if (metricsServer) {
        const closed = new Promise<void>((r) => metricsServer!.close(() => r()))
        metricsServer.closeAllConnections()
        await closed
      }
      removeSignals()
      clearStatus()
      const t = stats.totals()
      log(`stopped: ${t.clientsAccepted} clients served, ${left} closed at the end of the grace period, ` +
        `${t.clientsNoBackend} found no backend, ${t.redispatches} redispatched`)
      resolveDone()
    })()
    return stopPromise
  }

  const onTerm = () => { void stop('SIGTERM') }
  const onInt = () => { void stop('SIGINT') }
  const onHup = () => { void reload() }
  const removeSignals = () => {
    process.off('SIGTERM', onTerm)
    process.off('SIGINT', onInt)
    process.off('SIGHUP', onHup)
  }
  if (io.signals !== false) {
    process.on('SIGTERM', onTerm)
    process.on('SIGINT', onInt)
    process.on('SIGHUP', onHup)
  }

  return {
    engine,
    listening: { host: listener.host, port: listener.port },
    metrics: metricsAt,
    stop,
    reload: (next?: ProxyConfig) => reload(next),
    done,
  }
}

