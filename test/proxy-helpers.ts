// Helpers for the end-to-end tests of `syncsock proxy` (test/proxy-*.test.ts): the CLI as a child
// process, backends in the test process that the tests script per connection, deterministic byte
// streams checked by hash, RSS of the proxy process, and a per-test scope that kills every child
// and closes every server and socket it made, also when the test fails or times out.
//
// Backends: one node:net server per backend, half-open (allowHalfOpen). The proxy's own health
// connections reach them too, so a connection does nothing special unless the client's first
// bytes are a command line starting with "@@"; anything else is echoed (a health ping gets its
// answer, a FIN is answered with a FIN). Commands:
//   @@WHO\n                                   answer "<backend name>\n", stay in command mode
//   @@ID <token>\n                            remember this socket's fate under <token> (end, error, close)
//   @@XFER <id> <inBytes> <outBytes> <seed> <pauseMs> <waitEof>\n
//       the rest of the connection is a transfer: hash every byte received (expect inBytes, then
//       the client's FIN); write outBytes of stream(seed) with backpressure — at once, or only
//       after the client's FIN when waitEof is 1 — then FIN. pauseMs > 0: do not read for that long
//       first (both ends writing while not reading: the Kuma #5373 situation).
//   @@RST\n                                   reset the connection (RST to the proxy)
import net from 'node:net'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { createCipheriv, createHash, type Hash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { test as uvuTest } from 'uvu'

export const BIN = process.env.SS_PROXY_CLI ?? new URL('../bin/syncsock.ts', import.meta.url).pathname
export const HOST = '127.0.0.1'
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
export const MiB = 1 << 20

// ------------------------------------------------------------------------------------ scope

type Closer = () => Promise<void> | void
/** What one test made: closed in reverse order at the end of the test, whatever happened. */
export class Scope {
  private closers: Closer[] = []
  add(c: Closer): void { this.closers.push(c) }
  socket<T extends net.Socket>(s: T): T { this.add(() => { s.destroy() }); return s }
  async close(): Promise<void> {
    for (const c of this.closers.reverse()) { try { await c() } catch { /* best effort */ } }
    this.closers = []
  }
}

/**
 * uvu's test with a time bound and a scope: `fn` gets a Scope whose children, servers and
 * sockets are all gone when the test settles (pass, fail or timeout).
 */
export function test(name: string, fn: (s: Scope) => Promise<void>, timeoutMs = 60_000): void {
  uvuTest(name, async () => {
    const scope = new Scope()
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        fn(scope),
        new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`test "${name}" timed out after ${timeoutMs} ms`)), timeoutMs) }),
      ])
    } finally {
      clearTimeout(timer)
      await scope.close()
    }
  })
}
export const run = () => uvuTest.run()

/** Poll until cond() holds; throws after timeoutMs naming `what`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}

/** Reject if `p` has not settled within ms. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`${what} did not settle in ${ms} ms`)), ms) }),
  ])
}

// ------------------------------------------------------------------------------------ the CLI

export interface ProxyInfo {
  listening: { host: string; port: number }
  shards: number
  pid: number
  backends: { host: string; port: number }[]
}
export type Stats = Record<string, unknown> & { active?: number; accepted?: number }

export interface ProxyProc {
  child: ChildProcess
  info: ProxyInfo
  port: number
  pid: number
  stderr: () => string
  /** every stats object printed so far (the `stats` of each `{"stats":…}` line) */
  stats: Stats[]
  /** stdout lines after the first that are not stats lines */
  other: string[]
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  alive: () => boolean
}

const children = new Set<ChildProcess>()
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL') } catch { /* gone */ } } })

function spawnCli(args: string[], nodeArgs: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [...nodeArgs, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** Kill a child we started and wait until it is gone (bounded). */
export function killChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(resolve, 3000)
    child.once('exit', () => { clearTimeout(t); resolve() })
    child.kill('SIGKILL')
  })
}

