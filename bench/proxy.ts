// bench/proxy.ts (issue: the flagship L4 proxy): `syncsock proxy` against a single-process Node
// `net` proxy, a 2-process `node:cluster` proxy (both on this pinned node), HAProxy (nbthread 2)
// and nginx stream (worker_processes 2) when installed, in ONE run, driven by the same cheap load
// generator in front of the same cheap backends:
//
//   node_modules/.bin/node bench/proxy.ts [--quick] [--rounds N] [--only syncsock,net,cluster,haproxy,nginx]
//        [--shards 2] [--warmup MS] [--duration MS] [--bulk-seconds S] [--conc 100] [--conns 100]
//        [--syncsock-args "--balance leastconn"] [--syncsock-cli dist/bin/syncsock.js] [--profile]
//        [--no-bulk] [--no-write]
//
// Scenarios, per target (targets rotated each round; each column = median over the rounds):
//   bulk       iperf3 through the proxy to `iperf3 -s`, 1 stream and 4 streams: Gbit/s (receiver).
//   conn rate  bench/c/loadgen connrate: --conc workers, each connect -> write 64 B -> read the
//              64 B echo -> close, again and again: conn/s, p50/p99 of connect-to-echo latency.
//   ping-pong  bench/c/loadgen pingpong: --conns persistent connections, each 64 B out, wait
//              for the echo, next: msg/s, p50/p99 round trip.
//   CPU        utime+stime of the proxy's whole process group (threads, cluster workers, nginx
//              master+workers) over the measured window (/proc/PID/stat): µs per connection
//              (conn rate) and per message (ping-pong).
//   peak RSS   VmHWM summed over the proxy's processes (/proc/PID/status), the larger of its two
//              instances (echo-backend and iperf3-backend); max over rounds.
// Load generator and echo backend are small C epoll programs (bench/c/*.c) compiled here with
// `cc -O2` into a temp dir; each costs less CPU than the proxy (the output shows both). Peers
// and tools come from the OS packages: `sh bench/peers-setup.sh`. A missing peer, or a syncsock
// without `proxy`, is skipped and the output says why. Everything binds 127.0.0.1; every process
// started here is killed at the end (also on error / SIGINT); every wait is bounded.
// Results: tables on stdout and bench/results/proxy.json.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseBenchArgs, machine, machineLine, table, fmt, median, writeResults } from './lib.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const HOST = '127.0.0.1'

// ---------------------------------------------------------------- options

const ARGS = parseBenchArgs()
const QUICK = ARGS.quick
const str = (k: string): string | undefined => (typeof ARGS.flags[k] === 'string' ? (ARGS.flags[k] as string) : undefined)
const int = (k: string, dflt: number, min = 1): number => {
  const v = str(k)
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw new Error(`--${k} must be an integer >= ${min}; got ${v}`)
  return n
}
const CFG = {
  quick: QUICK,
  rounds: int('rounds', QUICK ? 1 : 3),
  shards: int('shards', 2),
  warmupMs: int('warmup', QUICK ? 500 : 1000, 0),
  durationMs: int('duration', QUICK ? 1500 : 5000, 100),
  bulkSeconds: int('bulk-seconds', QUICK ? 1 : 5),
  bulkOmit: QUICK ? 0 : 1,
  conc: int('conc', 100),
  conns: int('conns', 100),
  msgBytes: 64,
  bulk: ARGS.flags['no-bulk'] !== true,
  profile: ARGS.flags.profile === true,
  syncsockExtra: (str('syncsock-args') ?? '').split(/\s+/).filter(Boolean),
  /** the CLI script run as `NODE <cli> proxy ...` (e.g. dist/bin/syncsock.js for the built one) */
  syncsockCli: str('syncsock-cli') ?? 'bin/syncsock.ts',
}
const RSS_TARGET_MB = 80

// Run Node targets on the pinned node: this process if it is that node, else node_modules/.bin.
const PINNED = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { devDependencies?: Record<string, string> })
  .devDependencies?.node
const NODE = PINNED === undefined || process.versions.node === PINNED ? process.execPath : join(ROOT, 'node_modules/.bin/node')

type Key = 'syncsock' | 'net' | 'cluster' | 'haproxy' | 'nginx'
const ALL_KEYS: Key[] = ['syncsock', 'net', 'cluster', 'haproxy', 'nginx']
const PEER_KEYS: Key[] = ['haproxy', 'nginx']
const NODE_KEYS: Key[] = ['net', 'cluster']
const only = str('only')?.split(',').map((s) => s.trim()).filter(Boolean)
for (const o of only ?? []) if (!ALL_KEYS.includes(o as Key)) throw new Error(`--only: unknown target ${o} (${ALL_KEYS.join(', ')})`)
const WANTED: Key[] = only ? ALL_KEYS.filter((k) => only.includes(k)) : ALL_KEYS

// ---------------------------------------------------------------- processes

const READY_MS = 15_000
const STOP_MS = 10_000
const live = new Set<ChildProcess>()
let TMP = ''

