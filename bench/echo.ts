// bench/echo.ts (issue 3): syncsock's echo (all shards) against a single-thread `net` echo and
// a 2-process `node:cluster` echo, in the same run, driven by the same load generator.
//
//   node bench/echo.ts [--quick] [--shards 2|auto] [--only net,cluster,syncsock]
//                      [--duration MS] [--warmup MS] [--conns 100] [--bulk-conns 4]
//                      [--window KIB] [--rounds N] [--no-write]
//
// Scenarios, run against each server in turn (each server in its OWN child process):
//   ping-pong  `--conns` persistent connections, each sends a 64-byte message, waits for all 64
//              bytes echoed back (checked byte for byte), records the round trip
//              (process.hrtime.bigint) and sends the next. After a warm-up, counts messages for a
//              fixed time: msgs/s, p50/p99 latency in µs.
//   bulk       `--bulk-conns` connections each stream 64 KiB writes and read the echo back
//              (checked byte for byte). Writing pauses when write() returns false until 'drain',
//              and when more than `--window` KiB is in flight unanswered (so no server is asked
//              to queue unbounded data). Echoed bytes over a fixed time: MB/s (1 MB = 10^6 B).
//              At the end every connection must get back exactly what it sent.
//
// The load generator is this process (one thread) and it SHARES the machine's cores with the
// server under test: the output says so and shows how much CPU each side burnt.
// Results: a table on stdout and bench/results/echo.json.

import { spawn, type ChildProcess } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { cpus, availableParallelism, loadavg, release, totalmem, platform, arch } from 'node:os'
import { mkdirSync, writeFileSync } from 'node:fs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

// ---------------------------------------------------------------- options

const { values: argv } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    shards: { type: 'string', default: '2' },
    only: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    conns: { type: 'string', default: '100' },
    'bulk-conns': { type: 'string', default: '4' },
    window: { type: 'string', default: '1024' },
    rounds: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
})

function intOpt(name: string, v: string, min: number): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}; got ${v}`)
  return n
}

const QUICK = argv.quick
const CFG = {
  quick: QUICK,
  warmupMs: intOpt('warmup', argv.warmup ?? (QUICK ? '500' : '1000'), 0),
  durationMs: intOpt('duration', argv.duration ?? (QUICK ? '2000' : '5000'), 100),
  conns: intOpt('conns', argv.conns, 1),
  msgBytes: 64,
  bulkConns: intOpt('bulk-conns', argv['bulk-conns'], 1),
  chunkBytes: 64 * 1024,
  windowBytes: intOpt('window', argv.window, 64) * 1024,
  /** every server runs this many times, interleaved; the table shows the median round */
  rounds: intOpt('rounds', argv.rounds ?? (QUICK ? '1' : '3'), 1),
  shards: argv.shards === 'auto' ? 'auto' : String(intOpt('shards', argv.shards, 1)),
}

// Run the servers on the pinned node: this process if it is that node, else node_modules/.bin.
const PINNED = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { devDependencies?: Record<string, string> })
  .devDependencies?.node
const NODE = PINNED === undefined || process.versions.node === PINNED ? process.execPath : join(ROOT, 'node_modules/.bin/node')

interface ServerSpec { key: 'net' | 'cluster' | 'syncsock'; label: string; args: string[] }
const ALL_SERVERS: ServerSpec[] = [
  { key: 'net', label: 'net (1 thread)', args: ['bench/servers/net-echo.ts', '--port', '0'] },
  { key: 'cluster', label: 'cluster (2 procs)', args: ['bench/servers/cluster-echo.ts', '--port', '0', '--workers', '2'] },
  {
    key: 'syncsock',
    label: `syncsock (${CFG.shards === 'auto' ? 'auto' : CFG.shards} shards)`,
    // --stats-json: one stats line a second on stdout, so the report can show per-shard load.
    args: ['bin/syncsock.ts', 'echo', '--port', '0', '--shards', CFG.shards, '--stats-json', '--grace-ms', '2000'],
  },
]
const only = argv.only?.split(',').map((s) => s.trim()).filter(Boolean)
if (only) {
  for (const o of only) if (!ALL_SERVERS.some((s) => s.key === o)) throw new Error(`--only: unknown server ${o} (net, cluster, syncsock)`)
}
const SERVERS = only ? ALL_SERVERS.filter((s) => only.includes(s.key)) : ALL_SERVERS

// ---------------------------------------------------------------- helpers (bench/lib.ts absent)

interface Machine { cpuModel: string; cores: number; node: string; os: string; totalMemGiB: number; loadavg: number[] }

function machineInfo(): Machine {
  return {
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    node: process.version,
    os: `${platform()} ${release()} ${arch()}`,
    totalMemGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    loadavg: loadavg(),
  }
}

function printTable(head: string[], body: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)))
  const line = (r: string[]): string => r.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd()
  console.log(line(head))
  console.log(w.map((n) => '-'.repeat(n)).join('  '))
  for (const r of body) console.log(line(r))
}

function writeResults(name: string, data: unknown): string {
  const dir = join(ROOT, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `${name}.json`)
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n')
  return file
}

// ---------------------------------------------------------------- server processes

const READY_TIMEOUT_MS = 15_000
const STOP_TIMEOUT_MS = 10_000
const live = new Set<ChildProcess>()

/** Kill a child's whole process group (it is spawned detached: its own group). */
function killGroup(pid: number | undefined, sig: NodeJS.Signals): boolean {
  if (pid === undefined) return false
  try { process.kill(-pid, sig); return true } catch { return false }
}

process.on('exit', () => { for (const c of live) killGroup(c.pid, 'SIGKILL') })
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: killing the servers under test`)
    for (const c of live) killGroup(c.pid, 'SIGKILL')
    process.exit(130)
  })
}

