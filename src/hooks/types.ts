// The hook contract (Tempesta's SsHooks in camelCase). A protocol is a plain object of optional
// synchronous hooks; every hook runs in the shard that owns the socket, under the socket's
// callback lock (L1), and only while the rules below allow:
//
//   connectionNew(sock)            socket registered (accepted, or a server connection
//                                  established); link user data here with sock.link(d)
//   connectionRecv(sock, chunk)    bytes arrived; only while LINKED
//   connectionWritable(sock)       send queue drained after sock.send answered 'high-water'
//   connectionEnd(sock)            peer half-closed (FIN) — defining it turns half-open on:
//                                  the socket stays writable until you close it
//   connectionIdle(sock)           liveness tick of a server connection: send your ping here
//   connectionDrop(sock, reason)   the peer or the network ended it: release sock.data
//   connectionClose(sock, cause)   we ended it (local close, foreign close/unlink, shutdown,
//                                  hook error): release sock.data
//   failover(sock, reason)         server connection dropped after being established
//   retry(sock, attempt, error)    server connection's connect failed
//
// Linked data is handed back exactly once (L2): by connectionDrop, by connectionClose, or as the
// return value of a local sock.unlink(). After that no hook of that incarnation runs.
// Hooks are synchronous: a hook that returns a Promise is a programming error (ERR_SS_HOOK).

import type { SyncsockError } from '../ss/errors.ts'

export type DropReason = 'fin' | 'reset' | 'error' | 'send-timeout' | 'liveness' | 'ready-timeout'
/** Why failover runs: the incarnation was dropped, or a hook of it threw ('hook-error'). */
export type FailoverReason = DropReason | 'hook-error'
export type CloseCause = 'local' | 'foreign' | 'unlink' | 'shutdown' | 'hook-error'
export type CloseMode = 'graceful' | 'abort'
/**
 * The one close signature of engine.close(id, m), ctx.close(id, m) and sock.close(m): nothing
 * (graceful), the mode, or `{ mode }` (DESIGN §3). Anything else throws ERR_SS_BAD_OPTION.
 */
export type CloseModeArg = CloseMode | { mode?: CloseMode }
export type SocketKind = 'client' | 'server'

/**
 * sock.send's answer. Accepted: 'ok', or 'high-water' (accepted, but the queue is above its
 * high-water mark: wait for connectionWritable). Refused: an error code.
 */
export type SendStatus = 'ok' | 'high-water' | 'ERR_SS_CLOSED' | 'ERR_SS_QUEUE_FULL'

/** engine.send / ctx.send answer: accepted ('ok') or refused with a stable code. Never blocks. */
export type RemoteSendStatus =
  | 'ok' | 'ERR_SS_RING_FULL' | 'ERR_SS_STALE' | 'ERR_SS_CLOSED' | 'ERR_SS_STOPPED'
  | 'ERR_SS_TOO_BIG' | 'ERR_SS_BACKPRESSURE' | 'ERR_SS_NOT_CONNECTED' | 'ERR_SS_SHARD_DIED'

/** engine.close / engine.unlink answer. */
export type RequestStatus = 'ok' | 'ERR_SS_STALE' | 'ERR_SS_CLOSED' | 'ERR_SS_SHARD_DIED'

export interface Target { host: string; port: number }

/** What failover may answer. Default: reconnect to the same target after backoff. */
export interface FailoverDecision {
  reconnect: boolean
  /** reconnect with reselect: the next incarnation connects here */
  target?: Target
  /** override the backoff delay for this reconnect */
  delayMs?: number
}
/** What retry may answer: a delay in ms, or false to give up (the connection becomes dead). */
export type RetryDecision = number | false | { delayMs: number; target?: Target }

export interface SocketTimer { cancel(): void }

