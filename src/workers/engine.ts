// The main-thread Engine: the control plane. Spawns one shard per CPU over one
// SharedArrayBuffer, opens listeners on every shard, spreads server connections over shards,
// forwards send/close/unlink to owners (src/ss/foreign.ts), reads stats straight from the SAB,
// and stops everything in the order of DESIGN §6b. It never touches a socket itself (O1).

import { Worker } from 'node:worker_threads'
import { EventEmitter } from 'node:events'
import { access } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { Layout, C, H_STOPPING, T_ALIVE, T_EPOCH, F_FINAL, ST_DEAD, type CounterName } from '../ss/layout.ts'
import { sealShard } from '../ss/slots.ts'
import { Doorbell } from '../ss/ring.ts'
import { CounterBlock, readCounters, sumCounters, type CounterSnapshot } from '../ss/counters.ts'
import { CallbackLock } from '../ss/lock.ts'
import { ForeignOps } from '../ss/foreign.ts'
import { SyncsockError, asCode } from '../ss/errors.ts'
import { closeModeOf, type CloseModeArg } from '../ss/options.ts'
import type { ConnectOptions, RemoteSendStatus, RequestStatus, TlsListenOptions } from '../hooks/types.ts'
import type { FromShard, ListenSpec, ShardInit, ToShard } from './messages.ts'
import { BlockingPool, MATERIAL_TASK, TASK_RUNNER } from './blocking.ts'
import type { TaskOutput } from './blocking-task.ts'
import { CertStore } from '../tls/certstore.ts'
import { parseClientTls, type TlsClientSpec, type TlsServerSpec } from '../tls/options.ts'
import {
  type EngineConfig, parseConnectOptions, parseEngineOptions, parseListenOptions, parseStopOptions,
} from './options.ts'

export interface EngineOptions {
  /** shard count, or 'auto' = os.availableParallelism() */
  shards?: number | 'auto'
  /** hooks module (path or URL) loaded in every shard; its default export is defineProtocols({...}) */
  hooks?: string | URL
  maxSocketsPerShard?: number
  /** bytes per ring (power of two); default scales with the shard count */
  ringBytes?: number
  /** send queue high-water mark per socket, bytes (default 1 MiB) */
  highWater?: number
  /** send queue low-water mark: connectionWritable once a queue that went above high water drains to it (default highWater / 2) */
  lowWater?: number
  /** hard cap of a socket's send queue, bytes (default 16 MiB) */
  maxQueue?: number
  /** a peer that reads nothing for this long while we have bytes queued is dropped (default 30 s) */
  sendTimeoutMs?: number
  /** a graceful close that has not finished (flush + peer FIN) in this time is aborted (default 10 s) */
  closeTimeoutMs?: number
  /** ring records a shard consumes per loop turn before yielding (D1; default 1024) */
  drainBudget?: number
  /** connects in flight per shard (admission control; default 256) */
  maxConnectsInFlight?: number
  /** restart a shard that dies (R1; default true) */
  restartShards?: boolean
  /** a shard that is not ready in this time is a boot failure: start rejects (default 10 s) */
  bootTimeoutMs?: number
  /** crash restarts of one shard allowed within restartWindowMs; then it stays down (default 5) */
  maxRestarts?: number
  /** the window maxRestarts counts in, ms (default 60 s) */
  restartWindowMs?: number
  /** structured-cloneable; every shard sees a snapshot of it as ctx.config */
  config?: unknown
  /** module whose exported functions ctx.offload runs on the blocking pool (path or URL) */
  tasks?: string | URL
  /** the blocking pool (piscina, main thread; started on first use, closed by stop): certificate work and offloads */
  blocking?: { maxThreads?: number; maxOffloadsPerShard?: number }
}

/** engine.stop options. */
export interface StopOptions {
  /** ms without progress before what is left is aborted (default 5000) */
  graceMs?: number
}

export interface ListenOptions {
  port: number
  host?: string
  protocol: string
  backlog?: number
  /** send-queue high-water mark of this listener's sockets (default: the engine's highWater) */
  highWater?: number
  /** their low-water mark: connectionWritable once a queue drains to it (default highWater / 2) */
  lowWater?: number
  /** serve TLS on every shard (files are watched and reloaded: docs/tls.md) */
  tls?: TlsListenOptions
}

