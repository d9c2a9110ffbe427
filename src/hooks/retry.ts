// The retry policy of server connections: connect options validated at the door (Node's
// validators style) and the backoff schedule. Pure functions, no I/O, no shard state: the
// connection lifecycle (server.ts) asks them for a delay; tests pin them with an injected rand.

import { badOption, checkInt } from '../ss/errors.ts'
import type { ConnectOptions, LivenessOptions, RetryOptions, Target } from './types.ts'

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
}

/** Validate connect options at the door (Node's validators style). */
export function normalizeConnect(o: ConnectOptions, known: (p: string) => boolean): NormalizedConnect {
  if (o === null || typeof o !== 'object') badOption('connect options', 'an object', o)
  if (typeof o.host !== 'string' || o.host.length === 0) badOption('host', 'a non-empty string', o.host)
  checkInt('port', o.port, 1, 65535)
  if (typeof o.protocol !== 'string' || !known(o.protocol)) badOption('protocol', 'a protocol defined by the hooks module', o.protocol)
  const r: RetryOptions = o.retry ?? {}
  const retry: NormalizedRetry = {
    baseMs: checkInt('retry.baseMs', r.baseMs ?? 100, 1, 3_600_000),
    capMs: checkInt('retry.capMs', r.capMs ?? 1000, 1, 3_600_000),
    maxAttempts: r.maxAttempts === undefined ? Infinity : checkInt('retry.maxAttempts', r.maxAttempts, 1, 1e9),
    jitter: r.jitter ?? 'full',
    resetAfterMs: checkInt('retry.resetAfterMs', r.resetAfterMs ?? 5000, 0, 3_600_000),
  }
  if (retry.jitter !== 'full' && retry.jitter !== 'decorrelated') badOption('retry.jitter', "'full' or 'decorrelated'", retry.jitter)
  if (retry.capMs < retry.baseMs) badOption('retry.capMs', `>= retry.baseMs (${retry.baseMs})`, retry.capMs)
  let liveness: Required<LivenessOptions> | null = null
  if (o.liveness !== undefined) {
    const l = o.liveness
    if (l === null || typeof l !== 'object') badOption('liveness', 'an object', l)
    liveness = {
      intervalMs: checkInt('liveness.intervalMs', l.intervalMs, 10, 3_600_000),
      timeoutMs: checkInt('liveness.timeoutMs', l.timeoutMs, 1, 3_600_000),
      misses: checkInt('liveness.misses', l.misses ?? 1, 1, 1000),
    }
  }
  return {
    target: { host: o.host, port: o.port },
    protocol: o.protocol,
    retry,
    liveness,
    connectTimeoutMs: checkInt('connectTimeoutMs', o.connectTimeoutMs ?? 5000, 1, 3_600_000),
    readyTimeoutMs: checkInt('readyTimeoutMs', o.readyTimeoutMs ?? 0, 0, 3_600_000),
  }
}

/**
 * The backoff schedule. attempt >= 1 is the number of failures in a row.
 * full jitter:         uniform in [0, min(cap, base * 2^(attempt-1))]
 * decorrelated jitter: uniform in [base, min(cap, prev * 3)]   (AWS architecture blog)
 * `rand` is injectable so tests can pin the bounds of the schedule, not wall-clock times.
 */
export function backoffDelay(r: NormalizedRetry, attempt: number, prev: number, rand: () => number = Math.random): number {
  if (r.jitter === 'decorrelated') {
    const hi = Math.min(r.capMs, Math.max(r.baseMs, prev * 3))
    return Math.round(r.baseMs + rand() * (hi - r.baseMs))
  }
  const ceil = Math.min(r.capMs, r.baseMs * 2 ** Math.min(attempt - 1, 30))
  return Math.round(rand() * ceil)
}
