// `syncsock proxy` configuration: the flags (node:util parseArgs, strict), the --config JSON
// file (flags override it, key by key), validation, defaults, and the --help text. Every error
// is a ProxyUsageError whose message is ONE line naming the flag or key and the bad value; the
// CLI prints `syncsock proxy: <message>` and exits 2. Pure except for reading the config file.
//
// Hosts are IPv4 literals or `localhost` (taken as 127.0.0.1): enough for an L4 proxy in front of
// addresses, and it keeps the backend table's keys exact (no DNS answer changing under it).

import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { isIPv4 } from 'node:net'
import { resolve } from 'node:path'
import { BALANCES, MAX_BACKENDS, type Balance } from './table.ts'

export class ProxyUsageError extends Error {
  override name = 'ProxyUsageError'
}

export interface HostPort { host: string; port: number }

export interface ProxyConfig {
  listen: HostPort
  backends: HostPort[]
  balance: Balance
  shards: number | 'auto'
  /** redispatches after a failed connect (total connects per client = 1 + retries) */
  retries: number
  connectTimeoutMs: number
  healthIntervalMs: number
  graceMs: number
  statsJson: boolean
  metrics: HostPort | null
  /** the --config file (absolute), re-read on SIGHUP; null without one */
  configFile: string | null
}

export const DEFAULTS = {
  balance: 'roundrobin' as Balance,
  shards: 'auto' as const,
  retries: 2,
  connectTimeoutMs: 3000,
  healthIntervalMs: 2000,
  graceMs: 10_000,
}

/** What can change on SIGHUP without a restart (the rest is reported and kept). */
export const RELOADABLE = ['backends', 'balance', 'retries', 'connectTimeoutMs', 'healthIntervalMs', 'graceMs'] as const

const MAX_SHARDS = 255
const MAX_MS = 86_400_000

/** One option: its flag, its config-file key (the flag's name; camelCase is accepted too), its check. */
interface OptionSpec {
  flag: string
  type: 'string' | 'boolean'
  multiple?: boolean
  short?: string
}
const OPTIONS: Record<string, OptionSpec> = {
  listen: { flag: 'listen', type: 'string' },
  backend: { flag: 'backend', type: 'string', multiple: true },
  balance: { flag: 'balance', type: 'string' },
  shards: { flag: 'shards', type: 'string' },
  retries: { flag: 'retries', type: 'string' },
  'connect-timeout': { flag: 'connect-timeout', type: 'string' },
  'health-interval': { flag: 'health-interval', type: 'string' },
  grace: { flag: 'grace', type: 'string' },
  'stats-json': { flag: 'stats-json', type: 'boolean' },
  metrics: { flag: 'metrics', type: 'string' },
  config: { flag: 'config', type: 'string' },
  help: { flag: 'help', type: 'boolean', short: 'h' },
}

/** The flags as given, unvalidated except for their shape (strings as typed). */
export interface ProxyArgs {
  help: boolean
  config: string | null
  values: Record<string, string | string[] | boolean | undefined>
}

/** Parse argv (after `proxy`). Unknown flags, missing values and stray arguments are errors. */
export function parseProxyArgs(argv: readonly string[]): ProxyArgs {
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({
      args: [...argv],
      options: Object.fromEntries(Object.entries(OPTIONS).map(([k, o]) =>
        [k, { type: o.type, ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) }])),
      strict: true,
      allowPositionals: false,
      tokens: true,
    })
  } catch (e) {
    if (!String((e as { code?: string })?.code).startsWith('ERR_PARSE_ARGS_')) throw e
    throw usageFromParseArgs(e)
  }
  // a single-valued flag given twice is a mistake, not "the last one wins"
  const seen = new Set<string>()
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== 'option' || OPTIONS[t.name]?.multiple) continue
    if (seen.has(t.name)) throw new ProxyUsageError(`--${t.name}: given more than once`)
    seen.add(t.name)
  }
  const values = parsed.values as ProxyArgs['values']
  const config = values.config
  if (config === '') throw new ProxyUsageError('--config: expected a file name, got ""')
  return { help: values.help === true, config: typeof config === 'string' ? resolve(config) : null, values }
}