function killGroup(pid: number | undefined, sig: NodeJS.Signals): boolean {
  if (pid === undefined) return false
  try { process.kill(-pid, sig); return true } catch { return false }
}
function cleanup(): void {
  for (const c of live) killGroup(c.pid, 'SIGKILL')
  live.clear()
  if (TMP) { try { rmSync(TMP, { recursive: true, force: true }) } catch { /* best effort */ } }
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: killing every process this bench started`)
    cleanup()
    process.exit(130)
  })
}

/** How a started process says it is ready. */
type Ready =
  | { kind: 'json' } // first stdout JSON line with {"listening":{"host","port"}}
  | { kind: 'tcp'; port: number } // a LISTEN socket on HOST:port appears (/proc/net/tcp)
  | { kind: 'line'; re: RegExp } // a stdout line matching re

/** A child in its own process group (detached), so its CPU/RSS and its kill cover all of it. */
class Proc {
  readonly child: ChildProcess
  readonly name: string
  port = 0
  stderrTail = ''
  stdoutTail = ''
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>

  private constructor(name: string, cmd: string, args: string[], cwd: string) {
    this.name = name
    this.child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    live.add(this.child)
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => { live.delete(this.child); resolve({ code, signal }) })
    })
    this.child.once('error', () => { /* reported through exited / ready */ })
    this.child.stderr!.on('data', (d: Buffer) => { this.stderrTail = (this.stderrTail + d.toString()).slice(-4000) })
  }

  get pid(): number { return this.child.pid ?? -1 }
  get alive(): boolean { return this.child.exitCode === null && this.child.signalCode === null }

  static async start(name: string, cmd: string, args: string[], ready: Ready, cwd = ROOT, timeoutMs = READY_MS): Promise<Proc> {
    const p = new Proc(name, cmd, args, cwd)
    const lines = createInterface({ input: p.child.stdout! })
    let resolveReady!: () => void
    let rejectReady!: (e: Error) => void
    const readyP = new Promise<void>((res, rej) => { resolveReady = res; rejectReady = rej })
    let isReady = false
    lines.on('line', (line) => {
      p.stdoutTail = (p.stdoutTail + line + '\n').slice(-2000)
      if (isReady) return
      if (ready.kind === 'json') {
        let m: { listening?: { host: string; port: number } }
        try { m = JSON.parse(line) } catch { return }
        if (m?.listening?.port) { p.port = m.listening.port; isReady = true; resolveReady() }
      } else if (ready.kind === 'line' && ready.re.test(line)) { isReady = true; resolveReady() }
    })
    p.child.once('error', (e) => rejectReady(e))
    void p.exited.then(({ code, signal }) => {
      if (!isReady) rejectReady(new Error(`exited (${signal ?? `code ${code}`}) before it was ready${tail(p.stderrTail || p.stdoutTail)}`))
    })
    let timer: NodeJS.Timeout | undefined
    let poll: NodeJS.Timeout | undefined
    try {
      if (ready.kind === 'tcp') {
        p.port = ready.port
        poll = setInterval(() => {
          if (!isReady && listeningOn(ready.port)) { isReady = true; resolveReady() }
        }, 20)
      }
      await Promise.race([readyP, new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`not ready within ${timeoutMs} ms${tail(p.stderrTail || p.stdoutTail)}`)), timeoutMs)
      })])
    } catch (e) {
      await p.stop()
      throw e
    } finally {
      clearTimeout(timer)
      clearInterval(poll)
    }
    return p
  }

  /** SIGTERM, bounded wait, SIGKILL the group if anything is left. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; forced: boolean; leftovers: boolean }> {
    const pid = this.child.pid
    if (this.alive) this.child.kill('SIGTERM')
    let timer: NodeJS.Timeout | undefined
    const r = await Promise.race([this.exited, new Promise<null>((res) => { timer = setTimeout(() => res(null), STOP_MS) })])
    clearTimeout(timer)
    let forced = false
    if (r === null) { forced = true; killGroup(pid, 'SIGKILL') }
    const res = r ?? await this.exited
    // nginx workers / cluster workers may take a moment after the master; anything left is killed
    await sleep(50)
    const leftovers = groupPids(pid).length > 0
    killGroup(pid, 'SIGKILL')
    return { ...res, forced, leftovers }
  }
}

function tail(s: string): string {
  const t = s.trim().split('\n').slice(-6).join('\n    ')
  return t ? `:\n    ${t}` : ''
}

/** Is there a LISTEN socket on HOST:port (IPv4)? */
function listeningOn(port: number): boolean {
  let text: string
  try { text = readFileSync('/proc/net/tcp', 'utf8') } catch { return false }
  const want = `:${port.toString(16).toUpperCase().padStart(4, '0')}`
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f[1]?.endsWith(want) && f[3] === '0A') return true
  }
  return false
}

/** A free TCP port on HOST (the kernel's pick; closed again before use). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, HOST, () => {
      const a = s.address()
      const port = typeof a === 'object' && a ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

/** pids of every process in group `pgid`. */
function groupPids(pgid: number | undefined): number[] {
  if (pgid === undefined || pgid < 0) return []
  const out: number[] = []
  let entries: string[]
  try { entries = readdirSync('/proc') } catch { return out }
  for (const e of entries) {
    if (e.charCodeAt(0) > 57) continue
    let stat: string
    try { stat = readFileSync(`/proc/${e}/stat`, 'utf8') } catch { continue }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(e))
  }
  return out
}

/** utime+stime in seconds of every process in group `pgid` (all threads: /proc/PID/stat is per process). */
function groupCpu(pgid: number | undefined): number {
  if (pgid === undefined || pgid < 0) return NaN
  let ticks = 0
  for (const pid of groupPids(pgid)) {
    let stat: string
    try { stat = readFileSync(`/proc/${pid}/stat`, 'utf8') } catch { continue }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks += Number(f[11]) + Number(f[12]) // utime (14), stime (15)
  }
  return ticks / 100 // USER_HZ
}

/** VmHWM (peak RSS) summed over the group, in MB (here 1 MB = 2^20 B: VmHWM kB / 1024). */
function groupPeakRssMB(pgid: number | undefined): { mb: number; procs: number } {
  let kb = 0
  const pids = groupPids(pgid)
  for (const pid of pids) {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (m) kb += Number(m[1])
    } catch { /* gone */ }
  }
  return { mb: kb / 1024, procs: pids.length }
}

// ---------------------------------------------------------------- tools

function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(dir || '.', cmd)
    if (existsSync(p)) return p
  }
  return null
}

function compileC(): { loadgen: string; echo: string } {
  const cc = which('cc') ?? which('gcc') ?? which('clang')
  if (!cc) throw new Error('no C compiler (cc): run `sh bench/peers-setup.sh` (installs gcc)')
  const out = { loadgen: join(TMP, 'loadgen'), echo: join(TMP, 'echo') }
  for (const name of ['loadgen', 'echo'] as const) {
    const r = spawnSync(cc, ['-O2', '-o', out[name], join(ROOT, 'bench/c', `${name}.c`)], { encoding: 'utf8', timeout: 60_000 })
    if (r.status !== 0) throw new Error(`cc -O2 bench/c/${name}.c failed:\n${r.stderr}${r.error ?? ''}`)
  }
  return out
}

/** nginx with the stream module: the load_module line needed (or '' if built in), or why not. */
function nginxStream(): { bin: string; loadModule: string; version: string } | { why: string } {
  const bin = which('nginx')
  if (!bin) return { why: 'nginx not installed (sh bench/peers-setup.sh installs nginx + libnginx-mod-stream)' }
  const v = spawnSync(bin, ['-V'], { encoding: 'utf8', timeout: 10_000 })
  const text = `${v.stdout ?? ''}${v.stderr ?? ''}`
  const version = /nginx version: (\S+)/.exec(text)?.[1] ?? 'nginx'
  for (const so of ['/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/lib64/nginx/modules/ngx_stream_module.so', '/usr/share/nginx/modules/ngx_stream_module.so']) {
    if (existsSync(so)) return { bin, loadModule: `load_module ${so};`, version }
  }
  if (/--with-stream(\s|$)/.test(text)) return { bin, loadModule: '', version }
  return { why: `${version} has no stream module (Debian: apt-get install libnginx-mod-stream)` }
}

function toolVersion(cmd: string, args: string[], re: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 })
  return re.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? '?'
}

// ---------------------------------------------------------------- targets

interface Target {
  key: Key
  label: string
  /** start the proxy in front of `backendPort`, listening on a fresh port */
  start(backendPort: number, tag: string): Promise<Proc>
}

let profileDir = ''

function nodeTarget(key: 'net' | 'cluster', label: string, script: string, extra: string[]): Target {
  return {
    key, label,
    start: async (backendPort) => {
      const port = await freePort()
      return Proc.start(label, NODE, [script, '--listen', `${HOST}:${port}`, '--backend', `${HOST}:${backendPort}`, ...extra], { kind: 'json' })
    },
  }
}

function syncsockTarget(): Target {
  return {
    key: 'syncsock',
    label: `syncsock (${CFG.shards} shards)`,
    start: async (backendPort, tag) => {
      const port = await freePort()
      const prof = CFG.profile ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, tag)}`] : []
      return Proc.start('syncsock', NODE, [...prof, CFG.syncsockCli, 'proxy', '--listen', `${HOST}:${port}`,
        '--backend', `${HOST}:${backendPort}`, '--shards', String(CFG.shards), ...CFG.syncsockExtra], { kind: 'json' })
    },
  }
}

