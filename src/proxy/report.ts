// What the proxy tells people and machines, read from shared memory in the main thread: the
// live status line (a terminal), --stats-json lines, and the Prometheus text of --metrics.
// No I/O here (main.ts writes and serves the strings).
//
// Why not prom-client: its registry lives in one thread and is fed by calls where things happen,
// but our counters are written by the shards into SharedArrayBuffers (single writer per row, no
// messages), so every metric would be a collect() callback reading those buffers and the library
// would only format text; its aggregation across processes is for node:cluster over IPC, not for
// worker threads; and the package ships with no runtime dependencies (scripts/pack-smoke.sh
// checks it). The text format (version 0.0.4) is a few lines below.

import { COUNTER_NAMES, type Engine, type EngineStats } from '../index.ts'
import { STATE_NAMES, UP, type BackendTable, type BackendState } from './table.ts'
import { BC, SC, type ProxyStats } from './stats.ts'

/** A configured backend as main tracks it. */
export interface BackendView { slot: number; host: string; port: number }

export interface Sample {
  at: number
  clientsAccepted: number
  clientsActive: number
  clientsNoBackend: number
  redispatches: number
  connectFailures: number
  bytesFromClients: number
  bytesToClients: number
  resetsForwarded: number
  loopP99Ms: number
  backends: { host: string; port: number; state: typeof STATE_NAMES[number]; active: number; connections: number; failures: number }[]
}

/** Everything the reports need, read now. `baseline` per slot: counters of a previous owner of the slot. */
export function sample(stats: ProxyStats, table: BackendTable, backends: readonly BackendView[], engineStats: EngineStats,
  baseline: (slot: number, c: number) => number): Sample {
  const t = stats.totals()
  return {
    at: performance.now(),
    clientsAccepted: t.clientsAccepted,
    clientsActive: t.clientsActive,
    clientsNoBackend: t.clientsNoBackend,
    redispatches: t.redispatches,
    connectFailures: t.connectFailures,
    bytesFromClients: t.bytesFromClients,
    bytesToClients: t.bytesToClients,
    resetsForwarded: t.resetsForwarded,
    loopP99Ms: engineStats.loopDelayP99Ms,
    backends: backends.map((b) => ({
      host: b.host, port: b.port,
      state: STATE_NAMES[table.state(b.slot)],
      active: stats.sumBackend(b.slot, BC.active),
      connections: stats.sumBackend(b.slot, BC.connections) - baseline(b.slot, BC.connections),
      failures: stats.sumBackend(b.slot, BC.failures) - baseline(b.slot, BC.failures),
    })),
  }
}

export interface Rates { newPerSec: number; inMbps: number; outMbps: number }

export function rates(prev: Sample | null, cur: Sample): Rates {
  if (!prev) return { newPerSec: 0, inMbps: 0, outMbps: 0 }
  const dt = Math.max(1e-3, (cur.at - prev.at) / 1000)
  return {
    newPerSec: (cur.clientsAccepted - prev.clientsAccepted) / dt,
    inMbps: ((cur.bytesFromClients - prev.bytesFromClients) * 8) / 1e6 / dt,
    outMbps: ((cur.bytesToClients - prev.bytesToClients) * 8) / 1e6 / dt,
  }
}

const upCount = (s: Sample) => s.backends.filter((b) => b.state === 'up').length

/** The one-line live status (a terminal's stderr). */
export function statusLine(s: Sample, r: Rates): string {
  const mbps = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1))
  return `conns ${s.clientsActive}  new/s ${Math.round(r.newPerSec)}  in ${mbps(r.inMbps)} Mbit/s  out ${mbps(r.outMbps)} Mbit/s  ` +
    `backends ${upCount(s)}/${s.backends.length} up  loop p99 ${s.loopP99Ms.toFixed(1)} ms`
}

/** One --stats-json line. */
export function statsJson(s: Sample, r: Rates): string {
  const round = (x: number, d = 3) => Number(x.toFixed(d))
  return JSON.stringify({
    stats: {
      time: new Date().toISOString(),
      connections: s.clientsActive,
      newPerSec: round(r.newPerSec, 1),
      inMbps: round(r.inMbps),
      outMbps: round(r.outMbps),
      backendsUp: upCount(s),
      backendsTotal: s.backends.length,
      loopP99Ms: round(s.loopP99Ms),
      clientsTotal: s.clientsAccepted,
      clientsNoBackend: s.clientsNoBackend,
      redispatches: s.redispatches,
      connectFailures: s.connectFailures,
      resetsForwarded: s.resetsForwarded,
      bytesIn: s.bytesFromClients,
      bytesOut: s.bytesToClients,
      backends: s.backends,
    },
  })
}

// ---------------- Prometheus text format 0.0.4 ----------------

