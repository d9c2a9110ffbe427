// The Engine's options at the door: Engine.start, listen, connect and stop options parsed into
// normalized values with their defaults (docs/operations.md), strict keys (DESIGN §3: an unknown
// key is ERR_SS_BAD_OPTION naming it) and every value checked for type and range. Pure: no
// threads, no I/O. engine.ts calls these first, so a bad call changes nothing (no shard spawned,
// no listener opened, a stop with a bad argument does not stop).

import { availableParallelism } from 'node:os'
import { pathToFileURL } from 'node:url'
import { isAbsolute, resolve as resolvePath } from 'node:path'
import { SyncsockError, badOption, checkInt } from '../ss/errors.ts'
import { checkBool, optionsObject, rejectUnknownKeys, shown, waterMarksOf, type WaterMarkOptions } from '../ss/options.ts'
import { normalizeConnect } from '../hooks/retry.ts'
import type { ConnectOptions } from '../hooks/types.ts'
import type { ShardLimits } from './messages.ts'
import type { BlockingConfig } from './blocking.ts'
import { parseServerTls, type ServerTlsOptions } from '../tls/options.ts'

/** Engine.start options, normalized. */
export interface EngineConfig {
  shards: number
  /** the hooks module as a URL string, or null for the built-in protocols only */
  hooks: string | null
  /** a structured clone of options.config taken at start (undefined if none): every shard, and
   *  every restarted shard, sees the same snapshot as ctx.config */
  config: unknown
  maxSocketsPerShard: number
  /** validated by Layout (its default depends on the shard count) */
  ringBytes: number | undefined
  limits: ShardLimits
  restartShards: boolean
  bootTimeoutMs: number
  maxRestarts: number
  restartWindowMs: number
  /** the tasks module ctx.offload runs on the blocking pool (a URL string), or null */
  tasks: string | null
  blocking: BlockingConfig
}

const BLOCKING_KEYS = ['maxThreads', 'maxOffloadsPerShard'] as const

const ENGINE_KEYS = [
  'shards', 'hooks', 'config', 'tasks', 'blocking', 'maxSocketsPerShard', 'ringBytes', 'highWater',
  'lowWater', 'maxQueue', 'sendTimeoutMs', 'closeTimeoutMs', 'drainBudget', 'maxConnectsInFlight',
  'restartShards', 'bootTimeoutMs', 'maxRestarts', 'restartWindowMs',
] as const
const MAX_SHARDS = 255

export function parseEngineOptions(opts: unknown): EngineConfig {
  const o = optionsObject(opts === undefined ? {} : opts, 'Engine.start options')
  rejectUnknownKeys(o, ENGINE_KEYS, 'Engine.start options')
  const shards = o.shards === undefined || o.shards === 'auto'
    ? Math.min(availableParallelism(), MAX_SHARDS) : checkInt('shards', o.shards, 1, MAX_SHARDS)
  const highWater = checkInt('highWater', o.highWater ?? 1 << 20, 1024, 2 ** 31)
  const limits: ShardLimits = {
    highWater,
    lowWater: checkInt('lowWater', o.lowWater ?? Math.floor(highWater / 2), 0, highWater),
    maxQueue: checkInt('maxQueue', o.maxQueue ?? 16 << 20, 1024, 2 ** 40),
    sendTimeoutMs: checkInt('sendTimeoutMs', o.sendTimeoutMs ?? 30_000, 10, 86_400_000),
    closeTimeoutMs: checkInt('closeTimeoutMs', o.closeTimeoutMs ?? 10_000, 10, 86_400_000),
    drainBudget: checkInt('drainBudget', o.drainBudget ?? 1024, 1, 1 << 20),
    maxConnectsInFlight: checkInt('maxConnectsInFlight', o.maxConnectsInFlight ?? 256, 1, 1 << 20),
    maxOffloads: 0, // set from blocking below
  }
  const b = optionsObject(o.blocking === undefined ? {} : o.blocking, 'option "blocking"')
  rejectUnknownKeys(b, BLOCKING_KEYS, 'blocking options')
  const blocking: BlockingConfig = {
    maxThreads: checkInt('blocking.maxThreads', b.maxThreads ?? 1, 1, 64),
    maxOffloadsPerShard: checkInt('blocking.maxOffloadsPerShard', b.maxOffloadsPerShard ?? 256, 1, 1 << 20),
  }
  limits.maxOffloads = blocking.maxOffloadsPerShard
  if (limits.maxQueue < limits.highWater) badOption('maxQueue', `>= highWater (${limits.highWater})`, limits.maxQueue)
  if (o.ringBytes !== undefined && typeof o.ringBytes !== 'number') badOption('ringBytes', 'a power of two in [1024, 2^30]', o.ringBytes)
  return {
    shards,
    hooks: hooksUrl(o.hooks),
    config: cloneConfig(o.config),
    maxSocketsPerShard: checkInt('maxSocketsPerShard', o.maxSocketsPerShard ?? 65536, 1, 1 << 20),
    ringBytes: o.ringBytes,
    limits,
    restartShards: checkBool('restartShards', o.restartShards, true),
    bootTimeoutMs: checkInt('bootTimeoutMs', o.bootTimeoutMs ?? 10_000, 1, 3_600_000),
    maxRestarts: checkInt('maxRestarts', o.maxRestarts ?? 5, 0, 1000),
    restartWindowMs: checkInt('restartWindowMs', o.restartWindowMs ?? 60_000, 1, 86_400_000),
    tasks: o.tasks === undefined ? null : moduleUrl('tasks', o.tasks),
    blocking,
  }
}

