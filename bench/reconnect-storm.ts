// Reconnect storm (issue 4; Icinga #6517, Tempesta #2588/#2599): N persistent connections to
// loopback listeners in their own process; the server drops them all at once and we measure how
// the client gets them back — syncsock against two plain Node clients, in the same run:
//   A  server destroys every accepted socket at once             time until all N are up again
//   B  listeners closed for a 2 s gap (sockets destroyed too)    time, attempts per endpoint
//   C  client stop() mid-storm (half back), then watch 10 s      accepts at the server, handles
//                                                                left, exit within 1 s
//   D  1,000 connections whose server goes silent (blackhole)    liveness detection time
// Every process is separate (`ulimit -n` is 20,000 per process): this one only orchestrates over
// IPC; the server is bench/servers/storm-server.ts, the clients storm-syncsock-client.ts and
// storm-node-client.ts (naive: reconnect on 'close'; backoff: full jitter 1 s base / 30 s cap).
// Kernel listen overflows come from `nstat` (system-wide: other processes on the box count too).
//   node_modules/.bin/node bench/reconnect-storm.ts [--quick] [--only A,B,C,D] [--n 1000,5000]
//        [--clients syncsock,syncsock-defaults,naive,backoff] [--repeat 3] [--max-in-flight 256]
//        [--base-ms 300] [--cap-ms 10000] [--jitter full] [--connect-timeout-ms 5000] [--no-write]
import { fork, execFileSync, type ChildProcess } from 'node:child_process'
import { readFileSync, existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { performance } from 'node:perf_hooks'
import { loadavg } from 'node:os'
import { parseBenchArgs, machine, machineLine, table, writeResults } from './lib.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const now = (): number => performance.timeOrigin + performance.now()

// ---------------------------------------------------------------- options

const ARGS = parseBenchArgs()
const flag = (k: string): string | undefined => typeof ARGS.flags[k] === 'string' ? ARGS.flags[k] as string : undefined
const argv = {
  only: flag('only'), n: flag('n'), clients: flag('clients'), 'max-in-flight': flag('max-in-flight'),
  'base-ms': flag('base-ms'), 'cap-ms': flag('cap-ms'), jitter: flag('jitter'),
  'connect-timeout-ms': flag('connect-timeout-ms'), repeat: flag('repeat'), 'no-write': ARGS.flags['no-write'] === true,
}
const QUICK = ARGS.quick
const num = (name: string, v: string | undefined, dflt: number): number => {
  if (v === undefined) return dflt
  const x = Number(v)
  if (!Number.isInteger(x) || x < 1) throw new Error(`--${name} must be a positive integer; got ${v}`)
  return x
}

const PORTS = 4 // listeners: 2,500 each at N = 10,000, well under the 4,096 backlog
const BACKLOG = 4096
const GAP_MS = 2000
const LIVENESS_N = 1000
const STOP_WATCH_MS = QUICK ? 2000 : 10_000
/** --quick: how long A/B wait for all N after the trigger before reporting "> limit" */
const QUICK_LIMIT_MS = 6000
/** A and B run this many times, interleaved over the clients; the table shows the median run. */
const REPEAT = num('repeat', argv.repeat, QUICK ? 1 : 3)
const SIZES = argv.n ? argv.n.split(',').map((s) => num('n', s, 0)) : QUICK ? [1000, 5000] : [1000, 5000, 10_000]
const SIZES_B = argv.n ? SIZES : QUICK ? [1000] : SIZES
const SIZES_C = argv.n ? SIZES : QUICK ? [1000] : SIZES
const SCENARIOS = (argv.only ?? 'A,B,C,D').split(',').map((s) => s.trim().toUpperCase())
// syncsock = tuned as below; syncsock-defaults = the same engine with the stock retry policy (only
// differs once connects fail, so it runs in B only); naive / backoff = the plain Node baselines.
type ClientKey = 'syncsock' | 'syncsock-defaults' | 'naive' | 'backoff'
const ALL_CLIENTS: ClientKey[] = ['syncsock', 'syncsock-defaults', 'naive', 'backoff']
const CLIENTS = (argv.clients ?? ALL_CLIENTS.join(',')).split(',').map((s) => s.trim()) as ClientKey[]
for (const c of CLIENTS) if (!ALL_CLIENTS.includes(c)) throw new Error(`--clients: unknown ${c} (${ALL_CLIENTS.join(', ')})`)
const isSyncsock = (c: ClientKey): boolean => c === 'syncsock' || c === 'syncsock-defaults'

/** syncsock as a user would tune it for this job (see the README section for why). */
const SYNCSOCK = {
  engine: { shards: 2, maxConnectsInFlight: num('max-in-flight', argv['max-in-flight'], 256) },
  connect: {
    retry: {
      baseMs: num('base-ms', argv['base-ms'], 300),
      capMs: num('cap-ms', argv['cap-ms'], 10_000),
      jitter: (argv.jitter ?? 'full') as 'full' | 'decorrelated',
      // The bench's connections are up ~1 s when the server drops them; with the default 5 s an
      // incarnation that short counts as flapping and its first reconnect waits up to 2 x baseMs.
      resetAfterMs: 400,
    },
    liveness: { intervalMs: 2000, timeoutMs: 1000, misses: 1 },
    connectTimeoutMs: num('connect-timeout-ms', argv['connect-timeout-ms'], 5000),
  },
}
const BACKOFF = { baseMs: 1000, capMs: 30_000 }

// Run the children on the pinned node: this process if it is that node, else node_modules/.bin.
const PINNED = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { devDependencies?: Record<string, string> })
  .devDependencies?.node