class ServerProc {
  readonly child: ChildProcess
  host = ''
  port = 0
  stderrTail = ''
  lastStats: Record<string, unknown> | null = null
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>

  readonly spec: ServerSpec

  private constructor(spec: ServerSpec) {
    this.spec = spec
    this.child = spawn(NODE, spec.args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    live.add(this.child)
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => { live.delete(this.child); resolve({ code, signal }) })
    })
    this.child.stderr!.on('data', (d: Buffer) => { this.stderrTail = (this.stderrTail + d.toString()).slice(-4000) })
  }

  static async start(spec: ServerSpec): Promise<ServerProc> {
    const s = new ServerProc(spec)
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${spec.key}: not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS)
        const lines = createInterface({ input: s.child.stdout! })
        let ready = false
        lines.on('line', (line) => {
          let msg: { listening?: { host: string; port: number }; stats?: Record<string, unknown> }
          try { msg = JSON.parse(line) } catch { return }
          if (!ready && msg.listening) {
            ready = true
            s.host = msg.listening.host
            s.port = msg.listening.port
            clearTimeout(timer)
            resolve()
          } else if (msg.stats) s.lastStats = msg.stats
        })
        s.child.once('error', (e) => { clearTimeout(timer); reject(e) })
        void s.exited.then(({ code, signal }) => {
          clearTimeout(timer)
          if (!ready) reject(new Error(`${spec.key}: exited (${signal ?? code}) before it was ready:\n${s.stderrTail}`))
        })
      })
    } catch (e) {
      await s.stop().catch(() => {})
      throw e
    }
    return s
  }

  /** SIGTERM, wait for the exit (bounded), SIGKILL the group if anything is left. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; forced: boolean; leftovers: boolean }> {
    const pid = this.child.pid
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM')
    let forced = false
    let timer: NodeJS.Timeout | undefined
    const r = await Promise.race([this.exited, new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS) })])
    clearTimeout(timer)
    if (r === null) {
      forced = true
      killGroup(pid, 'SIGKILL')
    }
    const res = r ?? await this.exited
    // Anything of its group still alive (a cluster worker, say) is a leak: report and kill it.
    const leftovers = killGroup(pid, 'SIGKILL')
    return { ...res, forced, leftovers }
  }
}

/** utime+stime, in seconds, of every process in the group `pgid` (Linux /proc). */
function groupCpuSeconds(pgid: number | undefined): number {
  if (pgid === undefined) return NaN
  let ticks = 0
  let entries: string[]
  try { entries = readdirSync('/proc') } catch { return NaN }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue
    let stat: string
    try { stat = readFileSync(`/proc/${e}/stat`, 'utf8') } catch { continue }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // f[0] = state (field 3), f[2] = pgrp (5), f[11] = utime (14), f[12] = stime (15)
    if (Number(f[2]) === pgid) ticks += Number(f[11]) + Number(f[12])
  }
  return ticks / 100 // USER_HZ is 100 on Linux
}

