// The main-thread Engine: the control plane. Spawns one shard per CPU over one
// SharedArrayBuffer, opens listeners on every shard, spreads server connections over shards,
// forwards send/close/unlink to owners (src/ss/foreign.ts), reads stats straight from the SAB,
// and stops everything in the order of DESIGN §6b. It never touches a socket itself (O1).

import { Worker } from 'node:worker_threads'
import { EventEmitter } from 'node:events'
import { availableParallelism } from 'node:os'
import { pathToFileURL } from 'node:url'
import { isAbsolute, resolve as resolvePath } from 'node:path'
import { Layout, H_STOPPING, T_ALIVE, T_EPOCH, F_FINAL } from '../ss/layout.ts'
import { Doorbell } from '../ss/ring.ts'
import { CounterBlock, readCounters, sumCounters, type CounterSnapshot } from '../ss/counters.ts'
import { CallbackLock } from '../ss/lock.ts'
import { ForeignOps } from '../ss/foreign.ts'
import { SyncsockError, asCode, badOption, checkInt } from '../ss/errors.ts'
import type { CloseMode, ConnectOptions, RemoteSendStatus, RequestStatus } from '../hooks/types.ts'
import type { FromShard, ListenSpec, ShardInit, ShardLimits, ToShard } from './messages.ts'

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
}

export interface ListenOptions {
  port: number
  host?: string
  protocol: string
  backlog?: number
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

interface ShardHandle {
  index: number
  worker: Worker
  ready: Promise<void>
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>
  exited: Promise<number>
  dead: boolean
}

const RPC_TIMEOUT_MS = 30_000

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
  private readonly restart: boolean
  private nextReq = 1
  private nextKey = 1
  private nextConnShard = 0
  private stopPromise: Promise<void> | null = null

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

  static async start(opts: EngineOptions = {}): Promise<Engine> {
    if (!reusePortSupported()) {
      throw new SyncsockError('ERR_SS_UNSUPPORTED', `syncsock needs Node >= ${REQUIRED.join('.')} for listen({ reusePort }); this is ${process.version}`)
    }
    if (process.platform !== 'linux') throw new SyncsockError('ERR_SS_UNSUPPORTED', 'syncsock needs Linux (SO_REUSEPORT balancing)')
    if (opts === null || typeof opts !== 'object') badOption('options', 'an object', opts)
    const shards = opts.shards === undefined || opts.shards === 'auto'
      ? availableParallelism() : checkInt('shards', opts.shards, 1, 255)
    const layout = new Layout({
      shards,
      slotsPerShard: opts.maxSocketsPerShard ?? 65536,
      ringBytes: opts.ringBytes,
    })
    const limits: ShardLimits = {
      highWater: checkInt('highWater', opts.highWater ?? 1 << 20, 1024, 2 ** 31),
      maxQueue: checkInt('maxQueue', opts.maxQueue ?? 16 << 20, 1024, 2 ** 40),
      sendTimeoutMs: checkInt('sendTimeoutMs', opts.sendTimeoutMs ?? 30_000, 10, 86_400_000),
      closeTimeoutMs: checkInt('closeTimeoutMs', opts.closeTimeoutMs ?? 10_000, 10, 86_400_000),
      drainBudget: checkInt('drainBudget', opts.drainBudget ?? 1024, 1, 1 << 20),
      maxConnectsInFlight: checkInt('maxConnectsInFlight', opts.maxConnectsInFlight ?? 256, 1, 1 << 20),
    }
    if (limits.maxQueue < limits.highWater) badOption('maxQueue', `>= highWater (${limits.highWater})`, limits.maxQueue)
    let hooks: string | null = null
    if (opts.hooks !== undefined) {
      if (opts.hooks instanceof URL) hooks = opts.hooks.href
      else if (typeof opts.hooks === 'string' && opts.hooks.length > 0) {
        hooks = /^[a-z]+:/.test(opts.hooks) ? opts.hooks
          : pathToFileURL(isAbsolute(opts.hooks) ? opts.hooks : resolvePath(opts.hooks)).href
      } else badOption('hooks', 'a module path or URL', opts.hooks)
    }
    const sab = layout.create()
    const engine = new Engine(layout, { sab, hooks, limits }, opts.restartShards ?? true)
    try {
      for (let i = 0; i < shards; i++) engine.spawn(i)
      await Promise.all(engine.shards.map((s) => s.ready))
    } catch (e) {
      await engine.stop({ graceMs: 100 }).catch(() => {})
      throw e
    }
    return engine
  }