type Kind = 'counter' | 'gauge'
class Exposition {
  private out: string[] = []
  metric(name: string, kind: Kind, help: string, series: [labels: Record<string, string> | null, value: number][]): void {
    this.out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${kind}`)
    for (const [labels, value] of series) this.out.push(`${name}${labelText(labels)} ${num(value)}`)
  }
  text(): string { return this.out.join('\n') + '\n' }
}

function labelText(labels: Record<string, string> | null): string {
  if (!labels) return ''
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
  return `{${parts.join(',')}}`
}
function num(v: number): string {
  return Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN'
}

/** engine counters that are levels, not running totals */
const ENGINE_GAUGES = new Set(['active', 'connecting', 'listeners', 'connectsInFlight', 'pendingConnects', 'parked', 'serverConns', 'gates',
  'loopDelayP50Ms', 'loopDelayP99Ms', 'loopDelayMaxMs', 'reconnectLatencyMaxMs', 'shardsDown'])
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

export interface MetricsInput {
  stats: ProxyStats
  table: BackendTable
  backends: readonly BackendView[]
  engine: Engine
  baseline: (slot: number, c: number) => number
  reloads: number
  reloadFailures: number
  startedAt: number
}

/** The --metrics page. Names are documented in docs/proxy.md. */
export function metricsText(m: MetricsInput): string {
  const { stats, table } = m
  const x = new Exposition()
  const t = stats.totals()
  x.metric('syncsock_proxy_clients_active', 'gauge', 'Client connections open now.', [[null, t.clientsActive]])
  x.metric('syncsock_proxy_clients_total', 'counter', 'Client connections accepted.', [[null, t.clientsAccepted]])
  x.metric('syncsock_proxy_clients_no_backend_total', 'counter', 'Clients closed because no backend answered (or none was up).', [[null, t.clientsNoBackend]])
  x.metric('syncsock_proxy_redispatches_total', 'counter', 'Connects to another backend after a failed one.', [[null, t.redispatches]])
  x.metric('syncsock_proxy_connect_failures_total', 'counter', 'Backend connects that failed.', [[null, t.connectFailures]])
  x.metric('syncsock_proxy_resets_forwarded_total', 'counter', 'RSTs from one side passed on as an RST to the other.', [[null, t.resetsForwarded]])
  x.metric('syncsock_proxy_upstreams_active', 'gauge', 'Backend connections connecting or open now.', [[null, stats.sum(SC.upstreamsActive)]])
  x.metric('syncsock_proxy_bytes_total', 'counter', 'Bytes forwarded, by direction.', [
    [{ direction: 'client_to_backend' }, t.bytesFromClients],
    [{ direction: 'backend_to_client' }, t.bytesToClients],
  ])
  const b = (v: BackendView) => ({ backend: `${v.host}:${v.port}` })
  x.metric('syncsock_proxy_backend_up', 'gauge', 'Backend health: 1 up, 0 down or not checked yet.', m.backends.map((v) => [b(v), table.state(v.slot) === UP ? 1 : 0]))
  x.metric('syncsock_proxy_backend_state', 'gauge', 'Backend health state (1 for the current one).',
    m.backends.flatMap((v) => STATE_NAMES.map((name, i) => [{ ...b(v), state: name }, table.state(v.slot) === (i as BackendState) ? 1 : 0] as [Record<string, string>, number])))
  x.metric('syncsock_proxy_backend_active_connections', 'gauge', 'Connections to the backend, connecting or open.', m.backends.map((v) => [b(v), stats.sumBackend(v.slot, BC.active)]))
  const since = (v: BackendView, c: number) => stats.sumBackend(v.slot, c) - m.baseline(v.slot, c)
  x.metric('syncsock_proxy_backend_connections_total', 'counter', 'Connects to the backend that succeeded.', m.backends.map((v) => [b(v), since(v, BC.connections)]))
  x.metric('syncsock_proxy_backend_connect_failures_total', 'counter', 'Connects to the backend that failed.', m.backends.map((v) => [b(v), since(v, BC.failures)]))
  x.metric('syncsock_proxy_backend_checks_total', 'counter', 'Health checks of the backend, by result.', m.backends.flatMap((v) => [
    [{ ...b(v), result: 'ok' }, since(v, BC.checksOk)],
    [{ ...b(v), result: 'failed' }, since(v, BC.checksFailed)],
  ] as [Record<string, string>, number][]))
  x.metric('syncsock_proxy_backends', 'gauge', 'Backends configured.', [[null, m.backends.length]])
  x.metric('syncsock_proxy_config_reloads_total', 'counter', 'SIGHUP reloads, by result.', [[{ result: 'ok' }, m.reloads], [{ result: 'failed' }, m.reloadFailures]])
  x.metric('syncsock_proxy_shards', 'gauge', 'Shards (worker threads).', [[null, m.engine.shardCount]])

  // the engine's own counters, summed over threads; per-shard loop delay
  const es = m.engine.stats()
  for (const name of COUNTER_NAMES) {
    const gauge = ENGINE_GAUGES.has(name)
    const ms = name.endsWith('Ms')
    const metric = `syncsock_engine_${snake(ms ? name.slice(0, -2) : name)}${ms ? '_seconds' : ''}${gauge ? '' : '_total'}`
    const v = es[name]
    x.metric(metric, gauge ? 'gauge' : 'counter', `engine counter ${name} (docs/operations.md).`, [[null, ms ? v / 1000 : v]])
  }
  x.metric('syncsock_engine_shard_loop_delay_p99_seconds', 'gauge', 'Event-loop delay p99 of each shard.',
    es.shards.map((s, i) => [{ shard: String(i) }, s.loopDelayP99Ms / 1000]))

  const mem = process.memoryUsage()
  const cpu = process.cpuUsage()
  x.metric('process_cpu_seconds_total', 'counter', 'User and system CPU time of the process (every thread).', [[null, (cpu.user + cpu.system) / 1e6]])
  x.metric('process_resident_memory_bytes', 'gauge', 'Resident memory size.', [[null, mem.rss]])
  x.metric('process_start_time_seconds', 'gauge', 'Start time of the process since the Unix epoch.', [[null, Math.round(m.startedAt / 1000)]])
  return x.text()
}