function usageFromParseArgs(e: unknown): ProxyUsageError {
  const err = e as { code?: string; message?: string }
  const msg = String(err?.message ?? e)
  const name = /'(-[^' ]+)/.exec(msg)?.[1]
  switch (err?.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new ProxyUsageError(`unknown flag ${name ?? msg} (syncsock proxy --help lists them)`)
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/does not take an argument/.test(msg)) return new ProxyUsageError(`${name}: takes no value`)
      return new ProxyUsageError(`${name ?? 'a flag'}: missing value`)
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new ProxyUsageError(`unexpected argument ${/'([^']*)'/.exec(msg)?.[1] ?? ''} (flags start with --; see syncsock proxy --help)`)
    default:
      return new ProxyUsageError(oneLine(msg))
  }
}

/** Read the --config file (if any), merge the flags over it, validate, fill in defaults. */
export async function loadProxyConfig(args: ProxyArgs): Promise<ProxyConfig> {
  let file: ConfigFile = new Map()
  if (args.config) {
    let text: string
    try {
      text = await readFile(args.config, 'utf8')
    } catch (e) {
      throw new ProxyUsageError(`--config ${args.config}: cannot read it (${(e as { code?: string }).code ?? (e as Error).message})`)
    }
    file = parseConfigText(text, args.config)
  }
  return resolveConfig(args, file)
}

// Config-file keys: the flag names ("connect-timeout"), their camelCase ("connectTimeout"), and
// "backends" (an array of "HOST:PORT") for the repeatable --backend.
const FILE_KEYS = ['listen', 'backends', 'balance', 'shards', 'retries', 'connect-timeout', 'health-interval', 'grace', 'stats-json', 'metrics'] as const
type FileKey = typeof FILE_KEYS[number]
const camel = (k: string) => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/** A config file's settings by canonical key, with the key as the file spelt it (errors quote it). */
export type ConfigFile = Map<FileKey, { value: unknown; name: string }>

/** JSON text → its settings by FILE_KEYS (camelCase folded in). */
export function parseConfigText(text: string, fileName: string): ConfigFile {
  const where = `--config ${fileName}`
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw new ProxyUsageError(`${where}: not valid JSON (${oneLine((e as Error).message)})`)
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ProxyUsageError(`${where}: expected a JSON object, got ${shown(v)}`)
  const out: ConfigFile = new Map()
  for (const [k, val] of Object.entries(v)) {
    const key = FILE_KEYS.find((f) => f === k || camel(f) === k)
    if (!key) throw new ProxyUsageError(`${where}: unknown key ${JSON.stringify(k)} (known: ${FILE_KEYS.join(', ')})`)
    if (out.has(key)) throw new ProxyUsageError(`${where}: "${key}" given twice (as "${out.get(key)!.name}" and "${k}")`)
    if (val !== undefined) out.set(key, { value: val, name: k })
  }
  return out
}