function haproxyTarget(bin: string): Target {
  return {
    key: 'haproxy',
    label: 'HAProxy (nbthread 2)',
    start: async (backendPort, tag) => {
      const port = await freePort()
      const cfg = join(TMP, `haproxy-${tag}.cfg`)
      writeFileSync(cfg, [
        'global',
        '  nbthread 2',
        '  maxconn 4000', // 2 fds a connection: stays under a 20,000 fd limit
        'defaults',
        '  mode tcp',
        '  timeout connect 5s',
        '  timeout client 60s',
        '  timeout server 60s',
        'frontend fe',
        `  bind ${HOST}:${port}`,
        '  default_backend be',
        'backend be',
        '  balance roundrobin',
        `  server s1 ${HOST}:${backendPort}`,
        '',
      ].join('\n'))
      // -db: foreground, no daemon; -f: our config only
      return Proc.start('haproxy', bin, ['-db', '-f', cfg], { kind: 'tcp', port })
    },
  }
}

function nginxTarget(bin: string, loadModule: string): Target {
  return {
    key: 'nginx',
    label: 'nginx stream (2 workers)',
    start: async (backendPort, tag) => {
      const port = await freePort()
      const dir = join(TMP, `nginx-${tag}`)
      mkdirSync(dir, { recursive: true })
      const cfg = join(dir, 'nginx.conf')
      writeFileSync(cfg, [
        loadModule,
        'daemon off;',
        'master_process on;',
        'worker_processes 2;',
        'worker_rlimit_nofile 20000;',
        `pid ${join(dir, 'nginx.pid')};`,
        `error_log ${join(dir, 'error.log')} warn;`,
        'events { worker_connections 10000; }',
        'stream {',
        `  upstream be { server ${HOST}:${backendPort}; }`,
        `  server { listen ${HOST}:${port}; proxy_pass be; }`,
        '}',
        '',
      ].join('\n'))
      // -p: prefix (no /var/log, /run); -e: the error log before the config is read
      return Proc.start('nginx', bin, ['-p', dir, '-e', join(dir, 'error.log'), '-c', cfg], { kind: 'tcp', port })
    },
  }
}