  get shardCount(): number { return this.layout.shards }
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
    const h: ShardHandle = {
      index, worker, ready, pending: new Map(), dead: false,
      exited: new Promise((res) => worker.once('exit', res)),
    }
    this.shards[index] = h
    worker.on('message', (m: FromShard) => {
      if (m.t === 'ready') readyResolve()
      else if (m.t === 'reply') {
        const p = h.pending.get(m.req)
        if (!p) return
        h.pending.delete(m.req)
        clearTimeout(p.timer)
        if (m.ok) p.resolve(m.value)
        else p.reject(new SyncsockError(asCode(m.error.code, 'ERR_SS_LISTEN'), m.error.message))
      } else if (m.t === 'event') {
        if (m.type === 'boot-error') {
          // The hooks module failed to load or define its protocols: an option problem.
          readyReject(new SyncsockError(asCode(m.detail.code, 'ERR_SS_BAD_OPTION'), `shard ${index} failed to start: ${m.detail.message}`))
        }
        this.onShardEvent(m.type, m.detail)
      }
    })
    worker.on('error', (e) => {
      readyReject(e)
      this.onShardEvent('shard-error', { shard: index, message: e.message, stack: e.stack })
    })
    worker.on('exit', (code) => this.onShardExit(h, code))
    return h
  }

  private onShardEvent(type: string, detail: Record<string, unknown>): void {
    if (this.listenerCount(type) > 0) this.emit(type, detail)
    else if (type === 'hook-error' || type === 'shard-error' || type === 'shard-exit') {
      process.emitWarning(`${type}: ${JSON.stringify(detail)}`, { code: 'SYNCSOCK' })
    }
  }

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
    // R1: the dead thread's locks are broken by the epoch bump; its slots are reset by the
    // replacement (generations bumped, so stale ids fail cleanly); its listeners reopen.
    Atomics.add(this.i32, this.layout.threadBase(tid) + T_EPOCH, 1)
    // Which of its server connections were still wanted: not intentionally closed (FINAL) before
    // the crash. Read now, before the replacement resets the slot table.
    const wanted = (this.connectSpecs[h.index] ?? []).map((c) => ({
      opts: c.opts,
      count: c.ids.filter((id) => this.foreign.slots.live(id) && (this.foreign.slots.word(id) & F_FINAL) === 0).length,
    })).filter((c) => c.count > 0)
    this.connectSpecs[h.index] = []
    this.onShardEvent('shard-exit', { shard: h.index, code, restarting: this.restart })
    if (!this.restart) return
    const nh = this.spawn(h.index)
    nh.ready.then(async () => {
      const fail = (e: unknown) => this.onShardEvent('shard-error', { shard: h.index, message: (e as Error).message })
      for (const spec of this.listenSpecs.values()) await this.rpc(nh, { t: 'listen', req: 0, spec }).catch(fail)
      // Its server connections come back on the new incarnation of the shard, with new ids.
      const ids: number[] = []
      for (const c of wanted) {
        const got = await this.rpc(nh, { t: 'connect', req: 0, opts: { ...c.opts, count: c.count }, count: c.count }).catch(fail)
        if (Array.isArray(got)) {
          ids.push(...(got as number[]))
          ;(this.connectSpecs[h.index] ??= []).push({ opts: { ...c.opts, count: c.count }, ids: got as number[] })
        }
      }
      this.emit('shard-restart', { shard: h.index, connections: ids })
    }, () => {})
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
    if (opts === null || typeof opts !== 'object') badOption('listen options', 'an object', opts)
    checkInt('port', opts.port, 0, 65535)
    const host = opts.host ?? '127.0.0.1'
    if (typeof host !== 'string' || host.length === 0) badOption('host', 'a non-empty string', host)
    if (typeof opts.protocol !== 'string' || opts.protocol.length === 0) badOption('protocol', 'a protocol name', opts.protocol)
    const backlog = checkInt('backlog', opts.backlog ?? 4096, 1, 1 << 20)
    const key = this.nextKey++
    const spec: ListenSpec = { key, port: opts.port, host, protocol: opts.protocol, backlog }
    const port = (await this.rpc(this.shards[0], { t: 'listen', req: 0, spec })) as number
    spec.port = port
    try {
      await Promise.all(this.shards.slice(1).map((h) => this.rpc(h, { t: 'listen', req: 0, spec })))
    } catch (e) {
      await Promise.allSettled(this.shards.map((h) => this.rpc(h, { t: 'unlisten', req: 0, key })))
      throw e
    }
    this.listenSpecs.set(key, spec)
    return {
      key, port, host, protocol: opts.protocol,
      close: async () => {
        if (!this.listenSpecs.delete(key)) return
        await Promise.allSettled(this.shards.map((h) => this.rpc(h, { t: 'unlisten', req: 0, key })))
      },
    }
  }

  /**
   * Persistent server connections, spread round robin over the shards (or pinned with `shard`).
   * Resolves with their ids (stable across reconnects).
   */
  async connect(opts: ConnectOptions): Promise<number[]> {
    this.assertRunning()
    if (opts === null || typeof opts !== 'object') badOption('connect options', 'an object', opts)
    const count = checkInt('count', opts.count ?? 1, 1, 1 << 20)
    const per = new Array<number>(this.layout.shards).fill(0)
    if (opts.shard !== undefined) per[checkInt('shard', opts.shard, 0, this.layout.shards - 1)] = count
    else for (let i = 0; i < count; i++) per[this.nextConnShard++ % this.layout.shards]++
    const res = await Promise.all(per.map(async (n, i) => {
      if (n === 0) return []
      const ids = await this.rpc(this.shards[i], { t: 'connect', req: 0, opts: { ...opts, count: n }, count: n })
      ;(this.connectSpecs[i] ??= []).push({ opts: { ...opts, count: n }, ids: ids as number[] })
      return ids
    }))
    return (res as number[][]).flat()
  }

  // ---------------- foreign operations (any thread; never block) ----------------

  send(id: number, bytes: Uint8Array): RemoteSendStatus { return this.foreign.send(id, bytes) }

  close(id: number, opts: { mode?: CloseMode } = {}): RequestStatus {
    return this.foreign.close(id, opts?.mode ?? 'graceful')
  }

  unlink(id: number): RequestStatus { return this.foreign.unlink(id) }

  // ---------------- stats ----------------

  stats(): EngineStats {
    const shards: CounterSnapshot[] = []
    for (let s = 0; s < this.layout.shards; s++) shards.push(readCounters(this.sab, this.layout, s + 1))
    const main = readCounters(this.sab, this.layout, 0)
    return Object.assign(sumCounters([main, ...shards]), { shards, main })
  }

  // ---------------- stop (DESIGN §6b) ----------------

  stop(opts: { graceMs?: number } = {}): Promise<void> {
    if (!this.stopPromise) this.stopPromise = this.doStop(checkInt('graceMs', opts.graceMs ?? 5000, 0, 3_600_000))
    return this.stopPromise
  }

  private async doStop(graceMs: number): Promise<void> {
    // 1. STOPPING first: connect refuses, established-during-stop closes without hooks,
    //    reconnect timers refuse to arm (F1).
    Atomics.store(this.i32, H_STOPPING, 1)
    for (let s = 0; s < this.layout.shards; s++) new Doorbell(this.sab, this.layout, s + 1).ring()
    // 2–4. each shard closes listeners, then every socket and connection, and synchronizes.
    await Promise.allSettled(this.shards.map((h) => this.rpc(h, { t: 'stop', req: 0, graceMs }, graceMs + 10_000)))
    // 5. terminate: shards exit by themselves once their handles are gone; force the stragglers.
    await Promise.all(this.shards.map(async (h) => {
      let t: NodeJS.Timeout | undefined
      const timeout = new Promise<'timeout'>((r) => { t = setTimeout(() => r('timeout'), 1000) })
      const r = await Promise.race([h.exited, timeout])
      clearTimeout(t)
      if (r === 'timeout') await h.worker.terminate()
    }))
    this.listenSpecs.clear()
  }

  async [Symbol.asyncDispose](): Promise<void> { await this.stop() }
}