/**
 * `syncsock proxy <args>`; resolves with its first stdout line parsed. Killed when the scope
 * closes. `nodeArgs` go to node before the script (e.g. V8 heap limits).
 */
export async function startProxy(scope: Scope, args: string[], opts: { timeoutMs?: number; nodeArgs?: string[] } = {}): Promise<ProxyProc> {
  const timeoutMs = opts.timeoutMs ?? 20_000
  const child = spawnCli(['proxy', ...args], opts.nodeArgs)
  scope.add(() => killChild(child))
  let err = ''
  child.stderr!.on('data', (d) => { err += d; if (err.length > 100_000) err = err.slice(-50_000) })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })))
  const stats: Stats[] = []
  const other: string[] = []
  const rl = createInterface({ input: child.stdout! })
  const first = await within(new Promise<string>((resolve, reject) => {
    rl.once('line', resolve)
    void exited.then(({ code, signal }) => reject(new Error(`proxy exited (${code ?? signal}) before its first line; stderr: ${err}`)))
  }), timeoutMs, `proxy's first line (stderr: ${err})`)
  let info: ProxyInfo
  try { info = JSON.parse(first) as ProxyInfo } catch { throw new Error(`first line is not JSON: ${first}`) }
  rl.on('line', (l) => {
    let v: unknown
    try { v = JSON.parse(l) } catch { other.push(l); return }
    const s = (v as { stats?: Stats }).stats
    if (s && typeof s === 'object') { stats.push(s); if (stats.length > 200) stats.splice(0, 100) } else other.push(l)
  })
  return {
    child, info, port: info.listening.port, pid: info.pid ?? child.pid!, stderr: () => err, stats, other, exited,
    alive: () => child.exitCode === null && child.signalCode === null,
  }
}

/** Run the CLI to its end (bounded): exit code, stdout, stderr. */
export async function runCli(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const child = spawnCli(args)
  let stdout = '', stderr = ''
  child.stdout!.on('data', (d) => { stdout += d })
  child.stderr!.on('data', (d) => { stderr += d })
  try {
    const [code, signal] = await within(new Promise<[number | null, string | null]>((r) => child.once('exit', (c, s) => r([c, s]))), timeoutMs, `syncsock ${args.join(' ')}`)
    // 'exit' can come before the pipes are drained
    await Promise.all([child.stdout!, child.stderr!].map((p) => new Promise<void>((r) => { if (p.readableEnded || p.destroyed) r(); else p.once('close', () => r()) })))
    return { code, signal, stdout, stderr }
  } finally { await killChild(child) }
}

/** The next stats line (printed after now) for which pred holds; bounded. */
export async function nextStats(p: ProxyProc, pred: (s: Stats) => boolean, timeoutMs: number, what: string): Promise<Stats> {
  let seen = p.stats.length
  let found: Stats | undefined
  await waitFor(() => {
    for (; seen < p.stats.length; seen++) if (pred(p.stats[seen])) { found = p.stats[seen]; return true }
    if (seen > p.stats.length) seen = p.stats.length // trimmed
    if (!p.alive()) throw new Error(`proxy exited while waiting for ${what}; stderr: ${p.stderr()}`)
    return false
  }, timeoutMs, `${what} (last stats: ${JSON.stringify(p.stats.at(-1))})`, 50)
  return found!
}

/** A numeric stats field (0 when absent). */
export const num = (s: Stats | undefined, k: string): number => {
  const v = s?.[k]
  return typeof v === 'number' ? v : 0
}