class CpuMeter {
  private readonly self = process.cpuUsage()
  private readonly server: number
  private readonly t0 = process.hrtime.bigint()
  private readonly pgid: number | undefined
  constructor(pgid: number | undefined) { this.pgid = pgid; this.server = groupCpuSeconds(pgid) }
  /** percent of ONE core used by the load generator and by the server since construction */
  read(): { loadgenCpuPct: number; serverCpuPct: number } {
    const wall = Number(process.hrtime.bigint() - this.t0) / 1e9
    const u = process.cpuUsage(this.self)
    return {
      loadgenCpuPct: ((u.user + u.system) / 1e6 / wall) * 100,
      serverCpuPct: ((groupCpuSeconds(this.pgid) - this.server) / wall) * 100,
    }
  }
}

// ---------------------------------------------------------------- load generator

async function openConns(host: string, port: number, n: number): Promise<Socket[]> {
  const socks: Socket[] = []
  try {
    // connect in batches so the listen backlog is never the bottleneck
    for (let i = 0; i < n; i += 25) {
      const batch = Array.from({ length: Math.min(25, n - i) }, () => new Promise<Socket>((resolve, reject) => {
        const s = connect({ host, port, noDelay: true })
        socks.push(s)
        const timer = setTimeout(() => reject(new Error('connect timed out (5 s)')), 5000)
        s.once('connect', () => { clearTimeout(timer); resolve(s) })
        s.once('error', (e) => { clearTimeout(timer); reject(e) })
      }))
      await Promise.all(batch)
    }
  } catch (e) {
    for (const s of socks) s.destroy()
    throw e
  }
  return socks
}

async function closeConns(socks: Socket[]): Promise<void> {
  await Promise.all(socks.map((s) => new Promise<void>((resolve) => {
    if (s.destroyed) { resolve(); return }
    const t = setTimeout(() => { s.destroy(); resolve() }, 2000)
    s.once('close', () => { clearTimeout(t); resolve() })
    s.end()
    s.resume()
  })))
}

/** Ask `fn` until it is true, every 10 ms, at most `ms`. */
async function until(fn: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!fn()) {
    if (Date.now() > end) return false
    await sleep(10)
  }
  return true
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

interface PingPongResult {
  msgs: number; seconds: number; msgsPerSec: number
  p50Us: number; p99Us: number; p999Us: number; maxUs: number; meanUs: number
  /** connections that completed no message inside the measured window */
  stalledConns: number
  loadgenCpuPct: number; serverCpuPct: number
}