// ---------------------------------------------------------------- scenarios

interface LoadResult {
  mode: string; conns: number; count: number; seconds: number; rate: number
  p50_us: number; p90_us: number; p99_us: number; p999_us: number; max_us: number
  errors: number; errors_in_window: number; first_error: string; cpu_us: number
  /** proxy CPU in the window: seconds, µs per connection/message, % of one core */
  proxyCpuS: number; proxyCpuUsPerOp: number; proxyCpuPct: number
  backendCpuPct: number; loadgenCpuPct: number
}

/** Run the C load generator against the proxy; sample the proxy's (and backend's) CPU at its window edges. */
async function loadgen(bin: string, mode: 'connrate' | 'pingpong', port: number, proxy: Proc, backend: Proc): Promise<LoadResult> {
  const conns = mode === 'connrate' ? CFG.conc : CFG.conns
  const child = spawn(bin, [mode, HOST, String(port), String(conns), String(CFG.warmupMs), String(CFG.durationMs), String(CFG.msgBytes)],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  live.add(child)
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000) })
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => { live.delete(child); res(code) }))
  let a = { p: NaN, b: NaN, t: 0n }
  let z = { p: NaN, b: NaN, t: 0n }
  type Raw = Omit<LoadResult, 'proxyCpuS' | 'proxyCpuUsPerOp' | 'proxyCpuPct' | 'backendCpuPct' | 'loadgenCpuPct'> & { setup_failed?: boolean }
  const got: { result: Raw | null } = { result: null }
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let m: Record<string, unknown>
    try { m = JSON.parse(line) } catch { return }
    if (m.phase === 'measure') a = { p: groupCpu(proxy.pid), b: groupCpu(backend.pid), t: process.hrtime.bigint() }
    else if (m.phase === 'end') z = { p: groupCpu(proxy.pid), b: groupCpu(backend.pid), t: process.hrtime.bigint() }
    else if (m.mode) got.result = m as unknown as Raw
  })
  const limit = CFG.warmupMs + CFG.durationMs + 20_000
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([exited, new Promise<'timeout'>((res) => { timer = setTimeout(() => res('timeout'), limit) })])
  clearTimeout(timer)
  if (code === 'timeout') { killGroup(child.pid, 'SIGKILL'); throw new Error(`loadgen ${mode}: no result within ${limit} ms`) }
  await sleep(0) // let the last 'line' events through
  const r = got.result
  if (!r) throw new Error(`loadgen ${mode}: exit ${code}, no result${tail(stderr)}`)
  if (r.setup_failed) throw new Error(`loadgen ${mode}: set-up failed (${r.errors} errors, first: ${r.first_error})`)
  if (code !== 0) throw new Error(`loadgen ${mode}: exit ${code}${tail(stderr)}`)
  if (r.count === 0) throw new Error(`loadgen ${mode}: nothing completed in the window (${r.errors} errors, first: ${r.first_error || 'none'})`)
  const wall = Number(z.t - a.t) / 1e9
  const proxyCpuS = z.p - a.p
  return {
    ...r,
    proxyCpuS,
    proxyCpuUsPerOp: (proxyCpuS * 1e6) / r.count,
    proxyCpuPct: (proxyCpuS / wall) * 100,
    backendCpuPct: ((z.b - a.b) / wall) * 100,
    loadgenCpuPct: (r.cpu_us / 1e6 / r.seconds) * 100,
  }
}

interface BulkResult {
  streams: number; gbps: number; seconds: number; retransmits: number | null
  proxyCpuPct: number; clientCpuPct: number | null; serverCpuPct: number | null
}

