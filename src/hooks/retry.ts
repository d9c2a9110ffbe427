// The retry policy of server connections: connect options validated at the door (Node's
// validators style; strict keys, DESIGN §3) and the backoff schedule. Pure functions, no I/O, no
// shard state: the connection lifecycle (server.ts) asks them for a delay; tests pin them with an
// injected rand.

import { SyncsockError, badOption, checkInt, checkNumber } from '../ss/errors.ts'
import { checkOneOf, optionsObject, rejectUnknownKeys, waterMarksOf, type WaterMarkOptions } from '../ss/options.ts'
import type { LivenessOptions, RetryOptions, Target } from './types.ts'
import { inlinePem, parseClientTls, type ClientTlsOptions, type TlsClientSpec } from '../tls/options.ts'

export interface NormalizedRetry {
  baseMs: number; capMs: number; maxAttempts: number; jitter: 'full' | 'decorrelated'; resetAfterMs: number
}

export interface NormalizedConnect {
  target: Target
  protocol: string
  retry: NormalizedRetry
  liveness: Required<LivenessOptions> | null
  connectTimeoutMs: number
  readyTimeoutMs: number
  /** the incarnations' water marks (null: the engine's) */
  water: WaterMarkOptions | null
  /** tls as given (sources: paths or PEM), or null for plain TCP */
  tls: ClientTlsOptions | null
  /**
   * what the incarnations connect with (PEM, built into a context once per update by the shard):
   * ctx.connect fills it from its PEM; for engine.connect the shard sets it from the CertStore's
   * spec that came with the request (the main thread read and validated the files)
   */
  tlsSpec: TlsClientSpec | null
}

/** Which door the options came through: engine.connect spreads `count` over shards, pinned by `shard`. */
export type ConnectDoor = 'engine.connect' | 'ctx.connect'

const CONNECT_KEYS = ['host', 'port', 'protocol', 'retry', 'liveness', 'connectTimeoutMs', 'readyTimeoutMs', 'highWater', 'lowWater', 'tls'] as const
const ENGINE_CONNECT_KEYS = [...CONNECT_KEYS, 'count', 'shard'] as const
const RETRY_KEYS = ['baseMs', 'capMs', 'maxAttempts', 'jitter', 'resetAfterMs'] as const
const LIVENESS_KEYS = ['intervalMs', 'timeoutMs', 'misses'] as const
const JITTERS = ['full', 'decorrelated'] as const

/**
 * Validate connect options at the door. `count` and `shard` belong to engine.connect only (the
 * engine range-checks them); ctx.connect makes one shard-local connection and refuses them.
 */
export function normalizeConnect(opts: unknown, known: (p: string) => boolean, door: ConnectDoor = 'engine.connect'): NormalizedConnect {
  const o = optionsObject(opts, `${door} options`)
  if (door === 'ctx.connect' && (o.count !== undefined || o.shard !== undefined)) {
    throw new SyncsockError('ERR_SS_BAD_OPTION',
      `ctx.connect makes one connection on the calling shard: "count" and "shard" are engine.connect options`)
  }
  rejectUnknownKeys(o, door === 'ctx.connect' ? CONNECT_KEYS : ENGINE_CONNECT_KEYS, `${door} options`)
  if (typeof o.host !== 'string' || o.host.length === 0) badOption('host', 'a non-empty string', o.host)
  const port = checkInt('port', o.port, 1, 65535)
  if (typeof o.protocol !== 'string' || !known(o.protocol)) badOption('protocol', 'a protocol defined by the hooks module', o.protocol)
  let liveness: Required<LivenessOptions> | null = null
  if (o.liveness !== undefined) {
    const l = optionsObject(o.liveness, 'liveness')
    rejectUnknownKeys(l, LIVENESS_KEYS, 'liveness options')
    liveness = {
      intervalMs: checkInt('liveness.intervalMs', l.intervalMs, 10, 3_600_000),
      timeoutMs: checkInt('liveness.timeoutMs', l.timeoutMs, 1, 3_600_000),
      misses: checkInt('liveness.misses', l.misses ?? 1, 1, 1000),
    }
  }
  // A shard reads no files: ctx.connect takes PEM bytes only (engine.connect's main thread reads paths).
  const tls = o.tls === undefined ? null : parseClientTls(o.tls, door, door === 'engine.connect')
  const tlsSpec: TlsClientSpec | null = tls && door === 'ctx.connect'
    ? { set: -1, version: 1, pem: inlinePem(tls), servername: tls.servername, rejectUnauthorized: tls.rejectUnauthorized, handshakeTimeoutMs: tls.handshakeTimeoutMs }
    : null
  return {
    tls,
    tlsSpec,
    target: { host: o.host, port },
    protocol: o.protocol,
    retry: normalizeRetry(o.retry),
    liveness,
    connectTimeoutMs: checkInt('connectTimeoutMs', o.connectTimeoutMs ?? 5000, 1, 3_600_000),
    readyTimeoutMs: checkInt('readyTimeoutMs', o.readyTimeoutMs ?? 0, 0, 3_600_000),
    water: waterMarksOf(o, door),
  }
}