const NODE = PINNED === undefined || process.versions.node === PINNED ? process.execPath : join(ROOT, 'node_modules/.bin/node')

// Every child holds up to N = 10,000 sockets. Node raises its own soft RLIMIT_NOFILE to the hard
// limit at startup (checked: `ulimit -Sn 4096` still gives 20,000 inside node), so nothing to
// raise here; with a hard limit below what N = 10,000 needs, say so.
function fdLimits(): { soft: number; hard: number } {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    const v = (x: string | undefined): number => x === undefined || x === 'unlimited' ? Infinity : Number(x)
    return { soft: v(m?.[1]), hard: v(m?.[2]) }
  } catch { return { soft: Infinity, hard: Infinity } }
}
const FD = fdLimits()

// ---------------------------------------------------------------- kernel listen overflows

let NSTAT: string | null = null
function findNstat(): string | null {
  for (const p of ['/usr/bin/nstat', '/sbin/nstat', '/usr/sbin/nstat', '/bin/nstat']) if (existsSync(p)) return p
  if (process.getuid?.() === 0) {
    try {
      console.log('nstat missing: apt-get install -y iproute2')
      execFileSync('apt-get', ['install', '-y', '-qq', 'iproute2'], { stdio: 'ignore', timeout: 120_000 })
    } catch { /* fall through: skipped with a note */ }
    for (const p of ['/usr/bin/nstat', '/sbin/nstat', '/usr/sbin/nstat', '/bin/nstat']) if (existsSync(p)) return p
  }
  return null
}

/** Absolute counters; -s keeps nstat's history file untouched (we diff ourselves). */
function listenCounters(): { overflows: number; drops: number } | null {
  if (!NSTAT) return null
  try {
    const out = execFileSync(NSTAT, ['-asz', 'TcpExtListenOverflows', 'TcpExtListenDrops'], { encoding: 'utf8', timeout: 5000 })
    const get = (k: string): number => Number(new RegExp(`^${k}\\s+(\\d+)`, 'm').exec(out)?.[1] ?? 0)
    return { overflows: get('TcpExtListenOverflows'), drops: get('TcpExtListenDrops') }
  } catch { return null }
}

// ---------------------------------------------------------------- child processes

const live = new Set<ChildProcess>()
process.on('exit', () => { for (const c of live) c.kill('SIGKILL') })
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: killing the bench's children`)
    for (const c of live) c.kill('SIGKILL')
    process.exit(130)
  })
}
process.on('uncaughtException', (e) => { console.error(e); for (const c of live) c.kill('SIGKILL'); process.exit(1) })

type Msg = { t: string; req?: number; kind?: string; at?: number; message?: string; [k: string]: unknown }

/** A forked child spoken to over IPC: numbered requests with timeouts, and named events. */
class Child {
  readonly proc: ChildProcess
  readonly name: string
  exitedAt = 0
  readonly exited: Promise<number | null>
  private nextReq = 1
  private readonly pending = new Map<number, { resolve: (m: Msg) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private readonly events: Msg[] = []
  private readonly waiters: { kind: string; resolve: (m: Msg) => void }[] = []

  constructor(script: string, name: string) {
    this.name = name
    const file = join(ROOT, 'bench', 'servers', script)
    this.proc = fork(file, [], { execPath: NODE, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    live.add(this.proc)
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code) => {
        this.exitedAt = now()
        live.delete(this.proc)
        for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(new Error(`${name} exited (code ${code})`)) }
        this.pending.clear()
        resolve(code)
      })
    })
    this.proc.on('message', (m: Msg) => {
      if (m.t === 'event') {
        const i = this.waiters.findIndex((w) => w.kind === m.kind)
        if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m)
        else this.events.push(m)
        return
      }
      const p = this.pending.get(m.req ?? -1)
      if (!p) return
      this.pending.delete(m.req!)
      clearTimeout(p.timer)
      if (m.t === 'ok') p.resolve(m)
      else p.reject(new Error(`${name}: ${m.message}`))
    })
    this.proc.on('error', () => {})
  }

  req(cmd: Record<string, unknown>, timeoutMs = 30_000): Promise<Msg> {
    const req = this.nextReq++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(req); reject(new Error(`${this.name}: ${String(cmd.t)} timed out after ${timeoutMs} ms`)) }, timeoutMs)
      this.pending.set(req, { resolve, reject, timer })
      this.proc.send({ ...cmd, req })
    })
  }

  /** The next event of this kind, or null after timeoutMs. */
  event(kind: string, timeoutMs: number): Promise<Msg | null> {
    const i = this.events.findIndex((e) => e.kind === kind)
    if (i >= 0) return Promise.resolve(this.events.splice(i, 1)[0])
    return new Promise((resolve) => {
      const w = { kind, resolve: (m: Msg | null) => { clearTimeout(timer); resolve(m) } }
      const timer = setTimeout(() => {
        const j = this.waiters.indexOf(w as never)
        if (j >= 0) this.waiters.splice(j, 1)
        resolve(null)
      }, timeoutMs)
      this.waiters.push(w as never)
    })
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return
    this.proc.kill('SIGKILL')
    await Promise.race([this.exited, sleep(5000)])
  }
}