/** kB of a /proc/PID/status field (VmRSS: resident now; VmHWM: peak resident). */
export function procKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`)
  return Number(m[1])
}
export const mb = (kb: number) => (kb / 1024).toFixed(1)

// ------------------------------------------------------------------------------------ streams

const ZEROS = Buffer.alloc(256 << 10)
/** A deterministic pseudo-random byte stream (AES-128-CTR keystream of a seed): cheap, reproducible. */
export class ByteStream {
  private cipher
  constructor(seed: number | string) {
    const key = createHash('sha256').update(`syncsock-proxy-test:${seed}`).digest().subarray(0, 16)
    this.cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  }
  next(n: number): Buffer {
    const out: Buffer[] = []
    while (n > 0) { const k = Math.min(n, ZEROS.length); out.push(this.cipher.update(ZEROS.subarray(0, k))); n -= k }
    return out.length === 1 ? out[0] : Buffer.concat(out)
  }
}
/** sha256 of the first n bytes of stream(seed). */
export function streamHash(seed: number | string, n: number): string {
  const s = new ByteStream(seed), h = createHash('sha256')
  while (n > 0) { const k = Math.min(n, 1 << 20); h.update(s.next(k)); n -= k }
  return h.digest('hex')
}

/** Resolve on 'drain'; reject if the socket closes or fails first. */
function drained(s: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (e?: Error) => { s.off('drain', ok); s.off('close', gone); s.off('error', done); if (e) reject(e); else resolve() }
    const ok = () => done()
    const gone = () => done(new Error('socket closed while waiting for drain'))
    s.on('drain', ok); s.once('close', gone); s.once('error', done)
  })
}

/** Write n bytes of stream(seed) with backpressure (wait for drain); resolves with their sha256. */
export async function pump(s: net.Socket, n: number, seed: number | string, opts: { chunk?: number; delayMs?: number; onChunk?: (sent: number) => void } = {}): Promise<string> {
  const st = new ByteStream(seed), h = createHash('sha256'), chunk = opts.chunk ?? 64 << 10
  let sent = 0
  while (sent < n) {
    if (s.destroyed || s.writableEnded) throw new Error(`socket gone after ${sent}/${n} bytes written`)
    const b = st.next(Math.min(chunk, n - sent))
    h.update(b); sent += b.length
    const ok = s.write(b)
    opts.onChunk?.(sent)
    if (!ok) await drained(s)
    if (opts.delayMs) await sleep(opts.delayMs)
  }
  return h.digest('hex')
}

// ------------------------------------------------------------------------------------ backends

export interface XferResult { id: string; recvBytes: number; recvHash: string; sentHash: string; sentBytes: number; error?: string }
export interface SockFate { ended: boolean; error?: string; closed: boolean; hadError: boolean }

export interface TestBackend {
  readonly name: string
  readonly port: number
  /** connections accepted since start (health connections included) */
  accepts: number
  readonly sockets: Set<net.Socket>
  /** transfers finished (both directions done), by id */
  readonly xfers: Map<string, XferResult>
  /** transfers under way, by id: how far each direction got (for failure messages) */
  readonly live: Map<string, { recv: number; sent: number; eof: boolean; fin: boolean; closed: boolean }>
  /** the fate of sockets that sent @@ID <token> */
  readonly fates: Map<string, SockFate>
  /** bytes of transfers received so far (all connections) */
  xferIn: number
  /** bytes of transfers written so far (accepted by write) */
  xferOut: number
  /** close the listener and destroy every connection (a killed backend) */
  kill(): Promise<void>
  /** listen again on the same port */
  restart(): Promise<void>
  readonly listening: boolean
}

const allBackends = new Set<TestBackend>()
/** What the backends know of transfer `id` (for failure messages). */
function backendView(id: string): string {
  for (const b of allBackends) {
    const l = b.live.get(id)
    if (l) return `backend ${b.name}: received ${l.recv}${l.eof ? ' and FIN' : ''}, sent ${l.sent}${l.fin ? ' and FIN' : ''}${l.closed ? ', closed' : ''}`
  }
  return 'no backend saw it'
}

/** A backend server in this process; see the commands at the top. Closed with the scope. */
export async function startBackend(scope: Scope, name: string, port = 0): Promise<TestBackend> {
  const sockets = new Set<net.Socket>()
  let server: net.Server | null = null
  const b: TestBackend = {
    name, port, accepts: 0, sockets, xfers: new Map(), live: new Map(), fates: new Map(), xferIn: 0, xferOut: 0,
    get listening() { return server !== null },
    async kill() {
      const srv = server
      server = null
      if (!srv) return
      const done = new Promise<void>((r) => srv.close(() => r()))
      for (const s of [...sockets]) s.destroy()
      await done
    },
    async restart() {
      if (server) return
      server = makeServer()
      await listen(server, b.port)
    },
  }
  const makeServer = () => {
    const srv = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
      b.accepts++
      sockets.add(s)
      s.on('error', () => {})
      s.once('close', () => sockets.delete(s))
      serve(b, s)
    })
    return srv
  }
  const listen = (srv: net.Server, p: number) => new Promise<void>((resolve, reject) => {
    srv.once('error', reject)
    srv.listen({ port: p, host: HOST }, () => { srv.off('error', reject); resolve() })
  })
  server = makeServer()
  await listen(server, port)
  ;(b as { port: number }).port = (server.address() as net.AddressInfo).port
  allBackends.add(b)
  scope.add(() => { allBackends.delete(b); return b.kill() })
  return b
}

function serve(b: TestBackend, s: net.Socket): void {
  let buf: Buffer = Buffer.alloc(0)
  let mode: 'cmd' | 'echo' | 'xfer' = 'cmd'
  const onData = (d: Buffer) => {
    if (mode === 'echo') { s.write(d); return }
    if (mode !== 'cmd') return
    buf = buf.length ? Buffer.concat([buf, d]) : d
    while (mode === 'cmd' && buf.length > 0) {
      if (buf[0] !== 0x40 || (buf.length > 1 && buf[1] !== 0x40)) { mode = 'echo'; s.write(buf); buf = Buffer.alloc(0); return }
      const nl = buf.indexOf(0x0a)
      if (nl < 0) { if (buf.length > 4096) { mode = 'echo'; s.write(buf); buf = Buffer.alloc(0) } return }
      const [cmd, ...a] = buf.subarray(2, nl).toString().split(' ')
      buf = buf.subarray(nl + 1)
      if (cmd === 'WHO') s.write(`${b.name}\n`)
      else if (cmd === 'ID') {
        const fate: SockFate = { ended: false, closed: false, hadError: false }
        b.fates.set(a[0], fate)
        s.once('end', () => { fate.ended = true })
        s.once('error', (e: NodeJS.ErrnoException) => { fate.error = e.code ?? e.message })
        s.once('close', (hadError) => { fate.closed = true; fate.hadError = hadError })
      } else if (cmd === 'RST') { s.resetAndDestroy(); return }
      else if (cmd === 'XFER') {
        mode = 'xfer'
        s.off('data', onData)
        s.off('end', onEnd)
        xfer(b, s, { id: a[0], inBytes: Number(a[1]), outBytes: Number(a[2]), seed: a[3], pauseMs: Number(a[4]), waitEof: a[5] === '1' }, buf)
        return
      } else { mode = 'echo'; s.write(`unknown command ${cmd}\n`) }
    }
  }
  const onEnd = () => { if (!s.destroyed) s.end() }
  s.on('data', onData)
  s.on('end', onEnd)
}

function xfer(b: TestBackend, s: net.Socket, o: { id: string; inBytes: number; outBytes: number; seed: string; pauseMs: number; waitEof: boolean }, rest: Buffer): void {
  const h: Hash = createHash('sha256')
  let recvBytes = 0
  let sentHash: string | undefined
  let recvHash: string | undefined
  let error: string | undefined
  const finish = () => {
    if (recvHash === undefined || (sentHash === undefined && error === undefined)) return
    b.xfers.set(o.id, { id: o.id, recvBytes, recvHash, sentHash: sentHash ?? '', sentBytes: o.outBytes, error })
  }
  const live = { recv: 0, sent: 0, eof: false, fin: false, closed: false }
  b.live.set(o.id, live)
  const take = (d: Buffer) => { h.update(d); recvBytes += d.length; b.xferIn += d.length; live.recv = recvBytes }
  if (rest.length) take(rest)
  const send = () => {
    pump(s, o.outBytes, o.seed, { onChunk: (n) => { b.xferOut = Math.max(b.xferOut, n); live.sent = n } })
      .then((hash) => { sentHash = hash; s.end(); live.fin = true; finish() })
      .catch((e: Error) => { error = e.message; finish() })
  }
  s.on('data', take)
  s.once('end', () => { live.eof = true; recvHash = h.digest('hex'); if (o.waitEof) send(); finish() })
  s.once('close', () => {
    live.closed = true
    if (recvHash === undefined) { error ??= 'closed before the client FIN'; recvHash = h.digest('hex'); finish() }
    else if (sentHash === undefined) { error ??= 'closed before sending everything'; finish() }
  })
  if (o.pauseMs > 0) { s.pause(); setTimeout(() => s.resume(), o.pauseMs) }
  if (!o.waitEof) send()
}

// ------------------------------------------------------------------------------------ clients

export function connect(port: number, opts: { localAddress?: string; allowHalfOpen?: boolean } = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: HOST, noDelay: true, localAddress: opts.localAddress, allowHalfOpen: opts.allowHalfOpen })
    const t = setTimeout(() => { s.destroy(); reject(new Error(`connect to ${port} timed out`)) }, 5000)
    s.once('connect', () => { clearTimeout(t); s.off('error', onErr); resolve(s) })
    const onErr = (e: Error) => { clearTimeout(t); reject(e) }
    s.once('error', onErr)
  })
}

/** Read one line (bounded); rejects on error (e.g. ECONNRESET) or EOF first. */
export function readLine(s: net.Socket, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let acc = ''
    const done = (e: Error | null, v?: string) => {
      clearTimeout(t); s.off('data', onData); s.off('error', onErr); s.off('end', onEnd)
      s.pause() // what comes next waits for the next reader (not emitted to nobody)
      if (e) reject(e); else resolve(v!)
    }
    const onData = (d: Buffer) => {
      acc += d.toString()
      const nl = acc.indexOf('\n')
      if (nl >= 0) { if (nl + 1 < acc.length) s.unshift(Buffer.from(acc.slice(nl + 1))); done(null, acc.slice(0, nl)) }
    }
    const onErr = (e: Error) => done(e)
    const onEnd = () => done(Object.assign(new Error(`EOF before a line (got ${JSON.stringify(acc)})`), { code: 'EOF' }))
    const t = setTimeout(() => done(new Error(`no line in ${timeoutMs} ms (got ${JSON.stringify(acc)})`)), timeoutMs)
    s.on('data', onData); s.once('error', onErr); s.once('end', onEnd)
    s.resume()
  })
}

/** Resolve once the socket is closed (bounded); with whether it saw a clean EOF and which error. */
export function closedFate(s: net.Socket, timeoutMs = 5000): Promise<{ eof: boolean; error?: string }> {
  const fate: { eof: boolean; error?: string } = { eof: s.readableEnded }
  s.once('end', () => { fate.eof = true })
  s.once('error', (e: NodeJS.ErrnoException) => { fate.error = e.code ?? e.message })
  s.resume() // read to EOF (a paused socket never sees the peer's FIN)
  if (s.closed) return Promise.resolve(fate)
  return within(new Promise((r) => s.once('close', () => r(fate))), timeoutMs, 'socket close')
}

/** Ask "who are you" through the proxy: the backend's name. Rejects on RST, EOF or timeout. */
export async function who(scope: Scope, port: number, opts: { localAddress?: string; keep?: boolean } = {}): Promise<{ name: string; sock: net.Socket }> {
  const s = scope.socket(await connect(port, opts))
  s.write('@@WHO\n')
  const name = await readLine(s)
  if (!opts.keep) { s.end(); await closedFate(s) }
  return { name, sock: s }
}

export interface XferOpts {
  id: string
  /** bytes the client sends / the backend sends back */
  up: number; down: number
  /** the backend answers only after the client's FIN (request, FIN, response) */
  waitEof?: boolean
  /** both ends do not read for this long at first */
  pauseMs?: number
  /** the client writes in chunks of this size, waiting delayMs after each (a slow client) */
  chunk?: number; delayMs?: number
  timeoutMs?: number
  /** called with the client's read count as bytes arrive */
  onRecv?: (n: number) => void
}
export interface ClientXfer { sentHash: string; recvHash: string; recvBytes: number; eofAt: number }

/**
 * A transfer through the proxy to a backend in XFER mode. The client writes `up` bytes of
 * stream(id:up) and then FINs, reads and hashes everything the backend sends until its FIN.
 */
export async function xferClient(scope: Scope, port: number, o: XferOpts): Promise<ClientXfer> {
  const s = scope.socket(await connect(port, { allowHalfOpen: true }))
  const h = createHash('sha256')
  let recvBytes = 0
  let failed: Error | undefined
  s.on('error', (e) => { failed = e })
  const eof = new Promise<number>((resolve, reject) => {
    s.on('data', (d: Buffer) => { h.update(d); recvBytes += d.length; o.onRecv?.(recvBytes) })
    s.once('end', () => resolve(Date.now()))
    s.once('close', () => reject(failed ?? new Error(`closed without EOF after ${recvBytes} bytes received`)))
  })
  eof.catch(() => {})
  if (o.pauseMs) { s.pause(); setTimeout(() => s.resume(), o.pauseMs) }
  s.write(`@@XFER ${o.id} ${o.up} ${o.down} ${o.id}:down ${o.pauseMs ?? 0} ${o.waitEof ? 1 : 0}\n`)
  let sent = 0, ended = false
  const work = (async () => {
    const sentHash = await pump(s, o.up, `${o.id}:up`, { chunk: o.chunk, delayMs: o.delayMs, onChunk: (n) => { sent = n } })
    s.end()
    ended = true
    const eofAt = await eof
    if (failed) throw failed
    return { sentHash, recvHash: h.digest('hex'), recvBytes, eofAt }
  })()
  return within(work, o.timeoutMs ?? 30_000, `transfer ${o.id}`).catch((e: Error) => {
    throw new Error(`${e.message}: client sent ${sent}/${o.up}${ended ? ' and FIN' : ''}, received ${recvBytes}/${o.down}, ` +
      `EOF ${s.readableEnded}, local port ${s.localPort}; ${backendView(o.id)}`)
  })
}

/** The backend's record of transfer `id` (bounded wait). */
export async function backendXfer(backends: TestBackend[], id: string, timeoutMs = 10_000): Promise<XferResult> {
  let r: XferResult | undefined
  await waitFor(() => { r = backends.map((b) => b.xfers.get(id)).find(Boolean); return r !== undefined }, timeoutMs, `the backend's side of transfer ${id}`)
  return r!
}

/** Both directions of a transfer arrived intact. */
export function checkXfer(assertIs: (a: unknown, b: unknown, msg?: string) => void, id: string, c: ClientXfer, b: XferResult, up: number, down: number): void {
  assertIs(b.error, undefined, `${id}: backend error`)
  assertIs(b.recvBytes, up, `${id}: bytes the backend received`)
  assertIs(b.recvHash, c.sentHash, `${id}: what the backend received is what the client sent`)
  assertIs(c.recvBytes, down, `${id}: bytes the client received`)
  assertIs(c.recvHash, b.sentHash, `${id}: what the client received is what the backend sent`)
}