export interface Listener {
  readonly key: number
  readonly port: number
  readonly host: string
  readonly protocol: string
  close(): Promise<void>
}

export type EngineStats = CounterSnapshot & { shards: CounterSnapshot[]; main: CounterSnapshot }

const REQUIRED = [22, 12] as const

export function reusePortSupported(version = process.versions.node): boolean {
  const [a, b] = version.split('.').map(Number)
  return a > REQUIRED[0] || (a === REQUIRED[0] && b >= REQUIRED[1])
}

/**
 * One shard thread's life (DESIGN §4b): boot → ready → running → stopping → exited, or
 * crash → sealed → (backoff) → a replacement handle on the same index.
 */
interface ShardHandle {
  index: number
  worker: Worker
  /** resolves once the shard loaded its hooks and runs; rejects with ERR_SS_BOOT (or the load error) */
  ready: Promise<void>
  /** it did become ready (an exit before that is a boot failure, not a crash) */
  wasReady: boolean
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>
  exited: Promise<number>
  dead: boolean
  /** what the shard reported still open as it left after stop (a handle that keeps it alive) */
  lingering?: unknown
}

const RPC_TIMEOUT_MS = 30_000
/** Counters that are levels of a shard's current state: zeroed when that shard dies. */
const GAUGES = (['active', 'connecting', 'listeners', 'connectsInFlight', 'pendingConnects', 'parked', 'serverConns', 'gates',
  'loopDelayP50Ms', 'loopDelayP99Ms', 'loopDelayMaxMs', 'tlsHandshakesInFlight', 'tlsHandshakeP50Ms', 'tlsHandshakeP99Ms',
  'offloadsInFlight'] satisfies CounterName[]).map((n) => C[n])
/** how long a failed engine.connect waits for the connections it abandoned to release their slots */
const ABANDON_WAIT_MS = 2000

export class Engine extends EventEmitter {
  readonly layout: Layout
  readonly sab: SharedArrayBuffer
  private readonly i32: Int32Array
  private readonly counters: CounterBlock
  private readonly foreign: ForeignOps
  private readonly init: Omit<ShardInit, 'shard'>
  private readonly shards: ShardHandle[] = []
  private readonly listenSpecs = new Map<number, ListenSpec>()
  /** per shard: the connect requests it serves, re-issued if it is restarted (R1) */
  private readonly connectSpecs: { opts: ConnectOptions; ids: number[] }[][] = []
  /** the TLS material set of a connectSpecs entry's opts (the CertStore updates it in place) */
  private readonly connTls = new WeakMap<ConnectOptions, TlsClientSpec>()
  private readonly restart: boolean
  private nextReq = 1
  private nextKey = 1
  private nextConnShard = 0
  private stopPromise: Promise<void> | null = null
  /** every shard became ready once: Engine.start succeeded (before that, an exit is a boot failure) */
  private everReady = false
  /** per shard index: when its recent crash restarts happened (the restart budget's window) */
  private readonly restarts: number[][] = []
  /** restarts waiting out their backoff; stop() clears them so no handle is left */
  private readonly restartTimers = new Set<NodeJS.Timeout>()
  /** Engine.start options, normalized (workers/options.ts): boot timeout, restart budget, config */
  private cfg!: EngineConfig
  /** the blocking pool (piscina): started on first use, closed by stop() */
  private pool!: BlockingPool
  /** certificate material of TLS listeners and connections (created with the first one) */
  private certs: CertStore | null = null

  private constructor(layout: Layout, init: Omit<ShardInit, 'shard'>, restart: boolean) {
    super()
    this.layout = layout
    this.sab = init.sab
    this.i32 = new Int32Array(this.sab)
    this.init = init
    this.restart = restart
    this.counters = new CounterBlock(this.sab, layout, 0)
    this.foreign = new ForeignOps(this.sab, layout, 0, this.counters, new CallbackLock(this.sab, layout, 0, this.counters))
  }