async function pingPong(srv: ServerProc): Promise<PingPongResult> {
  const socks = await openConns(srv.host, srv.port, CFG.conns)
  let phase: 'warm' | 'measure' | 'drain' = 'warm'
  let failure: Error | null = null
  let lat = new Float64Array(1 << 18)
  let nLat = 0
  let tStart = 0n
  let tEnd = 0n
  let idle = 0
  const perConn = new Uint32Array(socks.length)
  const fail = (e: Error): void => { failure ??= e }

  socks.forEach((s, i) => {
    const msg = randomBytes(CFG.msgBytes)
    msg.writeUInt32LE(i, 0)
    let seq = 0
    let got = 0
    let sentAt = 0n
    const send = (): void => {
      msg.writeUInt32LE(++seq, 4)
      got = 0
      sentAt = process.hrtime.bigint()
      s.write(msg)
    }
    s.on('data', (chunk: Buffer) => {
      for (let off = 0; off < chunk.length;) {
        if (got === CFG.msgBytes) { fail(new Error(`ping-pong conn ${i}: ${chunk.length - off} unexpected extra bytes`)); return }
        const n = Math.min(CFG.msgBytes - got, chunk.length - off)
        if (!chunk.subarray(off, off + n).equals(msg.subarray(got, got + n))) {
          fail(new Error(`ping-pong conn ${i}: wrong bytes echoed at offset ${got} of message ${seq}`))
          return
        }
        got += n
        off += n
        if (got === CFG.msgBytes) {
          const now = process.hrtime.bigint()
          if (phase === 'measure' || (phase === 'drain' && now <= tEnd)) {
            if (nLat === lat.length) { const bigger = new Float64Array(lat.length * 2); bigger.set(lat); lat = bigger }
            lat[nLat++] = Number(now - sentAt) / 1000
            perConn[i]++
          }
          if (phase === 'drain') idle++
          else if (off === chunk.length) send()
        }
      }
    })
    s.on('error', (e) => fail(new Error(`ping-pong conn ${i}: ${e.message}`)))
    s.on('close', () => { if (phase !== 'drain') fail(new Error(`ping-pong conn ${i}: closed by the server mid-run`)) })
    send()
  })

  try {
    await until(() => failure !== null, CFG.warmupMs) // a failure ends the wait early
    phase = 'measure'
    tStart = process.hrtime.bigint()
    nLat = 0
    perConn.fill(0)
    const cpu = new CpuMeter(srv.child.pid)
    await until(() => failure !== null, CFG.durationMs)
    tEnd = process.hrtime.bigint()
    const usage = cpu.read()
    phase = 'drain'
    // every connection has exactly one message in flight: wait for all of them (bounded)
    const drained = await until(() => idle === socks.length || failure !== null, 5000)
    if (failure) throw failure
    if (!drained) throw new Error(`ping-pong: ${socks.length - idle} of ${socks.length} connections got no echo within 5 s after the run`)
    const seconds = Number(tEnd - tStart) / 1e9
    const sorted = lat.slice(0, nLat).sort()
    let sum = 0
    for (const v of sorted) sum += v
    return {
      msgs: nLat, seconds, msgsPerSec: nLat / seconds,
      p50Us: percentile(sorted, 50), p99Us: percentile(sorted, 99), p999Us: percentile(sorted, 99.9),
      maxUs: sorted.length ? sorted[sorted.length - 1] : NaN, meanUs: sum / Math.max(1, nLat),
      stalledConns: perConn.filter((c) => c === 0).length,
      ...usage,
    }
  } finally {
    phase = 'drain'
    await closeConns(socks)
  }
}

interface BulkResult {
  bytes: number; seconds: number; mbPerSec: number
  sentTotal: number; echoedTotal: number
  loadgenCpuPct: number; serverCpuPct: number
}