/** iperf3 client through the proxy (the proxy's backend is `iperf3 -s`). */
async function iperf(bin: string, port: number, streams: number, proxy: Proc): Promise<BulkResult> {
  const args = ['-c', HOST, '-p', String(port), '-t', String(CFG.bulkSeconds), '-O', String(CFG.bulkOmit), '-P', String(streams), '-J', '--connect-timeout', '5000']
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  live.add(child)
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-2000) })
  const c0 = groupCpu(proxy.pid)
  const t0 = process.hrtime.bigint()
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => { live.delete(child); res(code) }))
  const limit = (CFG.bulkSeconds + CFG.bulkOmit) * 1000 + 20_000
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([exited, new Promise<'timeout'>((res) => { timer = setTimeout(() => res('timeout'), limit) })])
  clearTimeout(timer)
  const cpu = groupCpu(proxy.pid) - c0
  const wall = Number(process.hrtime.bigint() - t0) / 1e9
  if (code === 'timeout') { killGroup(child.pid, 'SIGKILL'); throw new Error(`iperf3 -P ${streams}: no result within ${limit} ms`) }
  let j: { error?: string; end?: { sum_received?: { bits_per_second: number; seconds: number }; sum_sent?: { retransmits?: number }; cpu_utilization_percent?: { host_total: number; remote_total: number } } }
  try { j = JSON.parse(out) } catch { throw new Error(`iperf3 -P ${streams}: exit ${code}, unreadable output${tail(err || out)}`) }
  if (j.error || !j.end?.sum_received) throw new Error(`iperf3 -P ${streams}: ${j.error ?? `exit ${code}, no summary`}`)
  return {
    streams,
    gbps: j.end.sum_received.bits_per_second / 1e9,
    seconds: j.end.sum_received.seconds,
    retransmits: j.end.sum_sent?.retransmits ?? null,
    proxyCpuPct: (cpu / wall) * 100,
    clientCpuPct: j.end.cpu_utilization_percent?.host_total ?? null,
    serverCpuPct: j.end.cpu_utilization_percent?.remote_total ?? null,
  }
}

// ---------------------------------------------------------------- run

interface Sample {
  round: number
  key: Key
  label: string
  connrate?: LoadResult
  pingpong?: LoadResult
  bulk1?: BulkResult
  bulk4?: BulkResult
  rssEchoMB?: number
  rssBulkMB?: number
  procs?: number
  exits: { phase: string; code: number | null; signal: NodeJS.Signals | null; forced: boolean; leftovers: boolean }[]
  errors: string[]
}

const M = machine()
TMP = mkdtempSync(join(tmpdir(), 'syncsock-proxy-bench-'))
console.log(`bench/proxy.ts${QUICK ? ' --quick' : ''}: L4 proxies, one load generator (C, 1 thread), one echo backend (C, 1 thread) / iperf3`)
console.log(`machine: ${machineLine(M)}`)
const bins = compileC()

// which targets can run, and why not
const skipped: { key: Key; why: string }[] = []
const targets: Target[] = []
const versions: Record<string, string> = { node: process.versions.node }
const iperfBin = which('iperf3')
if (iperfBin) versions.iperf3 = toolVersion(iperfBin, ['--version'], /iperf (\S+)/)
const bulkWhy = !CFG.bulk ? 'bulk skipped (--no-bulk)' : !iperfBin ? 'bulk skipped: iperf3 not installed (sh bench/peers-setup.sh)' : ''

// the shared echo backend: started once, its CPU shown per scenario
const echo = await Proc.start('echo', bins.echo, ['0', HOST], { kind: 'json' })

for (const key of WANTED) {
  if (key === 'net') targets.push(nodeTarget('net', 'node net (1 proc)', 'bench/servers/net-proxy.ts', []))
  if (key === 'cluster') targets.push(nodeTarget('cluster', 'node cluster (2 procs)', 'bench/servers/cluster-proxy.ts', ['--workers', '2']))
  if (key === 'haproxy') {
    const bin = which('haproxy')
    if (!bin) skipped.push({ key, why: 'HAProxy not installed (sh bench/peers-setup.sh)' })
    else { versions.haproxy = toolVersion(bin, ['-v'], /version (\S+)/); targets.push(haproxyTarget(bin)) }
  }
  if (key === 'nginx') {
    const n = nginxStream()
    if ('why' in n) skipped.push({ key, why: n.why })
    else { versions.nginx = n.version; targets.push(nginxTarget(n.bin, n.loadModule)) }
  }
  if (key === 'syncsock') {
    // Probe: start it once in front of the echo backend; if it cannot, it is skipped with the reason.
    const t = syncsockTarget()
    try {
      // profiles outside the repo (bench/results ignores only *.json); kept after the run
      if (CFG.profile) { profileDir = join(tmpdir(), 'syncsock-proxy-profile'); rmSync(profileDir, { recursive: true, force: true }) }
      const p = await t.start(echo.port, 'probe')
      await p.stop()
      targets.push(t)
    } catch (e) {
      // one line: the first lines of what it printed, joined
      const [first, ...more] = (e as Error).message.split('\n').map((l) => l.trim()).filter(Boolean)
      const why = [first, more.slice(0, 3).join(' | ')].filter(Boolean).join(' ')
      skipped.push({ key, why: `syncsock proxy not available: ${why}` })
    }
  }
}

for (const s of skipped) console.log(s.key === 'syncsock' ? s.why : `${s.key}: skipped: ${s.why}`)
if (bulkWhy) console.log(bulkWhy)
console.log(`versions: ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ')}`)
console.log(`conn rate: ${CFG.conc} workers; ping-pong: ${CFG.conns} conns x ${CFG.msgBytes} B; warm-up ${CFG.warmupMs} ms, measured ${CFG.durationMs} ms; ` +
  `bulk: iperf3 -t ${CFG.bulkSeconds} -O ${CFG.bulkOmit}; ${CFG.rounds} round(s), targets rotated each round${CFG.profile ? '; syncsock PROFILED (--cpu-prof: slower)' : ''}`)
