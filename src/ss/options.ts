// Strict input at the door (DESIGN §3; Node's lib/internal/validators.js): every public option
// object rejects keys it does not know, and every value is checked for type and range, so a
// misspelt `maxSocketPerShard` is an ERR_SS_BAD_OPTION naming it instead of silently meaning the
// default. The validators here are shape checks only: they know no defaults of any one API (those
// live with the API: workers/options.ts, hooks/retry.ts). This file must never import from
// src/hooks (src/ss is the lower layer); the scalar checks (checkInt, checkNumber, badOption) live
// in errors.ts.

import { SyncsockError, badOption, checkInt } from './errors.ts'

/** How a socket is closed: 'graceful' (flush, FIN) or 'abort' (RST). */
export type CloseModeName = 'graceful' | 'abort'

/**
 * The one close signature of engine.close(id, m), ctx.close(id, m) and sock.close(m) (DESIGN §3:
 * "{ mode } means the same"): nothing (graceful), the mode itself, or `{ mode }`.
 */
export type CloseModeArg = CloseModeName | { mode?: CloseModeName } | undefined

/** The largest delay setTimeout honours; a larger one fires after 1 ms (Node clamps it). */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** A value's short form for an error message (never throws, never prints a whole object). */
export function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'symbol' || typeof v === 'function') return typeof v
  if (Array.isArray(v)) return 'an array'
  if (v !== null && typeof v === 'object') return 'an object'
  return String(v)
}

/** An options object: a non-null object that is not an array or a function. */
export function isOptionsObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** `v` must be an options object; returns it typed for key access. */
export function optionsObject(v: unknown, what: string): Record<string, unknown> {
  if (!isOptionsObject(v)) {
    throw new SyncsockError('ERR_SS_BAD_OPTION', `${what} must be an object; got ${shown(v)}`)
  }
  return v
}

/**
 * Every own enumerable key of `obj` must be in `allowed` (a key present with the value undefined
 * counts: it is still a misspelling). Symbol keys are ignored, as JSON and spread ignore them.
 */
export function rejectUnknownKeys(obj: object, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) {
      throw new SyncsockError('ERR_SS_BAD_OPTION',
        `unknown option ${JSON.stringify(k)} in ${what} (known: ${allowed.join(', ')})`)
    }
  }
}

/** An optional boolean: undefined gives `dflt`; 'yes', 1 and friends are errors. */
export function checkBool(name: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt
  if (typeof v !== 'boolean') badOption(name, 'a boolean', v)
  return v
}

/** One of a fixed set of strings. */
export function checkOneOf<T extends string>(name: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    badOption(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, v)
  }
  return v as T
}

/** The close signature shared by engine.close, ctx.close and sock.close (see CloseModeArg). */
export function closeModeOf(arg: unknown, where: string): CloseModeName {
  if (arg === undefined || arg === 'graceful') return 'graceful'
  if (arg === 'abort') return 'abort'
  if (isOptionsObject(arg)) {
    rejectUnknownKeys(arg, ['mode'], `${where} options`)
    const m = arg.mode
    if (m === undefined || m === 'graceful') return 'graceful'
    if (m === 'abort') return 'abort'
    throw new SyncsockError('ERR_SS_BAD_OPTION', `${where}: mode must be 'graceful' or 'abort'; got ${shown(m)}`)
  }
  throw new SyncsockError('ERR_SS_BAD_OPTION',
    `${where} takes 'graceful', 'abort' or { mode: 'graceful' | 'abort' }; got ${shown(arg)}`)
}

/** A socket's send-queue water marks (socket.ts WaterMarks). */
export interface WaterMarkOptions { high: number; low: number }

/**
 * `{ highWater?, lowWater? }` of listen, connect or ctx.open: null when neither is given (the
 * engine's marks apply); a high mark alone gets half of it as the low mark. high in
 * [1024, 2^31], low in [0, high].
 */
export function waterMarksOf(o: Record<string, unknown>, where: string): WaterMarkOptions | null {
  if (o.highWater === undefined && o.lowWater === undefined) return null
  if (o.highWater === undefined) badOption(`${where}.lowWater`, 'given together with highWater', o.lowWater)
  const high = checkInt(`${where}.highWater`, o.highWater, 1024, 2 ** 31)
  const low = checkInt(`${where}.lowWater`, o.lowWater ?? Math.floor(high / 2), 0, high)
  return { high, low }
}