async function bulk(srv: ServerProc): Promise<BulkResult> {
  const socks = await openConns(srv.host, srv.port, CFG.bulkConns)
  const pattern = randomBytes(CFG.chunkBytes)
  let phase: 'warm' | 'measure' | 'drain' = 'warm'
  let failure: Error | null = null
  let measured = 0
  const fail = (e: Error): void => { failure ??= e }
  const conns = socks.map((s, i) => {
    const c = { written: 0, echoed: 0, rxOff: 0, waitingDrain: false }
    const pump = (): void => {
      while (phase !== 'drain' && !c.waitingDrain && c.written - c.echoed < CFG.windowBytes && failure === null) {
        c.written += pattern.length
        if (!s.write(pattern)) c.waitingDrain = true
      }
    }
    s.on('drain', () => { c.waitingDrain = false; pump() })
    s.on('data', (chunk: Buffer) => {
      // the echo must be the pattern, repeated, from where the last chunk left off
      for (let off = 0; off < chunk.length;) {
        const n = Math.min(pattern.length - c.rxOff, chunk.length - off)
        if (!chunk.subarray(off, off + n).equals(pattern.subarray(c.rxOff, c.rxOff + n))) {
          fail(new Error(`bulk conn ${i}: wrong bytes echoed near stream offset ${c.echoed + off}`))
          return
        }
        off += n
        c.rxOff = (c.rxOff + n) % pattern.length
      }
      c.echoed += chunk.length
      if (c.echoed > c.written) fail(new Error(`bulk conn ${i}: more bytes echoed (${c.echoed}) than sent (${c.written})`))
      if (phase === 'measure') measured += chunk.length
      pump()
    })
    s.on('error', (e) => fail(new Error(`bulk conn ${i}: ${e.message}`)))
    s.on('close', () => { if (phase !== 'drain') fail(new Error(`bulk conn ${i}: closed by the server mid-run`)) })
    return { c, pump }
  })
  for (const { pump } of conns) pump()

  try {
    await until(() => failure !== null, CFG.warmupMs) // a failure ends the wait early
    phase = 'measure'
    measured = 0
    const tStart = process.hrtime.bigint()
    const cpu = new CpuMeter(srv.child.pid)
    await until(() => failure !== null, CFG.durationMs)
    const bytes = measured
    const tEnd = process.hrtime.bigint()
    const usage = cpu.read()
    phase = 'drain'
    const drained = await until(() => failure !== null || conns.every(({ c }) => c.echoed === c.written), 10_000)
    if (failure) throw failure
    const sentTotal = conns.reduce((a, { c }) => a + c.written, 0)
    const echoedTotal = conns.reduce((a, { c }) => a + c.echoed, 0)
    if (!drained) throw new Error(`bulk: only ${echoedTotal} of ${sentTotal} bytes echoed back within 10 s after the run (bytes lost or stuck)`)
    const seconds = Number(tEnd - tStart) / 1e9
    return { bytes, seconds, mbPerSec: bytes / seconds / 1e6, sentTotal, echoedTotal, ...usage }
  } finally {
    phase = 'drain'
    await closeConns(socks)
  }
}

// ---------------------------------------------------------------- run

interface Row {
  scenario: 'ping-pong' | 'bulk'
  server: ServerSpec['key']
  label: string
  /** msgs/s for ping-pong, MB/s for bulk */
  value: number
  unit: 'msgs/s' | 'MB/s'
  p50Us: number | null
  p99Us: number | null
  vsNet: number | null
  vsCluster: number | null
  detail: PingPongResult | BulkResult
}

interface ServerRun {
  server: ServerSpec['key']
  label: string
  exit: { code: number | null; signal: NodeJS.Signals | null; forced: boolean; leftovers: boolean }
  shardAccepted?: number[]
  error?: string
}

const machine: Machine = machineInfo()
const NOTE = `the load generator (this process, 1 thread) shares the machine's ${machine.cores} cores with the server under test; ` +
  'the servers are not pinned to cores of their own, so every number includes that contention'