// ---------------------------------------------------------------- one run

interface Row {
  scenario: string; client: ClientKey; n: number
  timeToAllBackMs: number | null; timedOutAfterMs?: number
  serverFullMs?: number | null
  attempts: number; attemptsPerEndpoint: number
  /** syncsock: the most attempts any one endpoint needed (from the retry hook's attempt count) */
  maxAttemptsPerEndpoint?: number | null
  errors: number; errorCauses: Record<string, number>
  listenOverflows: number | null; listenDrops: number | null
  /** the longest event-loop delay since the storm was armed (syncsock: the worst shard) */
  maxLoopBlockMs: number
  /** syncsock: the shards' published loopDelayMaxMs (engine lifetime: start + initial connect too) */
  loopDelayLifetimeMs?: number
  serverLoopBlockMs?: number
  initialConnectMs?: number
  /** syncsock: lifetime loopDelayMaxMs when the storm began (the initial connect, engine start) */
  loopBlockBeforeMs?: number
  loopBlockByShardMs?: number[]
  blocksByShard?: [number, number][][]
  droppedLiveness?: number
  /** how long after the trigger the counters were read (the false-down window for droppedLiveness) */
  watchedMs?: number
  reconnectLatencyMaxMs?: number
  counters?: Record<string, number>
  /** CPU of the client process since arm (all threads) and of the server since mark; preemptions */
  cpu?: Record<string, number> | null
  serverCpuMs?: number
  loadavg1?: number
  /** with --repeat: how many runs, and the fastest / slowest time (this row is the median) */
  runs?: number
  timeRangeMs?: [number | null, number | null]
  // C
  stop?: {
    stopResolveMs: number; acceptsAfterStopCall: number; acceptsAfterStopResolved: number; watchMs: number
    /** connectAttempts from a stats() snapshot taken just before stop() to after it: includes
     *  connects the shards started in that instant before they saw STOPPING (not after stop) */
    connectAttemptsAfterStop?: number
    /** the engine's F1 tripwire: connects started while STOPPING (must be 0) */
    reconnectsAfterStop?: number; establishedAfterStop?: number
    resources?: string[]; handlesLeft?: string[]; exitedAfterStopMs?: number | null; exitedWithin1s?: boolean
    backAtStop: number; inFlightAtStop?: number; pendingAtStop?: number; establishedAtStop?: number; unacceptedAtStop?: number
  }
  // D
  liveness?: { detectedMs: number | null; detected: number; allBackAfterBlackholeMs: number | null; watchMs: number }
}

const childScript = (c: ClientKey): string => isSyncsock(c) ? 'storm-syncsock-client.ts' : 'storm-node-client.ts'

async function startClient(client: ClientKey, ports: number[], n: number): Promise<{ cl: Child; init: Msg }> {
  const cl = new Child(childScript(client), client)
  const init = await cl.req(isSyncsock(client)
    ? {
        t: 'init', ports, n, engine: SYNCSOCK.engine, protocol: client === 'syncsock' ? 'storm' : 'stormDefaults',
        // syncsock-defaults: the stock retry options and no retry hook (same liveness and timeouts)
        connect: client === 'syncsock' ? SYNCSOCK.connect : { ...SYNCSOCK.connect, retry: undefined },
      }
    : { t: 'init', ports, n, mode: client, ...BACKOFF }, 120_000)
  return { cl, init }
}

function num0(o: Record<string, number> | undefined, k: string): number { return o?.[k] ?? 0 }