console.log('')

const samples: Sample[] = []
let failures = 0

for (let round = 1; round <= CFG.rounds; round++) {
  const order = targets.map((_, i) => targets[(i + round - 1) % targets.length])
  if (CFG.rounds > 1) console.log(`round ${round} of ${CFG.rounds}: ${order.map((t) => t.key).join(', ')}`)
  for (const t of order) {
    const s: Sample = { round, key: t.key, label: t.label, exits: [], errors: [] }
    samples.push(s)
    process.stdout.write(`  ${t.label}: `)
    // phase 1: in front of the echo backend: conn rate, ping-pong
    let p: Proc | null = null
    try {
      if (!echo.alive) throw new Error(`the echo backend died${tail(echo.stderrTail)}`)
      p = await t.start(echo.port, `r${round}-echo`)
      s.connrate = await loadgen(bins.loadgen, 'connrate', p.port, p, echo)
      process.stdout.write(`${fmt(s.connrate.rate)} conn/s; `)
      s.pingpong = await loadgen(bins.loadgen, 'pingpong', p.port, p, echo)
      process.stdout.write(`${fmt(s.pingpong.rate)} msg/s; `)
    } catch (e) {
      s.errors.push((e as Error).message)
      process.stdout.write(`FAILED: ${(e as Error).message}; `)
    } finally {
      if (p) {
        const r = groupPeakRssMB(p.pid)
        s.rssEchoMB = r.mb
        s.procs = r.procs
        s.exits.push({ phase: 'echo', ...await p.stop() })
        if (p.stderrTail && s.errors.length) console.log(`\n    ${t.key} stderr (tail):${tail(p.stderrTail)}`)
      }
    }
    // phase 2: in front of iperf3 -s: bulk, 1 and 4 streams
    if (!bulkWhy) {
      let srv: Proc | null = null
      p = null
      try {
        const iport = await freePort()
        srv = await Proc.start('iperf3 -s', iperfBin!, ['-s', '-B', HOST, '-p', String(iport), '--forceflush'], { kind: 'line', re: /Server listening/ })
        p = await t.start(iport, `r${round}-bulk`)
        s.bulk1 = await iperf(iperfBin!, p.port, 1, p)
        await sleep(200) // iperf3 -s takes a moment to be ready for the next test
        s.bulk4 = await iperf(iperfBin!, p.port, 4, p)
        process.stdout.write(`bulk ${s.bulk1.gbps.toFixed(1)}/${s.bulk4.gbps.toFixed(1)} Gbit/s; `)
      } catch (e) {
        s.errors.push((e as Error).message)
        process.stdout.write(`bulk FAILED: ${(e as Error).message}; `)
      } finally {
        if (p) {
          s.rssBulkMB = groupPeakRssMB(p.pid).mb
          s.exits.push({ phase: 'bulk', ...await p.stop() })
        }
        if (srv) await srv.stop()
      }
    }
    const bad = s.exits.filter((x) => x.forced || x.leftovers || (x.code !== 0 && x.signal !== 'SIGTERM'))
    const peak = Math.max(s.rssEchoMB ?? 0, s.rssBulkMB ?? 0)
    process.stdout.write(`peak RSS ${peak.toFixed(0)} MB; stopped (${s.exits.map((x) => `${x.phase} exit ${x.signal ?? x.code}${x.forced ? ' SIGKILLed' : ''}${x.leftovers ? ' +leftovers' : ''}`).join(', ')})\n`)
    if (s.errors.length || bad.length) failures++
  }
}
const echoExit = await echo.stop()

// ---------------------------------------------------------------- aggregate

interface Col {
  id: string
  head: string
  higherBetter: boolean
  get: (s: Sample) => number | undefined
  show: (v: number) => string
}
const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 2 : 1)
const COLS: Col[] = [
  { id: 'bulk1', head: 'bulk 1 Gbit/s', higherBetter: true, get: (s) => s.bulk1?.gbps, show: (v) => v.toFixed(1) },
  { id: 'bulk4', head: 'bulk 4 Gbit/s', higherBetter: true, get: (s) => s.bulk4?.gbps, show: (v) => v.toFixed(1) },
  { id: 'connRate', head: 'conn/s', higherBetter: true, get: (s) => s.connrate?.rate, show: (v) => fmt(v) },
  { id: 'connP50', head: 'conn p50 ms', higherBetter: false, get: (s) => s.connrate?.p50_us, show: ms },
  { id: 'connP99', head: 'conn p99 ms', higherBetter: false, get: (s) => s.connrate?.p99_us, show: ms },
  { id: 'msgRate', head: 'msg/s', higherBetter: true, get: (s) => s.pingpong?.rate, show: (v) => fmt(v) },
  { id: 'msgP50', head: 'msg p50 ms', higherBetter: false, get: (s) => s.pingpong?.p50_us, show: ms },
  { id: 'msgP99', head: 'msg p99 ms', higherBetter: false, get: (s) => s.pingpong?.p99_us, show: ms },
  { id: 'cpuPerConn', head: 'CPU µs/conn', higherBetter: false, get: (s) => s.connrate?.proxyCpuUsPerOp, show: (v) => v.toFixed(0) },
  { id: 'cpuPerMsg', head: 'CPU µs/msg', higherBetter: false, get: (s) => s.pingpong?.proxyCpuUsPerOp, show: (v) => v.toFixed(1) },
  { id: 'rssMB', head: 'peak RSS MB', higherBetter: false, get: (s) => peakOf(s), show: (v) => v.toFixed(0) },
]
function peakOf(s: Sample): number | undefined {
  const xs = [s.rssEchoMB, s.rssBulkMB].filter((x): x is number => x !== undefined && x > 0)
  return xs.length ? Math.max(...xs) : undefined
}