console.log(`bench/echo.ts${QUICK ? ' --quick' : ''}: ${machine.cpuModel}, ${machine.cores} cores, node ${machine.node}, ${machine.os}`)
console.log(`load average at start: ${machine.loadavg.map((x) => x.toFixed(2)).join(' ')}`)
console.log(`NOTE: ${NOTE}.`)
console.log(`ping-pong: ${CFG.conns} conns x ${CFG.msgBytes} B, warm-up ${CFG.warmupMs} ms, measured ${CFG.durationMs} ms; ` +
  `bulk: ${CFG.bulkConns} conns x ${CFG.chunkBytes / 1024} KiB writes, window ${CFG.windowBytes / 1024} KiB/conn, warm-up ${CFG.warmupMs} ms, measured ${CFG.durationMs} ms`)
console.log('')

const samples: (Row & { round: number })[] = []
const runs: (ServerRun & { round: number })[] = []
let failed = false

for (let round = 1; round <= CFG.rounds && !failed; round++) {
  if (CFG.rounds > 1) console.log(`round ${round} of ${CFG.rounds}`)
  for (const spec of SERVERS) {
    process.stdout.write(`  ${spec.label}: starting... `)
    let srv: ServerProc | null = null
    const run: ServerRun & { round: number } = { round, server: spec.key, label: spec.label, exit: { code: null, signal: null, forced: false, leftovers: false } }
    try {
      srv = await ServerProc.start(spec)
      process.stdout.write(`port ${srv.port}; ping-pong... `)
      const pp = await pingPong(srv)
      samples.push({ round, scenario: 'ping-pong', server: spec.key, label: spec.label, value: pp.msgsPerSec, unit: 'msgs/s', p50Us: pp.p50Us, p99Us: pp.p99Us, vsNet: null, vsCluster: null, detail: pp })
      process.stdout.write(`${Math.round(pp.msgsPerSec)} msgs/s; bulk... `)
      const bk = await bulk(srv)
      samples.push({ round, scenario: 'bulk', server: spec.key, label: spec.label, value: bk.mbPerSec, unit: 'MB/s', p50Us: null, p99Us: null, vsNet: null, vsCluster: null, detail: bk })
      process.stdout.write(`${bk.mbPerSec.toFixed(0)} MB/s; `)
    } catch (e) {
      failed = true
      run.error = (e as Error).message
      process.stdout.write(`FAILED: ${run.error}\n`)
      if (srv?.stderrTail) console.log(`  server stderr (tail):\n${srv.stderrTail.replace(/^/gm, '    ')}`)
    } finally {
      if (srv) {
        // the stats line the syncsock CLI printed last (<= 1 s old): per-shard accepted connections
        const shards = (srv.lastStats as { shards?: { accepted: number }[] } | null)?.shards
        if (shards) run.shardAccepted = shards.map((x) => x.accepted)
        run.exit = await srv.stop()
        const { code, signal, forced, leftovers } = run.exit
        process.stdout.write(`stopped (exit ${signal ?? code}${forced ? ', had to SIGKILL' : ''}${leftovers ? ', killed leftover processes' : ''})\n`)
        if (code !== 0 || forced || leftovers) {
          failed = true
          if (srv.stderrTail) console.log(`  server stderr (tail):\n${srv.stderrTail.replace(/^/gm, '    ')}`)
        }
      }
      runs.push(run)
    }
  }
}

// One row per (scenario, server): the round with the median throughput (its latencies with it).
const rows: (Row & { round: number; roundValues: number[] })[] = []
for (const sc of ['ping-pong', 'bulk'] as const) {
  for (const spec of SERVERS) {
    const mine = samples.filter((x) => x.scenario === sc && x.server === spec.key).sort((a, b) => a.value - b.value)
    if (mine.length === 0) continue
    const med = mine[Math.floor((mine.length - 1) / 2)]
    rows.push({ ...med, roundValues: samples.filter((x) => x.scenario === sc && x.server === spec.key).map((x) => x.value) })
  }
}

for (const r of rows) {
  const base = (key: string): number | undefined => rows.find((x) => x.scenario === r.scenario && x.server === key)?.value
  const n = base('net'), c = base('cluster')
  r.vsNet = n ? r.value / n : null
  r.vsCluster = c ? r.value / c : null
}