/** attempts, errors (failed connects + drops beyond the intended ones) and their causes. */
function tally(client: ClientKey, rep: Msg, expectDrops: number): Pick<Row, 'attempts' | 'errors' | 'errorCauses'> {
  const causes: Record<string, number> = {}
  let attempts: number, failed: number, extra: number
  if (isSyncsock(client)) {
    const d = rep.delta as Record<string, number>
    attempts = num0(d, 'connectAttempts')
    failed = num0(d, 'connectFailed')
    for (const k of ['connectFailedRefused', 'connectFailedTimeout', 'connectFailedTls', 'connectFailedOther'] as const) {
      if (d[k]) causes[k.replace('connectFailed', 'connect ').toLowerCase()] = d[k]
    }
    extra = Math.max(0, num0(d, 'dropped') - expectDrops)
    if (d.droppedLiveness) causes['drop liveness'] = d.droppedLiveness
  } else {
    attempts = rep.attempts as number
    failed = rep.connectErrors as number
    extra = Math.max(0, (rep.drops as number) - expectDrops)
    for (const [k, v] of Object.entries(rep.errorsByCode as Record<string, number>)) if (k.startsWith('connect ')) causes[k.toLowerCase()] = v
  }
  if (extra) causes['extra drops'] = extra
  return { attempts, errors: failed + extra, errorCauses: causes }
}