  static async start(opts?: EngineOptions): Promise<Engine> {
    if (!reusePortSupported()) {
      throw new SyncsockError('ERR_SS_UNSUPPORTED', `syncsock needs Node >= ${REQUIRED.join('.')} for listen({ reusePort }); this is ${process.version}`)
    }
    if (process.platform !== 'linux') throw new SyncsockError('ERR_SS_UNSUPPORTED', 'syncsock needs Linux (SO_REUSEPORT balancing)')
    const cfg = parseEngineOptions(opts)
    const { shards, hooks, limits } = cfg
    if (cfg.tasks !== null && cfg.tasks.startsWith('file:')) {
      // A missing tasks module is an option error now, not a failure at the first offload.
      try { await access(fileURLToPath(cfg.tasks)) } catch (e) {
        throw new SyncsockError('ERR_SS_BAD_OPTION', `option "tasks": no module at ${cfg.tasks} (${(e as NodeJS.ErrnoException).code ?? e})`)
      }
    } else if (cfg.tasks !== null) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', `option "tasks" must be a file path or file: URL; got ${cfg.tasks}`)
    }
    const layout = new Layout({ shards, slotsPerShard: cfg.maxSocketsPerShard, ringBytes: cfg.ringBytes })
    const sab = layout.create()
    const engine = new Engine(layout, { sab, hooks, limits, config: cfg.config, tasks: cfg.tasks }, cfg.restartShards)
    engine.cfg = cfg
    engine.pool = new BlockingPool(cfg.blocking)
    try {
      for (let i = 0; i < shards; i++) engine.spawn(i)
      await Promise.all(engine.shards.map((s) => s.ready))
    } catch (e) {
      await engine.abortBoot()
      throw e
    }
    engine.everReady = true
    return engine
  }

  get shardCount(): number { return this.layout.shards }
  /** The Engine.start options as validated, with their defaults filled in (config is the snapshot the shards see). */
  get options(): Readonly<EngineConfig> { return this.cfg }
  get stopping(): boolean { return Atomics.load(this.i32, H_STOPPING) !== 0 }

  // ---------------- shards ----------------

  private spawn(index: number): ShardHandle {
    const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
    const worker = new Worker(new URL(`./shard${ext}`, import.meta.url), {
      workerData: { ...this.init, shard: index } satisfies ShardInit,
      name: `syncsock-shard-${index}`,
    })
    let readyResolve!: () => void, readyReject!: (e: Error) => void
    const ready = new Promise<void>((res, rej) => { readyResolve = res; readyReject = rej })
    ready.catch(() => {}) // a replacement's boot failure is handled in onShardExit, not by a waiter
    const h: ShardHandle = {
      index, worker, ready, wasReady: false, pending: new Map(), dead: false,
      exited: new Promise((res) => worker.once('exit', res)),
    }
    this.shards[index] = h
    const module = this.init.hooks ?? '(built-in protocols only)'
    // A shard that never becomes ready is a boot failure (hardening bug 9: a hooks module whose
    // top-level await never settles hung Engine.start forever). Bounded by bootTimeoutMs.
    const bootTimer = setTimeout(() => {
      readyReject(new SyncsockError('ERR_SS_BOOT', `shard ${index} was not ready within ${this.options.bootTimeoutMs} ms loading hooks module ${module} (a top-level await that never settles?)`))
      void worker.terminate()
    }, this.options.bootTimeoutMs)
    worker.on('message', (m: FromShard) => {
      if (m.t === 'ready') { h.wasReady = true; clearTimeout(bootTimer); readyResolve() }
      else if (m.t === 'reply') {
        const p = h.pending.get(m.req)
        if (!p) return
        h.pending.delete(m.req)
        clearTimeout(p.timer)
        if (m.ok) p.resolve(m.value)
        else p.reject(new SyncsockError(asCode(m.error.code, 'ERR_SS_LISTEN'), m.error.message))
      } else if (m.t === 'offload') {
        this.runOffload(h, m.oid, m.task, m.input)
      } else if (m.t === 'event') {
        if (m.type === 'lingering') { h.lingering = m.detail.handles; return } // stop's exit, below
        if (m.type === 'boot-error') {
          // The hooks module threw while loading or defining its protocols: an option problem.
          clearTimeout(bootTimer)
          readyReject(new SyncsockError(asCode(m.detail.code, 'ERR_SS_BAD_OPTION'), `shard ${index} failed to start: hooks module ${module}: ${m.detail.message}`))
        }
        this.onShardEvent(m.type, m.detail)
      }
    })
    worker.on('error', (e) => {
      clearTimeout(bootTimer)
      readyReject(new SyncsockError('ERR_SS_BOOT', `shard ${index} failed to start: hooks module ${module}: ${e.message}`, { cause: e }))
      this.onShardEvent('shard-error', { shard: index, message: e.message, stack: e.stack })
    })
    worker.on('exit', (code) => {
      clearTimeout(bootTimer)
      // process.exit() in a hooks module while it loads, or an unsettled top-level await with
      // nothing left to run: the thread is gone before it was ready.
      readyReject(new SyncsockError('ERR_SS_BOOT', `shard ${index} exited (code ${code}) before it was ready, loading hooks module ${module}`))
      this.onShardExit(h, code)
    })
    return h
  }

  private onShardEvent(type: string, detail: Record<string, unknown>): void {
    if (this.listenerCount(type) > 0) this.emit(type, detail)
    else if (type === 'hook-error' || type === 'shard-error' || type === 'shard-exit' || type === 'shard-down' || type === 'shard-terminated'
      || type === 'cert-rejected' || type === 'cert-reload-failed') {
      process.emitWarning(`${type}: ${JSON.stringify(detail)}`, { code: 'SYNCSOCK' })
    }
  }

  /**
   * A shard thread is gone. Its slot table is sealed at once (every generation bumped in one CAS
   * per slot), which decides — atomically against foreign close/unlink — which of its server
   * connections are still wanted: in use, not FINAL, not dead. A close that landed before the seal
   * is honoured; one after it answers ERR_SS_SHARD_DIED / ERR_SS_STALE, never 'ok' and lost
   * (hardening bug 3). Then, within the restart budget, a replacement boots after a backoff.
   */
  private onShardExit(h: ShardHandle, code: number): void {
    const tid = h.index + 1
    h.dead = true
    Atomics.store(this.i32, this.layout.threadBase(tid) + T_ALIVE, 0)
    for (const p of h.pending.values()) {
      clearTimeout(p.timer)
      p.reject(new SyncsockError('ERR_SS_SHARD_DIED', `shard ${h.index} exited (code ${code})`))
    }
    h.pending.clear()
    if (this.stopPromise || this.shards[h.index] !== h) return
    // R1: locks the dead thread held are broken by the epoch bump.
    Atomics.add(this.i32, this.layout.threadBase(tid) + T_EPOCH, 1)
    const sealed = new Map(sealShard(this.sab, this.layout, h.index).map((x) => [x.id, x]))
    const wanted = (this.connectSpecs[h.index] ?? []).map((c) => ({
      opts: c.opts,
      count: c.ids.filter((id) => {
        const x = sealed.get(id)
        return x !== undefined && (x.flags & F_FINAL) === 0 && x.state !== ST_DEAD
      }).length,
    })).filter((c) => c.count > 0)
    this.connectSpecs[h.index] = []
    // Its gauges describe sockets that no longer exist (bug 10: stats().active kept them).
    new CounterBlock(this.sab, this.layout, tid).zero(GAUGES)
    if (!h.wasReady && !this.everReady) return // Engine.start is failing: it reports the boot error
    const now = Date.now()
    const recent = (this.restarts[h.index] ?? []).filter((t) => now - t < this.options.restartWindowMs)
    const restart = this.restart && recent.length < this.options.maxRestarts
    this.onShardEvent('shard-exit', { shard: h.index, code, restarting: restart, booted: h.wasReady })
    if (!restart) {
      this.counters.add(C.shardsDown)
      this.onShardEvent('shard-down', {
        shard: h.index, code, restarts: recent.length, windowMs: this.options.restartWindowMs,
        reason: this.restart ? 'restart budget exhausted' : 'restartShards is false',
      })
      return
    }
    recent.push(now)
    this.restarts[h.index] = recent
    // Back off: the first restart at once, then 50 ms doubling to 5 s, so a shard that keeps
    // crashing (a poisoned hooks module) cannot spin (it restarted 20–30 times a second before).
    const delay = recent.length === 1 ? 0 : Math.min(5000, 50 * 2 ** (recent.length - 2))
    const timer = setTimeout(() => {
      this.restartTimers.delete(timer)
      if (!this.stopPromise) this.replace(h.index, wanted)
    }, delay)
    this.restartTimers.add(timer)
  }

  /** Boot a replacement for a dead shard; reopen listeners; re-create its wanted connections. */
  private replace(index: number, wanted: { opts: ConnectOptions; count: number }[]): void {
    this.counters.add(C.shardRestarts)
    const nh = this.spawn(index)
    nh.ready.then(async () => {
      const fail = (e: unknown) => this.onShardEvent('shard-error', { shard: index, message: (e as Error).message })
      for (const spec of this.listenSpecs.values()) await this.rpc(nh, { t: 'listen', req: 0, spec }).catch(fail)
      // Its server connections come back on the new incarnation of the shard, with new ids.
      const ids: number[] = []
      for (const c of wanted) {
        const tls = this.connTls.get(c.opts)
        const got = await this.rpc(nh, { t: 'connect', req: 0, opts: { ...c.opts, count: c.count }, count: c.count, tls }).catch(fail)
        if (Array.isArray(got)) {
          ids.push(...(got as number[]))
          const opts = { ...c.opts, count: c.count }
          if (tls) this.connTls.set(opts, tls)
          ;(this.connectSpecs[index] ??= []).push({ opts, ids: got as number[] })
        }
      }
      this.emit('shard-restart', { shard: index, connections: ids })
    }, () => {}) // a replacement that fails to boot exits or is terminated: onShardExit counts it
  }

  private rpc(h: ShardHandle, m: ToShard, timeoutMs = RPC_TIMEOUT_MS): Promise<unknown> {
    const req = this.nextReq++
    if (h.dead) return Promise.reject(new SyncsockError('ERR_SS_SHARD_DIED', `shard ${h.index} is not running`))
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        h.pending.delete(req)
        reject(new SyncsockError('ERR_SS_TIMEOUT', `shard ${h.index} did not answer ${m.t} in ${timeoutMs} ms`))
      }, timeoutMs)
      h.pending.set(req, { resolve, reject, timer })
      h.worker.postMessage({ ...m, req })
    })
  }

  private assertRunning(): void {
    if (this.stopPromise || this.stopping) throw new SyncsockError('ERR_SS_STOPPED', 'engine is stopping or stopped')
  }

  // ---------------- listen / connect ----------------

  /** Open the same port on every shard (SO_REUSEPORT). Port 0: shard 0 picks, the rest join it. */
  async listen(opts: ListenOptions): Promise<Listener> {
    this.assertRunning()
    const { port: wanted, host, protocol, backlog, water, tls } = parseListenOptions(opts)
    // TLS: the main thread reads and validates the material on the pool before any shard listens
    // (a broken one rejects with ERR_SS_TLS_MATERIAL and opens nothing); then it is watched.
    const tlsSpec: TlsServerSpec | null = tls ? await this.certStore().addServer(tls) : null
    const key = this.nextKey++
    const spec: ListenSpec = { key, port: wanted, host, protocol, backlog, water, tls: tlsSpec }
    try {
      return await this.listenSpec(spec)
    } catch (e) {
      if (tlsSpec) this.certs?.remove(tlsSpec.set)
      throw e
    }
  }

  private async listenSpec(spec: ListenSpec): Promise<Listener> {
    const { key, host, protocol } = spec
    // A shard that is down (restarting, or down for good) is skipped: a replacement reopens every
    // listener of listenSpecs when it boots.
    const up = this.shards.filter((h) => !h.dead)
    if (up.length === 0) throw new SyncsockError('ERR_SS_SHARD_DIED', 'no shard is running')
    const port = (await this.rpc(up[0], { t: 'listen', req: 0, spec })) as number
    spec.port = port
    try {
      await Promise.all(up.slice(1).map((h) => this.rpc(h, { t: 'listen', req: 0, spec })))
    } catch (e) {
      await Promise.allSettled(this.shards.map((h) => this.rpc(h, { t: 'unlisten', req: 0, key })))
      throw e
    }
    this.listenSpecs.set(key, spec)
    return {
      key, port, host, protocol,
      close: async () => {
        if (!this.listenSpecs.delete(key)) return
        if (spec.tls) this.certs?.remove(spec.tls.set)
        await Promise.allSettled(this.shards.map((h) => this.rpc(h, { t: 'unlisten', req: 0, key })))
      },
    }
  }

  /**
   * Persistent server connections, spread round robin over the shards (or pinned with `shard`).
   * Resolves with their ids (stable across reconnects). All or nothing: if one shard refuses, the
   * connections the others made for this call are aborted and their slots waited for (bounded)
   * before the call rejects with that refusal, so no connection runs that nobody holds an id of.
   */
  async connect(opts: ConnectOptions): Promise<number[]> {
    this.assertRunning()
    const { spec: given, count, shard } = parseConnectOptions(opts, this.layout.shards)
    // TLS: the shards get PEM the main thread read and validated (a shard reads no files).
    const spec = { ...given }
    delete spec.tls
    const tls = given.tls ? await this.certStore().addClient(parseClientTls(given.tls, 'engine.connect')) : undefined
    const per = new Array<number>(this.layout.shards).fill(0)
    if (shard !== undefined) per[shard] = count
    else {
      // Round robin over the shards that run: one that is down (restarting, or for good) would
      // fail the whole call (all or nothing) for no reason of the caller's.
      const up = this.shards.filter((h) => !h.dead).map((h) => h.index)
      if (up.length === 0) throw new SyncsockError('ERR_SS_SHARD_DIED', 'no shard is running')
      for (let i = 0; i < count; i++) per[up[this.nextConnShard++ % up.length]]++
    }
    const made: { shard: number; entry: { opts: ConnectOptions; ids: number[] } }[] = []
    const res = await Promise.allSettled(per.map(async (n, i) => {
      if (n === 0) return
      const ids = (await this.rpc(this.shards[i], { t: 'connect', req: 0, opts: { ...spec, count: n }, count: n, tls })) as number[]
      const entry = { opts: { ...spec, count: n }, ids }
      if (tls) this.connTls.set(entry.opts, tls)
      ;(this.connectSpecs[i] ??= []).push(entry)
      made.push({ shard: i, entry })
    }))
    const failed = res.find((r) => r.status === 'rejected')
    if (failed) {
      if (tls) this.certs?.remove(tls.set)
      await this.abandonConnects(made)
      throw failed.reason
    }
    return made.sort((a, b) => a.shard - b.shard).flatMap((m) => m.entry.ids)
  }

  /** Undo the shards' part of a failed connect: abort each connection, wait until its slot is free. */
  private async abandonConnects(made: { shard: number; entry: { opts: ConnectOptions; ids: number[] } }[]): Promise<void> {
    const ids: number[] = []
    for (const m of made) {
      const specs = this.connectSpecs[m.shard] ?? []
      const k = specs.indexOf(m.entry)
      if (k >= 0) specs.splice(k, 1) // not to be re-created if that shard restarts
      ids.push(...m.entry.ids)
    }
    for (const id of ids) this.foreign.close(id, 'abort')
    const deadline = Date.now() + ABANDON_WAIT_MS
    while (ids.some((id) => this.foreign.slots.live(id)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  // ---------------- foreign operations (any thread; never block) ----------------

  send(id: number, bytes: Uint8Array): RemoteSendStatus { return this.foreign.send(id, bytes) }

  /** Intentional, final close: mode 'graceful' (default) or 'abort', or { mode } (one form everywhere). */
  close(id: number, mode?: CloseModeArg): RequestStatus {
    return this.foreign.close(id, closeModeOf(mode, 'engine.close'))
  }

  unlink(id: number): RequestStatus { return this.foreign.unlink(id) }

  // ---------------- TLS material, the blocking pool ----------------

  /**
   * Re-read and re-validate every TLS listener's and connection's material now (on the pool) and
   * swap it on every shard. Resolves when every shard swapped; rejects with the reason
   * (ERR_SS_TLS_MATERIAL naming the file and why) if any set's new material is broken — that set
   * keeps serving its old material. SIGHUP in the proxy calls this.
   */
  async reloadCerts(): Promise<void> {
    this.assertRunning()
    await this.certs?.reloadAll()
  }

  private certStore(): CertStore {
    this.certs ??= new CertStore({
      pool: this.pool,
      materialTask: MATERIAL_TASK,
      counters: this.counters,
      broadcast: (spec) => this.broadcastCerts(spec),
      report: (type, detail) => this.onShardEvent(type, detail),
    })
    return this.certs
  }

  /** One set's update to every running shard; each builds one context and swaps it. */
  private async broadcastCerts(spec: TlsServerSpec | TlsClientSpec): Promise<void> {
    const up = this.shards.filter((h) => !h.dead)
    const res = await Promise.allSettled(up.map((h) => this.rpc(h, { t: 'certs', req: 0, spec })))
    const bad = res.find((r) => r.status === 'rejected')
    if (bad) throw (bad as PromiseRejectedResult).reason
  }

  /** A shard's ctx.offload: run it on the pool, post the result back to that same shard thread. */
  private runOffload(h: ShardHandle, oid: number, task: string, input: unknown): void {
    const answer = (m: Omit<Extract<ToShard, { t: 'offload-done' }>, 't' | 'req' | 'oid'>) => {
      // A shard that died or stopped meanwhile: its replacement never asked for this.
      if (h.dead || this.shards[h.index] !== h) return
      try { h.worker.postMessage({ t: 'offload-done', req: 0, oid, ...m } satisfies ToShard) } catch (e) {
        h.worker.postMessage({ t: 'offload-done', req: 0, oid, ok: false, error: { name: 'SyncsockError', code: 'ERR_SS_BAD_OPTION', message: `offload result of "${task}" is not structured-cloneable: ${(e as Error).message}` } } satisfies ToShard)
      }
    }
    this.pool.run<TaskOutput>(TASK_RUNNER, 'runTask', { module: this.cfg.tasks, name: task, input }).then(
      (r) => answer(r.ok ? { ok: true, value: r.value } : { ok: false, error: r.error }),
      (e: Error) => answer({ ok: false, error: { name: e?.name ?? 'Error', message: String(e?.message ?? e), code: (e as { code?: string })?.code } }),
    )
  }

  // ---------------- stats ----------------

  stats(): EngineStats {
    const shards: CounterSnapshot[] = []
    for (let s = 0; s < this.layout.shards; s++) shards.push(readCounters(this.sab, this.layout, s + 1))
    const main = readCounters(this.sab, this.layout, 0)
    return Object.assign(sumCounters([main, ...shards]), { shards, main })
  }

  // ---------------- stop (DESIGN §6b) ----------------

  /** A bad argument rejects with ERR_SS_BAD_OPTION and does not stop the engine. */
  stop(opts?: StopOptions): Promise<void> {
    let graceMs: number
    try { graceMs = parseStopOptions(opts).graceMs } catch (e) { return Promise.reject(e) }
    if (!this.stopPromise) this.stopPromise = this.doStop(graceMs)
    return this.stopPromise
  }

  /** Engine.start failed: no restarts, no stop protocol (a shard still loading cannot answer it). */
  private async abortBoot(): Promise<void> {
    this.stopPromise = Promise.resolve()
    Atomics.store(this.i32, H_STOPPING, 1)
    await Promise.all(this.shards.map((h) => h.worker.terminate()))
    await this.pool.close()
  }

  private async doStop(graceMs: number): Promise<void> {
    for (const t of this.restartTimers) clearTimeout(t)
    this.restartTimers.clear()
    // 1. STOPPING first: connect refuses, established-during-stop closes without hooks,
    //    reconnect timers refuse to arm (F1).
    Atomics.store(this.i32, H_STOPPING, 1)
    this.certs?.close() // no watcher, no reload, no ticket rotation from here on
    for (let s = 0; s < this.layout.shards; s++) new Doorbell(this.sab, this.layout, s + 1).ring()
    // 2–4. each shard closes listeners, then every socket and connection, and synchronizes.
    await Promise.allSettled(this.shards.filter((h) => !h.dead).map((h) => this.rpc(h, { t: 'stop', req: 0, graceMs }, graceMs + 10_000)))
    // 5. terminate: shards exit by themselves once their handles are gone; force the stragglers.
    await Promise.all(this.shards.map(async (h) => {
      let t: NodeJS.Timeout | undefined
      const timeout = new Promise<'timeout'>((r) => { t = setTimeout(() => r('timeout'), 1000) })
      const r = await Promise.race([h.exited, timeout])
      clearTimeout(t)
      if (r === 'timeout') {
        // Counted and reported with the shard's open handles: stop must leave none (§6b.5).
        this.counters.add(C.shardsTerminated)
        this.onShardEvent('shard-terminated', { shard: h.index, handles: h.lingering ?? [] })
        await h.worker.terminate()
      }
    }))
    this.listenSpecs.clear()
    // The blocking pool last: offloads still running are dropped (their shards counted them).
    await this.pool.close()
  }

  async [Symbol.asyncDispose](): Promise<void> { await this.stop() }
}