/** Merge flags over the file's values and validate everything. */
export function resolveConfig(args: ProxyArgs, file: ConfigFile): ProxyConfig {
  const fileName = args.config ?? ''
  const a = args.values
  const inFile = (key: FileKey) => { const f = file.get(key); return f ? { v: f.value, who: `--config ${fileName}: "${f.name}"` } : undefined }
  /** the flag's string if given, else the file's value (any JSON type), with who to blame */
  const get = (flag: string, key: FileKey): { v: unknown; who: string } | undefined =>
    a[flag] !== undefined ? { v: a[flag], who: `--${flag}` } : inFile(key)

  const listenIn = get('listen', 'listen')
  if (!listenIn) throw new ProxyUsageError('--listen HOST:PORT is required (or "listen" in the --config file)')
  const listen = hostPort(listenIn.v, listenIn.who, 0)

  let backends: HostPort[]
  const flagBackends = a.backend as string[] | undefined
  if (flagBackends && flagBackends.length > 0) {
    backends = flagBackends.map((b) => hostPort(b, '--backend', 1))
  } else if (file.has('backends')) {
    const { v, who } = inFile('backends')!
    if (!Array.isArray(v)) throw new ProxyUsageError(`${who}: expected an array of "HOST:PORT", got ${shown(v)}`)
    backends = v.map((b, i) => hostPort(b, `${who}[${i}]`, 1))
  } else {
    throw new ProxyUsageError('at least one --backend HOST:PORT is required (or "backends" in the --config file)')
  }
  const backendWho = flagBackends?.length ? '--backend' : inFile('backends')!.who
  if (backends.length === 0) throw new ProxyUsageError(`${backendWho}: at least one backend is required`)
  if (backends.length > MAX_BACKENDS) throw new ProxyUsageError(`${backendWho}: at most ${MAX_BACKENDS} backends, got ${backends.length}`)
  const keys = new Set<string>()
  for (const b of backends) {
    const k = `${b.host}:${b.port}`
    if (keys.has(k)) throw new ProxyUsageError(`${backendWho}: ${k} is listed twice`)
    keys.add(k)
  }

  const bal = get('balance', 'balance')
  let balance = DEFAULTS.balance
  if (bal) {
    if (typeof bal.v !== 'string' || !(BALANCES as readonly string[]).includes(bal.v)) {
      throw new ProxyUsageError(`${bal.who}: expected ${BALANCES.join(', ')}; got ${shown(bal.v)}`)
    }
    balance = bal.v as Balance
  }

  const sh = get('shards', 'shards')
  let shards: number | 'auto' = DEFAULTS.shards
  if (sh && sh.v !== 'auto') shards = int(sh.v, sh.who, 1, MAX_SHARDS, '"auto" or ')

  const num = (flag: string, key: FileKey, def: number, min: number, max: number) => {
    const x = get(flag, key)
    return x ? int(x.v, x.who, min, max) : def
  }
  const retries = num('retries', 'retries', DEFAULTS.retries, 0, 100)
  const connectTimeoutMs = num('connect-timeout', 'connect-timeout', DEFAULTS.connectTimeoutMs, 1, 3_600_000)
  const healthIntervalMs = num('health-interval', 'health-interval', DEFAULTS.healthIntervalMs, 50, 3_600_000)
  const graceMs = num('grace', 'grace', DEFAULTS.graceMs, 0, MAX_MS)

  let statsJson = a['stats-json'] === true
  const sj = inFile('stats-json')
  if (!statsJson && sj) {
    if (typeof sj.v !== 'boolean') throw new ProxyUsageError(`${sj.who}: expected true or false, got ${shown(sj.v)}`)
    statsJson = sj.v
  }

  const met = get('metrics', 'metrics')
  const metrics = met && met.v !== null ? hostPort(met.v, met.who, 0) : null

  return { listen, backends, balance, shards, retries, connectTimeoutMs, healthIntervalMs, graceMs, statsJson, metrics, configFile: args.config }
}

/** "HOST:PORT" with an IPv4 literal or localhost; port in [minPort, 65535]. */
export function hostPort(v: unknown, who: string, minPort: number): HostPort {
  const bad = (why: string): never => { throw new ProxyUsageError(`${who}: ${why}, got ${shown(v)}`) }
  if (typeof v !== 'string') return bad('expected "HOST:PORT"')
  const m = /^([^:]*):([0-9]{1,5})$/.exec(v)
  if (!m) return bad('expected HOST:PORT (e.g. 127.0.0.1:8080)')
  const host = m[1] === 'localhost' ? '127.0.0.1' : m[1]
  if (!isIPv4(host)) return bad('HOST must be an IPv4 address or localhost')
  const port = Number(m[2])
  if (port < minPort || port > 65535) return bad(`PORT must be ${minPort}..65535`)
  return { host, port }
}

/** A non-negative integer in [min, max], from a flag's string or a JSON number. */
function int(v: unknown, who: string, min: number, max: number, alt = ''): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^[0-9]+$/.test(v) ? Number(v) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new ProxyUsageError(`${who}: expected ${alt}an integer ${min}..${max}, got ${shown(v)}`)
  return n
}

function shown(v: unknown): string {
  let s: string
  try { s = typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v) ?? String(v) } catch { s = String(v) }
  s = oneLine(s)
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}

function oneLine(s: string): string { return s.replace(/\s*\n\s*/g, ' ') }

/** The keys that differ between two configs (for reload messages). */
export function changedKeys(a: ProxyConfig, b: ProxyConfig): (keyof ProxyConfig)[] {
  return (Object.keys(a) as (keyof ProxyConfig)[]).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
}