async function runOne(scenario: 'A' | 'B' | 'C' | 'D', client: ClientKey, n: number): Promise<Row> {
  const server = new Child('storm-server.ts', 'server')
  let cl: Child | null = null
  try {
    const { ports } = await server.req({ t: 'listen', ports: PORTS, backlog: BACKLOG }) as unknown as { ports: number[] }
    const started = await startClient(client, ports, n)
    cl = started.cl
    await sleep(500) // let the initial connect burst settle (and the shards publish their stats)
    const ns0 = listenCounters()
    await server.req({ t: 'mark', target: n })
    const watch = scenario === 'D' ? 'liveness' : 'allBack'
    const arm = await cl.req({ t: 'arm', expectDrops: n, watch })
    if (isSyncsock(client) && arm.loopResetAcks !== SYNCSOCK.engine.shards) {
      console.log(`  note: only ${String(arm.loopResetAcks)} of ${SYNCSOCK.engine.shards} shards reset their loop monitor; storm max may include earlier delays`)
    }
    const row: Row = {
      scenario, client, n, timeToAllBackMs: null, attempts: 0, attemptsPerEndpoint: 0, errors: 0, errorCauses: {},
      listenOverflows: null, listenDrops: null, maxLoopBlockMs: 0,
      initialConnectMs: started.init.initialConnectMs as number | undefined,
      loopBlockBeforeMs: arm.loopDelayMaxBeforeMs as number | undefined,
    }
    let t0 = 0
    let reportAfter = 400 // ms: the shards publish loop delay every 250 ms
    if (scenario === 'A' || scenario === 'B') {
      const limit = scenario === 'A' ? (QUICK ? QUICK_LIMIT_MS : 30_000) : (QUICK ? QUICK_LIMIT_MS : 60_000)
      const back = cl.event('allBack', limit + GAP_MS)
      const trig = scenario === 'A' ? await server.req({ t: 'drop' }) : await server.req({ t: 'gap', ms: GAP_MS }, GAP_MS + 10_000)
      t0 = trig.at as number
      const ev = await back
      if (ev) row.timeToAllBackMs = (ev.at as number) - t0
      else row.timedOutAfterMs = limit + GAP_MS
      // No false liveness verdicts: keep watching a full probe cycle (2 s + 1 s) after the drop
      // (--quick: only at the largest N).
      if (isSyncsock(client) && (!QUICK || n === Math.max(...SIZES))) reportAfter = Math.max(reportAfter, t0 + 3500 - now())
    } else if (scenario === 'C') {
      const trig = await server.req({ t: 'drop' })
      t0 = trig.at as number
      // Mid-storm: stop once half the connections are back at the server (bounded wait).
      let backAtStop = 0
      const deadline = Date.now() + 5000
      while (Date.now() < deadline) {
        const st = await server.req({ t: 'stats' })
        backAtStop = st.open as number
        if (backAtStop >= n / 2) break
        await sleep(2)
      }
      const stop = await cl.req({ t: 'stop', graceMs: 2000 }, 30_000)
      const stopAt = stop.at as number, resolvedAt = stop.resolvedAt as number
      let exitedAfterStopMs: number | null = null
      if (client === 'syncsock') {
        const code = await Promise.race([cl.exited, sleep(STOP_WATCH_MS).then(() => 'still running' as const)])
        exitedAfterStopMs = code === 'still running' ? null : cl.exitedAt - resolvedAt
      }
      await sleep(Math.max(0, stopAt + STOP_WATCH_MS - now()))
      const a = await server.req({ t: 'stats', from: stopAt, to: stopAt + STOP_WATCH_MS })
      const b = await server.req({ t: 'stats', from: resolvedAt, to: resolvedAt + STOP_WATCH_MS })
      const resources = (stop.resources as string[] | undefined) ?? []
      row.stop = {
        stopResolveMs: resolvedAt - stopAt, watchMs: STOP_WATCH_MS, backAtStop,
        acceptsAfterStopCall: a.acceptsInWindow as number, acceptsAfterStopResolved: b.acceptsInWindow as number,
      }
      if (client === 'syncsock') {
        const d = stop.delta as Record<string, number>
        const st = stop.stats as Record<string, number>
        Object.assign(row.stop, {
          connectAttemptsAfterStop: num0(d, 'connectAttempts'), reconnectsAfterStop: num0(st, 'reconnectsAfterStop'),
          establishedAfterStop: num0(d, 'establishedAfterStop'), resources,
          // The IPC channel is ours (and let go right after); anything else is the engine's.
          handlesLeft: resources.filter((r) => r !== 'PipeWrap'),
          exitedAfterStopMs, exitedWithin1s: exitedAfterStopMs !== null && exitedAfterStopMs <= 1000,
        })
        const sinceArm = stop.sinceArm as Record<string, number>
        Object.assign(row, tally(client, { t: 'ok', delta: sinceArm }, n))
        row.maxLoopBlockMs = (stop.stormLoopMaxMs as number | null) ?? num0(st, 'loopDelayMaxMs')
        row.loopDelayLifetimeMs = num0(st, 'loopDelayMaxMs')
        row.counters = sinceArm
        // Connected before stop() as far as the client knows, but not yet accepted by the server
        // process (its accept loop lags): those accepts land after the stop() call too.
        const unaccepted = Math.max(0, (stop.establishedAtStop as number) - backAtStop)
        Object.assign(row.stop, { inFlightAtStop: stop.inFlightAtStop, pendingAtStop: stop.pendingAtStop, establishedAtStop: stop.establishedAtStop, unacceptedAtStop: unaccepted })
      } else {
        const rep = await cl.req({ t: 'report' })
        Object.assign(row, tally(client, rep, n))
        row.maxLoopBlockMs = rep.loopDelayMaxMs as number
      }
      row.attemptsPerEndpoint = row.attempts / n
      const ns1 = listenCounters()
      if (ns0 && ns1) { row.listenOverflows = ns1.overflows - ns0.overflows; row.listenDrops = ns1.drops - ns0.drops }
      row.serverLoopBlockMs = a.loopDelayMaxMs as number
      return row
    } else {
      const watchMs = QUICK ? 5000 : 8000
      const detected = cl.event('detected', watchMs)
      const trig = await server.req({ t: 'blackhole' })
      t0 = trig.at as number
      const ev = client === 'syncsock' ? await detected : (await sleep(watchMs), null)
      const back = ev ? await cl.event('allBack', 15_000) : null
      row.liveness = {
        detectedMs: ev ? (ev.at as number) - t0 : null, detected: 0, watchMs,
        allBackAfterBlackholeMs: back ? (back.at as number) - t0 : null,
      }
      row.timeToAllBackMs = row.liveness.allBackAfterBlackholeMs
    }
    await sleep(Math.max(0, reportAfter))
    row.watchedMs = Math.round(now() - t0)
    const rep = await cl.req({ t: 'report' })
    const srv = await server.req({ t: 'stats' })
    const ns1 = listenCounters()
    if (ns0 && ns1) { row.listenOverflows = ns1.overflows - ns0.overflows; row.listenDrops = ns1.drops - ns0.drops }
    row.serverFullMs = (srv.fullAt as number) > 0 ? (srv.fullAt as number) - t0 : null
    row.serverLoopBlockMs = srv.loopDelayMaxMs as number
    row.serverCpuMs = srv.cpuMs as number
    row.cpu = rep.cpu as Record<string, number> | null
    row.loadavg1 = loadavg()[0]
    Object.assign(row, tally(client, rep, n))
    if (isSyncsock(client)) {
      const d = rep.delta as Record<string, number>
      const st = rep.stats as Record<string, number>
      row.maxLoopBlockMs = (rep.stormLoopMaxMs as number | null) ?? num0(st, 'loopDelayMaxMs')
      row.loopBlockByShardMs = rep.stormLoopMaxByShard as number[]
      row.maxAttemptsPerEndpoint = rep.maxAttemptsPerEndpoint as number | null
      // Gaps over 50 ms per shard, as [ms after the trigger, length ms]: which phase blocked.
      row.blocksByShard = (rep.stormBlocks as [number, number][][] | undefined)?.map((bs) => bs.map(([at, len]) => [Math.round(at - t0), len] as [number, number]))
      row.loopDelayLifetimeMs = num0(st, 'loopDelayMaxMs')
      row.droppedLiveness = num0(d, 'droppedLiveness')
      row.reconnectLatencyMaxMs = num0(st, 'reconnectLatencyMaxMs')
      row.counters = d
      if (row.liveness) row.liveness.detected = num0(d, 'droppedLiveness')
    } else {
      row.maxLoopBlockMs = rep.loopDelayMaxMs as number
      if (row.liveness) row.liveness.detected = rep.drops as number
    }
    row.attemptsPerEndpoint = row.attempts / n
    return row
  } finally {
    await cl?.kill()
    await server.kill()
  }
}

// ---------------------------------------------------------------- main

