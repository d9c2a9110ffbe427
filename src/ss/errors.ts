// The one error family of syncsock (undici's UND_ERR_*, Node's ERR_*): every failure a user can
// see carries a stable `code`. Codes are API: users grep for them, so never rename one.
// `SyncsockError.is(e, code)` checks by code, not by `instanceof`, so it also works on a plain
// `{ code, message }` that crossed a thread boundary. Structured clone of an Error keeps only
// name/message/stack (V8 drops own properties such as `code`), so senders post `{ code, message }`.

export const codes = {
  ERR_SS_BAD_OPTION: 'an option or argument is invalid',
  ERR_SS_UNSUPPORTED: 'the runtime or platform lacks a required feature',
  ERR_SS_STOPPED: 'the engine is stopping or stopped',
  ERR_SS_STALE: 'the socket id belongs to an incarnation that no longer exists',
  ERR_SS_CLOSED: 'the socket is closed or closing',
  ERR_SS_RING_FULL: "the owner's ring has no room for this message; retry later",
  ERR_SS_TOO_BIG: 'the message is larger than a ring can ever hold',
  ERR_SS_BACKPRESSURE: "the socket's send queue is above its high-water mark",
  ERR_SS_QUEUE_FULL: "the socket's send queue is at its hard limit",
  ERR_SS_NOT_CONNECTED: 'the server connection has no established socket right now',
  ERR_SS_HOOK: 'a hook broke its contract (threw, or returned a Promise)',
  ERR_SS_SHARD_DIED: 'a shard worker exited unexpectedly',
  ERR_SS_BOOT: 'a shard failed to boot (its hooks module threw, exited or never finished loading)',
  ERR_SS_LISTEN: 'a listener could not be opened',
  ERR_SS_TIMEOUT: 'an operation did not finish in time',
  ERR_SS_SLOTS_EXHAUSTED: "the shard's slot table is full",
  ERR_SS_BAD_MEMORY: 'a SharedArrayBuffer does not hold a syncsock layout of this version',
  ERR_SS_TLS: 'a TLS handshake failed (the cause says why: certificate verification, protocol, the peer closed)',
  ERR_SS_TLS_TIMEOUT: 'a TLS handshake did not finish within handshakeTimeoutMs',
  ERR_SS_TLS_MATERIAL: 'certificate material is unusable (unreadable, not PEM, key of another certificate, expired, not issued by the CA); the old material keeps serving',
  ERR_SS_BUSY: 'too much work in flight (offloads of this shard); retry later',
} as const

export type ErrorCode = keyof typeof codes

export class SyncsockError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? codes[code], options)
    this.code = code
    this.name = 'SyncsockError'
  }

  static is(e: unknown, code?: ErrorCode): e is SyncsockError {
    if (typeof e !== 'object' || e === null) return false
    const c = (e as { code?: unknown }).code
    return typeof c === 'string' && c in codes && (code === undefined || c === code)
  }
}

/** A code from another realm or layer as one of ours: known codes pass, others become `fallback`. */
export function asCode(code: unknown, fallback: ErrorCode): ErrorCode {
  return typeof code === 'string' && code in codes ? code as ErrorCode : fallback
}

/** Throw ERR_SS_BAD_OPTION naming the option and what was expected (Node's validators style). */
export function badOption(name: string, expected: string, actual: unknown): never {
  let shown: string
  try { shown = typeof actual === 'string' ? JSON.stringify(actual) : String(actual) } catch { shown = typeof actual }
  throw new SyncsockError('ERR_SS_BAD_OPTION', `option "${name}" must be ${expected}; got ${shown}`)
}

export function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    badOption(name, `an integer in [${min}, ${max}]`, v)
  }
  return v
}

export function checkNumber(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || Number.isNaN(v) || v < min || v > max) {
    badOption(name, `a number in [${min}, ${max}]`, v)
  }
  return v
}