export const PROXY_HELP = `NAME
    syncsock proxy - layer-4 TCP proxy and load balancer on synchronous sockets

SYNOPSIS
    syncsock proxy --listen HOST:PORT --backend HOST:PORT [--backend HOST:PORT ...]
                   [--balance roundrobin|leastconn|source] [--shards N|auto]
                   [--retries N] [--connect-timeout MS] [--health-interval MS]
                   [--grace MS] [--stats-json] [--metrics HOST:PORT] [--config FILE]
    syncsock proxy --help

DESCRIPTION
    Accepts TCP connections on HOST:PORT with one worker thread ("shard") per CPU, all
    listening on the same port (SO_REUSEPORT). Each client is connected to a backend from
    the shard that accepted it, and bytes are copied both ways with backpressure. A FIN from
    one side is passed on and the other direction keeps flowing (half-close); an RST is
    passed on as an RST.

    A connect that fails is retried on the next healthy backend, up to --retries times (the
    bytes the client already sent are replayed). When no backend answers, the client's
    connection is closed cleanly and counted (syncsock_proxy_clients_no_backend_total).

    Each backend is health-checked by a TCP connect every --health-interval ms. A backend
    whose check fails is down: it gets no new clients, and it comes back by itself once a
    check connects again. A client connect that fails also keeps new clients away from that
    backend for one interval. Clients already connected are never moved.

OPTIONS
    --listen HOST:PORT
        Address to accept clients on. HOST is an IPv4 address or localhost; 0.0.0.0 for
        every interface. PORT 0 picks a free port (printed on the first output line).

    --backend HOST:PORT
        A backend server. Repeat for each one (at most 64). Required, unless the --config
        file has "backends".

    --balance roundrobin|leastconn|source
        How a client's backend is chosen among the healthy ones. roundrobin: in turn
        (default). leastconn: the one with the fewest connections over all shards. source:
        by a hash of the client's IP address, so a client keeps its backend while that
        backend is up.

    --shards N|auto
        Worker threads. auto (default) is one per CPU.

    --retries N
        How many other backends to try after a failed connect (default 2).

    --connect-timeout MS
        A backend connect not established after MS milliseconds has failed (default 3000).

    --health-interval MS
        Time between health checks of a backend, up or down (default 2000); also how long a
        backend is avoided after a client's connect to it failed.

    --grace MS
        On SIGTERM or SIGINT, how long to wait for open connections to finish before
        closing them (default 10000).

    --stats-json
        Print one JSON object per second on stdout ({"stats":{...}}) instead of the live
        status line.

    --metrics HOST:PORT
        Serve Prometheus metrics at http://HOST:PORT/metrics. Bind it to 127.0.0.1 unless
        it must be reachable from elsewhere.

    --config FILE
        Read settings from a JSON file, re-read on SIGHUP. Keys: listen, backends (an array
        of "HOST:PORT"), balance, shards, retries, connect-timeout, health-interval, grace,
        stats-json, metrics (camelCase also accepted: connectTimeout). Flags given on the
        command line override the file, key by key; --backend flags replace its backends.

    -h, --help
        Show this text.

OUTPUT
    The first line on stdout is JSON, printed once the proxy accepts connections:
        {"listening":{"host":"127.0.0.1","port":8080},"shards":4,"pid":1234,
         "backends":[{"host":"10.0.0.5","port":80}],"metrics":null}
    On a terminal, stderr shows a status line updated every second: connections, new
    connections per second, client-to-backend (in) and backend-to-client (out) Mbit/s,
    backends up/total and the worst shard's event-loop delay p99. Backends going up or down,
    reloads and signals are logged on stderr.

SIGNALS
    SIGTERM, SIGINT
        Stop accepting, let open connections finish for up to --grace ms, close what is
        left, exit 0. A second signal skips the rest of the wait.
    SIGHUP
        Re-read --config and apply backends, balance, retries, connect-timeout,
        health-interval and grace without dropping connections. Other changes need a
        restart and are reported. A config that does not parse is reported and the old one
        keeps serving.

EXIT STATUS
    0   stopped by a signal
    1   could not start (e.g. the port is in use)
    2   bad flag, value or config file (one line on stderr names it)

EXAMPLES
    syncsock proxy --listen 0.0.0.0:8080 --backend 10.0.0.5:80 --backend 10.0.0.6:80
    syncsock proxy --listen 127.0.0.1:5432 --backend 10.0.0.7:5432 --balance leastconn \\
                   --metrics 127.0.0.1:9100
    syncsock proxy --config /etc/syncsock/proxy.json     # kill -HUP to reload it

SEE ALSO
    docs/proxy.md in the syncsock package; syncsock start (a demo with two echo backends).
`