const major = Number(process.versions.node.split('.')[0])
if (major < 22) {
  console.error(`run with the pinned node: node_modules/.bin/node bench/reconnect-storm.ts (this is ${process.version})`)
  process.exit(1)
}
NSTAT = findNstat()
const MACHINE = machine()
const CHILD_NODE = execFileSync(NODE, ['-v'], { encoding: 'utf8' }).trim()
const benchStart = Date.now()
console.log(`bench/reconnect-storm.ts${QUICK ? ' (--quick)' : ''}: N persistent connections dropped at once, syncsock vs plain Node`)
console.log(`machine: ${machineLine(MACHINE)}${CHILD_NODE !== MACHINE.node ? ` (children on ${CHILD_NODE})` : ''}`)
console.log(`note: the server, the client under test and this orchestrator are separate processes sharing the same ${MACHINE.nproc} cores, with whatever else runs on the box (load printed per run)`)
console.log(`syncsock: ${JSON.stringify(SYNCSOCK)}`)
console.log(`backoff baseline: full jitter ${BACKOFF.baseMs} ms base / ${BACKOFF.capMs} ms cap; naive: reconnect from 'close'`)
if (!NSTAT) console.log('note: nstat not found (iproute2): listen overflows not measured')
if (FD.hard < 12_000) console.log(`note: fd limit ${FD.soft}/${FD.hard} (soft/hard): N = 10,000 needs about 10,100 per process`)

const rows: Row[] = [] // one per (scenario, client, N): the median run
const allRuns: Row[] = []
const plan: ['A' | 'B' | 'C' | 'D', number[]][] = [['A', SIZES], ['B', SIZES_B], ['C', SIZES_C], ['D', [LIVENESS_N]]]
const byTime = (r: Row): number => r.timeToAllBackMs ?? Infinity
for (const [sc, sizes] of plan) {
  if (!SCENARIOS.includes(sc)) continue
  const reps = sc === 'A' || sc === 'B' ? REPEAT : 1
  for (const n of sizes) {
    const runs = new Map<ClientKey, Row[]>()
    for (let rep = 0; rep < reps; rep++) {
      for (const client of CLIENTS) {
        if (client === 'syncsock-defaults' && sc !== 'B') continue // identical to syncsock until a connect fails
        if (sc === 'D' && client !== 'syncsock' && QUICK) continue
        const t = Date.now()
        const tag = `  ${sc} ${client.padEnd(17)} N=${String(n).padStart(5)}${reps > 1 ? ` #${rep + 1}` : ''}`
        try {
          const row = await runOne(sc, client, n)
          allRuns.push({ ...row, run: rep + 1 } as Row)
          runs.set(client, [...(runs.get(client) ?? []), row])
          console.log(`${tag}: ${summary(row)}  (${((Date.now() - t) / 1000).toFixed(1)} s, load ${loadavg()[0].toFixed(1)})`)
        } catch (e) {
          console.log(`${tag}: FAILED ${(e as Error).message}`)
        }
      }
    }
    for (const [, rs] of runs) {
      const sorted = [...rs].sort((a, b) => byTime(a) - byTime(b))
      const med = sorted[Math.floor((sorted.length - 1) / 2)]
      if (rs.length > 1) {
        med.runs = rs.length
        med.timeRangeMs = [byTime(sorted[0]), byTime(sorted[sorted.length - 1])].map((x) => Number.isFinite(x) ? Math.round(x) : null) as [number | null, number | null]
      }
      rows.push(med)
    }
  }
}

function ms(x: number | null | undefined): string { return x === null || x === undefined ? '-' : x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : `${Math.round(x)} ms` }
function summary(r: Row): string {
  if (r.stop) return `stop ${ms(r.stop.stopResolveMs)}, accepts in ${r.stop.watchMs / 1000} s after stop: ${r.stop.acceptsAfterStopCall}`
  if (r.liveness) return `detected ${r.liveness.detected}/${r.n} ${r.liveness.detectedMs === null ? `(not all within ${r.liveness.watchMs / 1000} s)` : `in ${ms(r.liveness.detectedMs)}`}`
  return `back in ${r.timeToAllBackMs === null ? `> ${ms(r.timedOutAfterMs)}` : ms(r.timeToAllBackMs)}, ${r.attemptsPerEndpoint.toFixed(2)} att/ep, ${r.errors} errors`
}

// ---- tables
console.log('')
const back = (r: Row): string => r.timeToAllBackMs === null ? (r.timedOutAfterMs ? `> ${ms(r.timedOutAfterMs)}` : '-') : ms(r.timeToAllBackMs)
const causes = (r: Row): string => Object.entries(r.errorCauses).map(([k, v]) => `${k} ${v}`).join(', ') || '-'
const ov = (r: Row): string => r.listenOverflows === null ? 'n/a' : `${r.listenOverflows}/${r.listenDrops}`
/** syncsock: the storm's worst shard, and the shards' published lifetime max (start + initial connect). */
const loopCell = (r: Row): string => r.loopDelayLifetimeMs === undefined ? `${r.maxLoopBlockMs.toFixed(1)} ms`
  : `${r.maxLoopBlockMs.toFixed(1)} ms (life ${r.loopDelayLifetimeMs.toFixed(0)})`