const fmtRatio = (x: number | null): string => (x === null ? '-' : `${x.toFixed(2)}x`)
const fmtUs = (x: number | null): string => (x === null ? '-' : x < 100 ? x.toFixed(1) : x.toFixed(0))
const fmtRate = (r: Row): string => (r.unit === 'msgs/s' ? `${Math.round(r.value).toLocaleString('en-US')} msgs/s` : `${r.value.toFixed(1)} MB/s`)

console.log('')
if (CFG.rounds > 1) console.log(`each row: the median of ${CFG.rounds} rounds (all rounds in the last column)`)
printTable(
  ['scenario', 'server', 'throughput', 'p50 µs', 'p99 µs', 'vs net', 'vs cluster', 'loadgen CPU', 'server CPU',
    ...(CFG.rounds > 1 ? ['rounds'] : [])],
  rows.map((r) => [
    r.scenario, r.label, fmtRate(r), fmtUs(r.p50Us), fmtUs(r.p99Us), fmtRatio(r.vsNet), fmtRatio(r.vsCluster),
    `${r.detail.loadgenCpuPct.toFixed(0)}%`, `${r.detail.serverCpuPct.toFixed(0)}%`,
    ...(CFG.rounds > 1 ? [r.roundValues.map((v) => (r.unit === 'MB/s' ? v.toFixed(0) : Math.round(v / 1000) + 'k')).join(' / ')] : []),
  ]),
)
console.log('')
console.log(`CPU columns: % of ONE core during the measured window (${machine.cores} cores = ${machine.cores * 100}%). ` +
  'The load generator shares the cores with the server: a server that needs the load generator\'s core cannot have it.')
const ssRuns = runs.filter((r) => r.server === 'syncsock' && r.shardAccepted)
if (ssRuns.length) console.log(`syncsock connections accepted per shard (${CFG.conns + CFG.bulkConns} per round): ${ssRuns.map((r) => `[${r.shardAccepted!.join(', ')}]`).join(' ')}`)
for (const r of rows) {
  if (r.scenario === 'ping-pong' && (r.detail as PingPongResult).stalledConns > 0) {
    console.log(`WARNING: ${r.label}: ${(r.detail as PingPongResult).stalledConns} ping-pong connections completed no message in the window`)
  }
}

const ratios: Record<string, Record<string, number | null>> = {}
for (const sc of ['ping-pong', 'bulk'] as const) {
  const v = (k: string): number | undefined => rows.find((x) => x.scenario === sc && x.server === k)?.value
  const ratio = (a: string, b: string): number | null => { const x = v(a), y = v(b); return x !== undefined && y ? x / y : null }
  ratios[sc] = {
    syncsock_vs_net: ratio('syncsock', 'net'),
    syncsock_vs_cluster: ratio('syncsock', 'cluster'),
    cluster_vs_net: ratio('cluster', 'net'),
  }
}

if (!argv['no-write']) {
  const file = writeResults('echo', {
    bench: 'echo',
    date: new Date().toISOString(),
    quick: QUICK,
    config: CFG,
    machine,
    node: process.version,
    note: NOTE,
    rows: rows.map(({ detail, ...r }) => ({ ...r, ...detail })),
    ratios,
    samples: samples.map(({ detail, ...r }) => ({ ...r, ...detail })),
    servers: runs,
    ok: !failed,
  })
  console.log(`wrote ${file}`)
}
if (failed) {
  for (const r of runs) {
    if (r.error || r.exit.code !== 0 || r.exit.forced || r.exit.leftovers) {
      console.log(`FAILED: round ${r.round} ${r.label}: ${r.error ?? `server exit ${r.exit.signal ?? r.exit.code}${r.exit.forced ? ' (SIGKILLed)' : ''}${r.exit.leftovers ? ' (left processes behind)' : ''}`}`)
    }
  }
  process.exitCode = 1
}