/** Shard services reachable from a hook (and from a socket). */
export interface ShardContext {
  readonly shard: number
  readonly shards: number
  /** Engine.start's `config` (a structured clone: each shard has its own copy; SharedArrayBuffers stay shared) */
  readonly config: unknown
  /** Cross-shard (or local) send by socket id: the same rules as engine.send. */
  send(id: number, bytes: Uint8Array): RemoteSendStatus
  /** Intentional, final close of any socket by id (Q1: never lost). */
  close(id: number, mode?: CloseModeArg): RequestStatus
  /** Detach user data of any socket by id. */
  unlink(id: number): RequestStatus
  /** Shard-local persistent server connection; its incarnations run `protocol`'s hooks here. */
  connect(opts: ConnectOptions): number
  /** A timer that belongs to one socket incarnation: it runs under the lock, only while linked. */
  timer(sock: SsSocketApi, ms: number, fn: (sock: SsSocketApi) => void): SocketTimer
  readonly stopping: boolean
}

export interface SsSocketApi {
  readonly id: number
  readonly kind: SocketKind
  readonly protocol: string
  readonly shard: number
  readonly localAddress: string | undefined
  readonly localPort: number | undefined
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  /** The linked user data (undefined when not linked). */
  readonly data: unknown
  readonly linked: boolean
  /** Bytes accepted by send and not yet handed to the kernel. */
  readonly queued: number
  readonly ctx: ShardContext
  link(data: unknown): void
  unlink(): unknown
  send(bytes: Uint8Array): SendStatus
  close(mode?: CloseModeArg): void
  pause(): void
  resume(): void
}

export interface Protocol {
  connectionNew?(sock: SsSocketApi): void
  connectionRecv?(sock: SsSocketApi, chunk: Buffer): void
  connectionWritable?(sock: SsSocketApi): void
  connectionEnd?(sock: SsSocketApi): void
  connectionIdle?(sock: SsSocketApi): void
  connectionDrop?(sock: SsSocketApi, reason: DropReason): void
  connectionClose?(sock: SsSocketApi, cause: CloseCause): void
  failover?(sock: SsSocketApi, reason: FailoverReason): FailoverDecision | boolean | void
  retry?(sock: SsSocketApi, attempt: number, error: SyncsockError | Error): RetryDecision | void
}

export const HOOK_NAMES = [
  'connectionNew', 'connectionRecv', 'connectionWritable', 'connectionEnd', 'connectionIdle',
  'connectionDrop', 'connectionClose', 'failover', 'retry',
] as const
export type HookName = typeof HOOK_NAMES[number]

export interface RetryOptions {
  /** first backoff, ms (default 100) */
  baseMs?: number
  /**
   * backoff cap, ms (default 1000). Low on purpose: target gates (gate.ts) let only one probe per
   * shard and target retry while it is down, so a short cap costs one connect a second, not N,
   * and bounds how long a recovered server waits for its connections.
   */
  capMs?: number
  /** failed connects in a row after which the connection is dead (default: never) */
  maxAttempts?: number
  /** 'full' (default) or 'decorrelated' jitter */
  jitter?: 'full' | 'decorrelated'
  /** a connection that stays up this long resets its attempt count (default 5000) */
  resetAfterMs?: number
}

export interface LivenessOptions {
  /** probe every interval ms */
  intervalMs: number
  /** a probe unanswered for this long is a miss */
  timeoutMs: number
  /** misses in a row that mean down (default 1) */
  misses?: number
}

export interface ConnectOptions {
  host: string
  port: number
  protocol: string
  /** how many persistent connections (engine.connect spreads them over the shards) */
  count?: number
  retry?: RetryOptions
  liveness?: LivenessOptions
  /** a connect that is not established in this time is a failure (default 5000) */
  connectTimeoutMs?: number
  /**
   * if > 0: an established incarnation must receive its first bytes within this time, else it
   * is dropped as 'ready-timeout' and handled as a failed connect (retry). Default 0 (off).
   */
  readyTimeoutMs?: number
  /** pin to one shard (engine.connect only); default: round robin */
  shard?: number
}