const base = (sc: string, n: number, c: ClientKey): Row | undefined => rows.find((r) => r.scenario === sc && r.n === n && r.client === c)
const ratio = (a: number | null | undefined, b: number | null | undefined): string =>
  a === null || a === undefined || b === null || b === undefined || a <= 0 ? '-' : `${(b / a).toFixed(1)}x`

const main = rows.filter((r) => r.scenario === 'A' || r.scenario === 'B')
if (main.length) {
  console.log(`A: server drops all at once; B: listeners closed ${GAP_MS / 1000} s, then reopened. time = until all N are established again`)
  if (REPEAT > 1) console.log(`each row is the median of ${REPEAT} runs (by time), interleaved over the clients`)
  console.log('ratios: baseline time / syncsock time (>1x: syncsock faster); overflows: TcpExtListenOverflows/ListenDrops delta (system-wide)')
  console.log(table(
    ['scenario', 'client', 'N', 'all back', `range (${REPEAT} runs)`, 'vs naive', 'vs backoff', 'att/endpoint', 'worst', 'errors', 'causes', 'overflows', 'max loop block'],
    main.map((r) => [
      r.scenario, r.client, String(r.n), back(r), r.timeRangeMs ? r.timeRangeMs.map((x) => x === null ? '-' : ms(x)).join('-') : '',
      isSyncsock(r.client) ? ratio(r.timeToAllBackMs, base(r.scenario, r.n, 'naive')?.timeToAllBackMs) : '',
      isSyncsock(r.client) ? ratio(r.timeToAllBackMs, base(r.scenario, r.n, 'backoff')?.timeToAllBackMs) : '',
      r.attemptsPerEndpoint.toFixed(2), r.maxAttemptsPerEndpoint == null ? '-' : String(r.maxAttemptsPerEndpoint),
      String(r.errors), causes(r), ov(r), loopCell(r),
    ]),
  ))
  console.log('worst: the most attempts one endpoint needed (syncsock, from its retry hook; "-": not measured)')
  console.log('max loop block: longest event-loop delay from the trigger on (syncsock: worst shard; "life" = the shards\' published loopDelayMaxMs since engine start)')
  console.log('')
}
const stops = rows.filter((r) => r.stop)
if (stops.length) {
  console.log(`C: stop() once half are back mid-storm, then watch ${STOP_WATCH_MS / 1000} s (baselines: destroy() every socket, the usual shutdown)`)
  console.log(table(
    ['scenario', 'client', 'N', 'back at stop', 'in flight + unaccepted', 'stop took', `accepts ${STOP_WATCH_MS / 1000} s after stop()`, 'after it resolved', 'reconnectsAfterStop', 'handles left', 'exit after stop', 'max loop block'],
    stops.map((r) => {
      const s = r.stop!
      return [
        r.scenario, r.client, String(r.n), String(s.backAtStop), s.inFlightAtStop === undefined ? '-' : `${s.inFlightAtStop} + ${s.unacceptedAtStop}`,
        ms(s.stopResolveMs), String(s.acceptsAfterStopCall), String(s.acceptsAfterStopResolved),
        s.reconnectsAfterStop === undefined ? '-' : String(s.reconnectsAfterStop),
        s.handlesLeft === undefined ? '-' : s.handlesLeft.length ? s.handlesLeft.join(',') : 'none',
        r.client !== 'syncsock' ? 'n/a' : s.exitedAfterStopMs === null || s.exitedAfterStopMs === undefined ? 'did not exit' : ms(s.exitedAfterStopMs),
        loopCell(r),
      ]
    }),
  ))
  console.log('accepts after stop(): connections the server accepted from the stop() call on. A connect in flight at stop (SYN sent,')
  console.log('handshake done by the kernel) or one the client saw connected but the server had not accepted yet (its accept loop lags)')
  console.log('still reaches the server\'s accept() after the call: syncsock may show up to "in flight + unaccepted" (at stop) there.')
  console.log('A connect started after stop() would show in reconnectsAfterStop (the engine\'s F1 tripwire) and as an accept after stop resolved.')
  console.log('')
}
const lives = rows.filter((r) => r.liveness)
if (lives.length) {
  const stormFalse = rows.filter((r) => r.client === 'syncsock' && r.scenario === 'A').map((r) => `N=${r.n}: ${r.droppedLiveness ?? '-'} in ${((r.watchedMs ?? 0) / 1000).toFixed(1)} s`).join(', ')
  console.log(`D: ${LIVENESS_N} connections, server goes silent (paused, no echo, no close); liveness 2 s probe / 1 s timeout; target <= 3.5 s`)
  console.log(table(
    ['scenario', 'client', 'N', 'detected', 'all detected in', 'all back in', 'max loop block'],
    lives.map((r) => [r.scenario, r.client, String(r.n), `${r.liveness!.detected}/${r.n}`,
      r.liveness!.detectedMs === null ? `not in ${r.liveness!.watchMs / 1000} s` : ms(r.liveness!.detectedMs),
      ms(r.liveness!.allBackAfterBlackholeMs), loopCell(r)]),
  ))
  console.log(`false "down" (droppedLiveness) during the scenario A storms: ${stormFalse || '-'}`)
  console.log('')
}