/** A module option (hooks, tasks): a path (relative to the cwd) or a URL, as a URL string. */
function moduleUrl(name: string, h: unknown): string {
  if (h instanceof URL) return h.href
  if (typeof h === 'string' && h.length > 0) {
    return /^[a-z]+:/.test(h) ? h : pathToFileURL(isAbsolute(h) ? h : resolvePath(h)).href
  }
  return badOption(name, 'a module path or URL', h)
}

function hooksUrl(h: unknown): string | null {
  if (h === undefined) return null
  if (h instanceof URL) return h.href
  if (typeof h === 'string' && h.length > 0) {
    return /^[a-z]+:/.test(h) ? h : pathToFileURL(isAbsolute(h) ? h : resolvePath(h)).href
  }
  return badOption('hooks', 'a module path or URL', h)
}

/** config crosses to every shard by structured clone: one that cannot be cloned fails here, at start. */
function cloneConfig(c: unknown): unknown {
  if (c === undefined) return undefined
  try {
    return structuredClone(c)
  } catch (e) {
    throw new SyncsockError('ERR_SS_BAD_OPTION',
      `option "config" must be structured-cloneable (it is copied to every shard): ${(e as Error)?.message ?? String(e)}`, { cause: e })
  }
}

export interface ListenConfig {
  port: number; host: string; protocol: string; backlog: number; water: WaterMarkOptions | null
  /** TLS as given (sources: paths are read and watched by the main thread's CertStore) */
  tls: ServerTlsOptions | null
}

const LISTEN_KEYS = ['port', 'host', 'protocol', 'backlog', 'highWater', 'lowWater', 'tls'] as const

/** listen options. The protocol's existence is checked by the shards (only they load the hooks). */
export function parseListenOptions(opts: unknown): ListenConfig {
  const o = optionsObject(opts, 'listen options')
  rejectUnknownKeys(o, LISTEN_KEYS, 'listen options')
  const port = checkInt('port', o.port, 0, 65535)
  const host = o.host ?? '127.0.0.1'
  if (typeof host !== 'string' || host.length === 0) badOption('host', 'a non-empty string', host)
  if (typeof o.protocol !== 'string' || o.protocol.length === 0) badOption('protocol', 'a protocol name', o.protocol)
  return {
    port, host, protocol: o.protocol, backlog: checkInt('backlog', o.backlog ?? 4096, 1, 1 << 20), water: waterMarksOf(o, 'listen'),
    tls: o.tls === undefined ? null : parseServerTls(o.tls),
  }
}

export interface ConnectPlan {
  /** the options every shard re-validates (without count and shard) */
  spec: ConnectOptions
  count: number
  /** pinned shard, or undefined for round robin */
  shard: number | undefined
}

/**
 * engine.connect options: validated whole on the main thread before any shard is asked, so a bad
 * option can never fail on one shard after another already made connections. Protocol names are
 * the one thing only the shards can check.
 */
export function parseConnectOptions(opts: unknown, shards: number): ConnectPlan {
  normalizeConnect(opts, () => true, 'engine.connect')
  const { count, shard, ...spec } = opts as ConnectOptions
  return {
    spec,
    count: checkInt('count', count ?? 1, 1, 1 << 20),
    shard: shard === undefined ? undefined : checkInt('shard', shard, 0, shards - 1),
  }
}

const STOP_KEYS = ['graceMs'] as const

/** stop options: nothing, or { graceMs } (ms without progress before the rest is aborted; default 5000). */
export function parseStopOptions(opts: unknown): { graceMs: number } {
  if (opts === undefined) return { graceMs: 5000 }
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
    throw new SyncsockError('ERR_SS_BAD_OPTION', `stop takes nothing or { graceMs }; got ${shown(opts)}`)
  }
  rejectUnknownKeys(opts, STOP_KEYS, 'stop options')
  return { graceMs: checkInt('graceMs', (opts as { graceMs?: unknown }).graceMs ?? 5000, 0, 3_600_000) }
}

/** ctx.open options, normalized. */
export interface OpenConfig {
  host: string
  port: number
  protocol: string
  data: unknown
  connectTimeoutMs: number
  water: WaterMarkOptions | null
}

const OPEN_KEYS = ['host', 'port', 'protocol', 'data', 'connectTimeoutMs', 'highWater', 'lowWater'] as const

/** ctx.open options (checked in the calling shard, which knows its protocols). */
export function parseOpenOptions(opts: unknown, known: (p: string) => boolean): OpenConfig {
  const o = optionsObject(opts, 'ctx.open options')
  rejectUnknownKeys(o, OPEN_KEYS, 'ctx.open options')
  if (typeof o.host !== 'string' || o.host.length === 0) badOption('host', 'a non-empty string', o.host)
  const port = checkInt('port', o.port, 1, 65535)
  if (typeof o.protocol !== 'string' || !known(o.protocol)) badOption('protocol', 'a protocol defined by the hooks module', o.protocol)
  return {
    host: o.host, port, protocol: o.protocol,
    data: o.data === undefined ? null : o.data,
    connectTimeoutMs: checkInt('connectTimeoutMs', o.connectTimeoutMs ?? 5000, 1, 3_600_000),
    water: waterMarksOf(o, 'ctx.open'),
  }
}