interface Row { key: Key; label: string; values: Record<string, number | null>; rounds: Record<string, number[]> }
const rows: Row[] = targets.map((t) => {
  const mine = samples.filter((s) => s.key === t.key)
  const values: Record<string, number | null> = {}
  const rounds: Record<string, number[]> = {}
  for (const c of COLS) {
    const xs = mine.map(c.get).filter((x): x is number => x !== undefined && Number.isFinite(x))
    rounds[c.id] = xs
    // peak RSS: the max over rounds (it is a peak); everything else: the median round
    values[c.id] = xs.length === 0 ? null : c.id === 'rssMB' ? Math.max(...xs) : median(xs)
  }
  return { key: t.key, label: t.label, values, rounds }
})

// "best peer" per column: best of HAProxy / nginx when they ran, else best Node baseline
const peerRows = rows.filter((r) => PEER_KEYS.includes(r.key))
const refRows = peerRows.length ? peerRows : rows.filter((r) => NODE_KEYS.includes(r.key))
const refKind = peerRows.length ? 'best of HAProxy / nginx' : 'best Node baseline (no HAProxy / nginx ran)'
const best: Record<string, { key: Key; value: number } | null> = {}
for (const c of COLS) {
  let b: { key: Key; value: number } | null = null
  for (const r of refRows) {
    const v = r.values[c.id]
    if (v === null) continue
    if (b === null || (c.higherBetter ? v > b.value : v < b.value)) b = { key: r.key, value: v }
  }
  best[c.id] = b
}
const ratios: Record<string, Record<string, number | null>> = {}
for (const r of rows) {
  ratios[r.key] = {}
  for (const c of COLS) {
    const v = r.values[c.id]
    const b = best[c.id]
    ratios[r.key][c.id] = v === null || !b || b.value === 0 ? null : v / b.value
  }
}

// ---------------------------------------------------------------- report

console.log('')
if (CFG.rounds > 1) console.log(`each cell: the median of ${CFG.rounds} rounds (peak RSS: the max); every round in bench/results/proxy.json`)
console.log(table(['target', ...COLS.map((c) => c.head)], rows.map((r) => [r.label, ...COLS.map((c) => {
  const v = r.values[c.id]
  return v === null ? '-' : c.show(v)
})])))
console.log('')
console.log(`ratio to the best peer per column (${refKind}); for p50/p99, CPU and RSS lower is better (< 1.00x is better):`)
console.log(table(['target', ...COLS.map((c) => c.head)], [
  ['(best peer)', ...COLS.map((c) => best[c.id]?.key ?? '-')],
  ...rows.map((r) => [r.label, ...COLS.map((c) => { const x = ratios[r.key][c.id]; return x === null ? '-' : `${x.toFixed(2)}x` })]),
]))
console.log('')

// what the load generator and the backend cost next to the proxy (they must cost less)
const side = rows.map((r) => {
  const mine = samples.filter((s) => s.key === r.key)
  const med = (f: (s: Sample) => number | undefined): string => {
    const xs = mine.map(f).filter((x): x is number => x !== undefined && Number.isFinite(x))
    return xs.length ? `${median(xs).toFixed(0)}%` : '-'
  }
  return [r.label,
    med((s) => s.connrate?.proxyCpuPct), med((s) => s.connrate?.loadgenCpuPct), med((s) => s.connrate?.backendCpuPct),
    med((s) => s.pingpong?.proxyCpuPct), med((s) => s.pingpong?.loadgenCpuPct), med((s) => s.pingpong?.backendCpuPct),
    med((s) => s.bulk4?.proxyCpuPct)]
})
console.log(`CPU, % of one core (${M.nproc} cores = ${M.nproc * 100}%): proxy vs the C load generator and C echo backend in the same window`)
console.log(table(['target', 'connrate proxy', 'loadgen', 'echo', 'pingpong proxy', 'loadgen', 'echo', 'bulk4 proxy'], side))
console.log('NOTE: load generator, backends and proxy share this machine\'s cores; peak RSS sums VmHWM over the proxy\'s ' +
  'processes (cluster: primary + 2 workers, nginx: master + 2 workers), so shared pages count once per process.')
const errs = samples.filter((s) => (s.connrate?.errors_in_window ?? 0) > 0 || (s.pingpong?.errors ?? 0) > 0)
for (const s of errs) {
  console.log(`WARNING: round ${s.round} ${s.label}: load generator errors: connrate ${s.connrate?.errors_in_window ?? '-'} in window ` +
    `(${s.connrate?.first_error || '-'}), pingpong ${s.pingpong?.errors ?? '-'} (${s.pingpong?.first_error || '-'})`)
}