// ---- targets (issue 4)
const checks: { what: string; ok: boolean; got: string }[] = []
for (const r of rows.filter((x) => isSyncsock(x.client))) {
  if (r.client !== 'syncsock' && r.scenario !== 'B') continue
  if (r.scenario === 'A') {
    if (r.n === 10_000) checks.push({ what: 'A: 10,000 back <= 1.5 s, 1 attempt each, 0 errors', ok: r.timeToAllBackMs !== null && r.timeToAllBackMs <= 1500 && r.attemptsPerEndpoint <= 1.0001 && r.errors === 0, got: summary(r) })
    checks.push({ what: `A N=${r.n}: no false liveness down`, ok: r.droppedLiveness === 0, got: `droppedLiveness ${r.droppedLiveness} within ${((r.watchedMs ?? 0) / 1000).toFixed(1)} s of the drop` })
  }
  if (r.scenario === 'B') {
    // The worst endpoint, from the retry hook's attempt count (failed connects in a row, reset
    // when a connection becomes ready) plus the connect that succeeded.
    const worst = r.maxAttemptsPerEndpoint ?? null
    checks.push({
      what: `B ${r.client} N=${r.n}: back <= 4 s after a 2 s gap, <= 3 attempts each`,
      ok: r.timeToAllBackMs !== null && r.timeToAllBackMs <= 4000 && worst !== null && worst <= 3,
      got: `${summary(r)}; the worst endpoint needed ${worst ?? '?'} attempts`,
    })
  }
  if (r.stop) {
    const st = r.stop
    checks.push({
      what: `C N=${r.n}: no connect started after stop() (accepts only from connects in flight at stop), none after it resolved, no handle, exit <= 1 s`,
      ok: st.reconnectsAfterStop === 0 && st.acceptsAfterStopResolved === 0 && st.acceptsAfterStopCall <= (st.inFlightAtStop ?? 0) + (st.unacceptedAtStop ?? 0)
        && (st.handlesLeft?.length ?? 1) === 0 && st.exitedWithin1s === true,
      got: `accepts after stop() ${st.acceptsAfterStopCall} (in flight ${st.inFlightAtStop} + unaccepted ${st.unacceptedAtStop}), after resolved ${st.acceptsAfterStopResolved}, reconnectsAfterStop ${st.reconnectsAfterStop}, handles ${st.handlesLeft?.join(',') || 'none'}, exit ${ms(st.exitedAfterStopMs)} after stop resolved`,
    })
  }
  if (r.liveness) checks.push({ what: `D: ${r.n} blackholed detected <= 3.5 s`, ok: r.liveness.detected >= r.n && r.liveness.detectedMs !== null && r.liveness.detectedMs <= 3500, got: summary(r) })
  if (r.scenario !== 'D') checks.push({ what: `${r.scenario} ${r.client} N=${r.n}: no loop block > 100 ms`, ok: r.maxLoopBlockMs <= 100, got: `${r.maxLoopBlockMs.toFixed(1)} ms` })
}
if (checks.length) {
  console.log('targets (issue 4), syncsock:')
  for (const c of checks) console.log(`  ${c.ok ? 'PASS' : 'MISS'}  ${c.what}  [${c.got}]`)
}
console.log(`\ntotal ${((Date.now() - benchStart) / 1000).toFixed(1)} s`)

if (!argv['no-write']) {
  const file = writeResults('reconnect-storm', {
    childNode: CHILD_NODE,
    note: `server, client and orchestrator are separate processes sharing ${MACHINE.nproc} cores; nstat counters are system-wide`,
    config: { ports: PORTS, backlog: BACKLOG, gapMs: GAP_MS, stopWatchMs: STOP_WATCH_MS, syncsock: SYNCSOCK, backoff: BACKOFF },
    rows, allRuns,
    reconnectsAfterStop: stops.filter((r) => r.client === 'syncsock').map((r) => ({
      n: r.n, reconnectsAfterStop: r.stop!.reconnectsAfterStop, inFlightAtStop: r.stop!.inFlightAtStop,
      serverAcceptsAfterStopCall: r.stop!.acceptsAfterStopCall, serverAcceptsAfterStopResolved: r.stop!.acceptsAfterStopResolved,
      establishedAfterStop: r.stop!.establishedAfterStop, handlesLeft: r.stop!.handlesLeft, exitedAfterStopMs: r.stop!.exitedAfterStopMs,
    })),
    targets: checks,
  }, ARGS)
  console.log(`wrote ${file}`)
}