/**
 * Retry options with the documented defaults (RetryOptions): baseMs 100, capMs 1000, jitter
 * 'full', resetAfterMs 5000, maxAttempts never (undefined or Infinity). Undefined means all
 * defaults; anything but an object is an error, so is a cap below the base.
 */
export function normalizeRetry(r: unknown): NormalizedRetry {
  if (r === undefined) r = {}
  const o = optionsObject(r, 'retry')
  rejectUnknownKeys(o, RETRY_KEYS, 'retry options')
  const retry: NormalizedRetry = {
    baseMs: checkInt('retry.baseMs', o.baseMs ?? 100, 1, 3_600_000),
    capMs: checkInt('retry.capMs', o.capMs ?? 1000, 1, 3_600_000),
    maxAttempts: o.maxAttempts === undefined || o.maxAttempts === Infinity ? Infinity : checkInt('retry.maxAttempts', o.maxAttempts, 1, 1e9),
    jitter: checkOneOf('retry.jitter', o.jitter ?? 'full', JITTERS),
    resetAfterMs: checkInt('retry.resetAfterMs', o.resetAfterMs ?? 5000, 0, 3_600_000),
  }
  if (retry.capMs < retry.baseMs) badOption('retry.capMs', `>= retry.baseMs (${retry.baseMs})`, retry.capMs)
  return retry
}

/**
 * The backoff schedule. attempt >= 1 (an integer) is the number of failures in a row; prev is
 * the previous delay (>= 0; 0 before the first). `r` may be partial or undefined: the documented
 * defaults fill it (normalizeRetry), so `backoffDelay({}, 1, 0)` is a delay in [0, 100].
 * full jitter:         uniform in [0, min(cap, base * 2^(attempt-1))]
 * decorrelated jitter: uniform in [base, min(cap, prev * 3)]   (AWS architecture blog)
 * `rand` is injectable so tests can pin the bounds of the schedule, not wall-clock times; it must
 * answer a number in [0, 1]. Every bad input is ERR_SS_BAD_OPTION: never NaN out.
 */
export function backoffDelay(r: RetryOptions | NormalizedRetry | undefined, attempt: number, prev: number, rand: () => number = Math.random): number {
  const n = normalizeRetry(r)
  checkInt('attempt', attempt, 1, Number.MAX_SAFE_INTEGER)
  checkNumber('prev', prev, 0, Number.MAX_VALUE)
  if (typeof rand !== 'function') badOption('rand', 'a function returning a number in [0, 1]', rand)
  const u = checkNumber('rand()', rand(), 0, 1)
  if (n.jitter === 'decorrelated') {
    const hi = Math.min(n.capMs, Math.max(n.baseMs, prev * 3))
    return Math.round(n.baseMs + u * (hi - n.baseMs))
  }
  const ceil = Math.min(n.capMs, n.baseMs * 2 ** Math.min(attempt - 1, 30))
  return Math.round(u * ceil)
}