// targets, for the syncsock row
interface Verdict { target: string; met: boolean | null; detail: string }
const verdicts: Verdict[] = []
const ss = rows.find((r) => r.key === 'syncsock')
const valueOf = (key: Key, id: string): number | null => rows.find((r) => r.key === key)?.values[id] ?? null
const pct = (a: number, b: number): string => `${a >= b ? '+' : ''}${(((a - b) / b) * 100).toFixed(1)}%`
function compare(name: string, id: string, peer: Key | 'best'): void {
  const col = COLS.find((c) => c.id === id)!
  const mine = ss?.values[id] ?? null
  const ref = peer === 'best' ? best[id] : (valueOf(peer, id) !== null ? { key: peer, value: valueOf(peer, id)! } : best[id])
  if (mine === null || !ref) {
    verdicts.push({ target: name, met: null, detail: mine === null ? 'not measured' : `no peer value (${peer} did not run)` })
    return
  }
  const met = col.higherBetter ? mine >= ref.value : mine <= ref.value
  verdicts.push({ target: name, met, detail: `${col.show(mine)} vs ${ref.key} ${col.show(ref.value)} ${col.head} (${pct(mine, ref.value)})` })
}
if (ss) {
  compare('conn/s >= nginx', 'connRate', 'nginx')
  compare('msg/s >= HAProxy', 'msgRate', 'haproxy')
  compare('ping-pong p99 no worse than HAProxy', 'msgP99', 'haproxy')
  compare('bulk 4 streams >= HAProxy', 'bulk4', 'haproxy')
  const rss = ss.values.rssMB
  verdicts.push({ target: `peak RSS <= ${RSS_TARGET_MB} MB with ${CFG.shards} shards`, met: rss === null ? null : rss <= RSS_TARGET_MB,
    detail: rss === null ? 'not measured' : `${rss.toFixed(1)} MB` })
  for (const c of COLS) if (c.id !== 'rssMB') compare(`every column at or above the best peer: ${c.head}`, c.id, 'best')
  console.log('')
  console.log(`targets (syncsock, ${CFG.shards} shards${CFG.profile ? ', PROFILED' : ''}):`)
  for (const v of verdicts) console.log(`  ${v.met === null ? 'n/a   ' : v.met ? 'met   ' : 'MISSED'}  ${v.target}: ${v.detail}`)
} else {
  console.log('')
  console.log(`targets: not evaluated: ${skipped.find((s) => s.key === 'syncsock')?.why ?? 'syncsock not selected (--only)'}`)
}

// --profile: the hottest functions of the syncsock run (self time over every thread's profile)
let profileTop: { fn: string; selfMs: number; pct: number }[] = []
if (CFG.profile && ss) {
  profileTop = summarizeProfiles(profileDir)
  console.log('')
  console.log(`profile (syncsock, every thread, all phases; .cpuprofile files in ${profileDir}): top self time`)
  console.log(table(['function', 'self ms', '%'], profileTop.slice(0, 25).map((x) => [x.fn, x.selfMs.toFixed(0), x.pct.toFixed(1)])))
}

function summarizeProfiles(dir: string): { fn: string; selfMs: number; pct: number }[] {
  const self = new Map<string, number>()
  let total = 0
  const walk = (d: string): void => {
    let ents: string[]
    try { ents = readdirSync(d) } catch { return }
    for (const e of ents) {
      const p = join(d, e)
      if (e.endsWith('.cpuprofile')) {
        try {
          const prof = JSON.parse(readFileSync(p, 'utf8')) as { nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]; samples: number[]; timeDeltas: number[] }
          const byId = new Map(prof.nodes.map((n) => [n.id, n]))
          prof.samples.forEach((id, i) => {
            const n = byId.get(id)
            if (!n) return
            const dt = (prof.timeDeltas[i] ?? 0) / 1000
            const cf = n.callFrame
            const fn = cf.functionName === '(idle)' || cf.functionName === '(program)' || cf.functionName === '(garbage collector)'
              ? cf.functionName
              : `${cf.functionName || '(anonymous)'} ${cf.url.replace(/^file:\/\//, '').replace(ROOT, '')}:${cf.lineNumber + 1}`
            self.set(fn, (self.get(fn) ?? 0) + dt)
            if (cf.functionName !== '(idle)') total += dt
          })
        } catch { /* a truncated profile: skip */ }
      } else if (!e.includes('.')) walk(p)
    }
  }
  walk(dir)
  return [...self.entries()].filter(([fn]) => fn !== '(idle)').map(([fn, selfMs]) => ({ fn, selfMs, pct: total ? (selfMs / total) * 100 : 0 }))
    .sort((a, b) => b.selfMs - a.selfMs)
}

if (ARGS.flags['no-write'] !== true) {
  const file = writeResults('proxy', {
    config: CFG,
    versions,
    machine: M,
    skipped,
    bulk: bulkWhy || 'iperf3',
    reference: refKind,
    columns: COLS.map((c) => ({ id: c.id, head: c.head, higherBetter: c.higherBetter })),
    rows,
    best,
    ratios,
    targets: verdicts,
    profileTop: profileTop.slice(0, 50),
    samples,
    echoBackendExit: echoExit,
    ok: failures === 0,
  }, ARGS)
  console.log(`\nresults: ${file}`)
}
if (failures) {
  console.log(`FAILED: ${failures} target run(s) had errors or did not stop cleanly (see above / the JSON samples)`)
  process.exitCode = 1
}
