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

// The socket layer's vocabulary (reasons, causes, modes, statuses, hook names) is defined where
// it is used, in src/ss/types.ts (the layer that calls hooks defines their contract, as Tempesta's
// sync_socket.h defines SsHooks); re-exported here for the hooks layer and users.
export type {
  DropReason, FailoverReason, CloseCause, CloseMode, CloseModeArg, SocketKind, SendStatus,
  RemoteSendStatus, RequestStatus, HookName,
} from '../ss/types.ts'
export { HOOK_NAMES } from '../ss/types.ts'
import type {
  DropReason, FailoverReason, CloseCause, CloseModeArg, SocketKind, SendStatus, RemoteSendStatus,
  RequestStatus,
} from '../ss/types.ts'

export interface Target { host: string; port: number }

/** ctx.send's answer: engine.send's, plus 'high-water' (accepted above the high-water mark) for a socket of this shard. */
export type CtxSendStatus = RemoteSendStatus | 'high-water'

/** ctx.open options: a one-shot outbound socket. */
export interface OpenOptions {
  host: string
  port: number
  /** the protocol whose hooks run for it */
  protocol: string
  /** linked from the start (default null); released exactly once by connectionDrop/connectionClose */
  data?: unknown
  /** still not established after this: connectionDrop(sock, 'connect-failed', ERR_SS_TIMEOUT) (default 5000; checked on the shard's housekeeping tick) */
  connectTimeoutMs?: number
  highWater?: number
  lowWater?: number
}

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

/** ctx.offload's answer: accepted, or refused at the call (nothing runs, `done` never will). */
export type OffloadStatus = 'ok' | 'ERR_SS_BUSY' | 'ERR_SS_CLOSED' | 'ERR_SS_STOPPED'
/**
 * An offload's callback: runs in the owning shard under the socket's lock, only if that
 * incarnation is still linked (else the result is discarded and counted `offloadsDiscarded`).
 * `error` is set when the task threw (its message, name and string `code` survive the thread hop).
 */
export type OffloadDone = (sock: SsSocketApi, result: unknown, error: Error | undefined) => void

/** Certificate material: PEM bytes (a Buffer/Uint8Array, or a string with -----BEGIN), or a file path or file: URL (read and watched by the main thread). */
export type TlsMaterial = string | URL | Uint8Array

/** listen({ tls }): served on every shard; files are watched and reloaded (docs/tls.md). */
export interface TlsListenOptions {
  cert: TlsMaterial
  key: TlsMaterial
  /** CA for client certificates; with it the served chain must lead to it too */
  ca?: TlsMaterial
  /** ask clients for a certificate (mutual TLS; default false) */
  requestCert?: boolean
  /** with requestCert: refuse clients whose certificate does not verify against `ca` (default true) */
  rejectUnauthorized?: boolean
  /** a handshake not done in this time is closed and counted (tlsFailedTimeout; default 10000) */
  handshakeTimeoutMs?: number
  /** session-ticket keys (the same on every shard) are replaced this often (default 3600000) */
  ticketRotateMs?: number
}

/** connect({ tls }): a TLS server connection; a failed or timed-out handshake is a failed connect (retry). */
export interface TlsConnectOptions {
  ca?: TlsMaterial
  /** a client certificate and its key (mutual TLS) */
  cert?: TlsMaterial
  key?: TlsMaterial
  /** SNI and the name the certificate must carry (default: the host, unless it is an address) */
  servername?: string
  /** refuse a server whose certificate does not verify (default true) */
  rejectUnauthorized?: boolean
  /** the handshake after the TCP connect must finish in this time (default 10000): ERR_SS_TLS_TIMEOUT */
  handshakeTimeoutMs?: number
}

/** Shard services reachable from a hook (and from a socket). */
export interface ShardContext {
  readonly shard: number
  readonly shards: number
  /** Engine.start's `config` (a structured clone: each shard has its own copy; SharedArrayBuffers stay shared) */
  readonly config: unknown
  /** Cross-shard (or local) send by socket id: the same rules as engine.send. */
  send(id: number, bytes: Uint8Array): CtxSendStatus
  /** Intentional, final close of any socket by id (Q1: never lost). */
  close(id: number, mode?: CloseModeArg): RequestStatus
  /** Detach user data of any socket by id. */
  unlink(id: number): RequestStatus
  /** Shard-local persistent server connection; its incarnations run `protocol`'s hooks here. */
  connect(opts: ConnectOptions): number
  /**
   * A one-shot outbound socket from this shard (no failover, no retry, no gate): `data` is linked
   * from the start (null if not given) and released exactly once whatever happens — a failed
   * connect is `connectionDrop(sock, 'connect-failed', error)` to `protocol`. connectionNew runs
   * once it is established. Bytes sent before that wait in its queue. Returns its id.
   */
  open(opts: OpenOptions): number
  /** A timer that belongs to one socket incarnation: it runs under the lock, only while linked. */
  timer(sock: SsSocketApi, ms: number, fn: (sock: SsSocketApi) => void): SocketTimer
  /**
   * Run `task` (an export of Engine.start's `tasks` module) with `input` on the blocking pool;
   * `done(sock, result, error)` runs later under the socket's lock only if that incarnation is
   * still linked. Refused at the call when this shard has blocking.maxOffloadsPerShard in flight.
   */
  offload(sock: SsSocketApi, task: string, input: unknown, done: OffloadDone): OffloadStatus
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
  /** Half-close: FIN after the queue flushes, keep reading (see docs/hooks.md) */
  shutdown(): void
  pause(): void
  resume(): void
}

export interface Protocol {
  connectionNew?(sock: SsSocketApi): void
  connectionRecv?(sock: SsSocketApi, chunk: Buffer): void
  connectionWritable?(sock: SsSocketApi): void
  connectionEnd?(sock: SsSocketApi): void
  connectionIdle?(sock: SsSocketApi): void
  /** `error` is set for 'connect-failed' (a one-shot socket of ctx.open whose connect failed) */
  connectionDrop?(sock: SsSocketApi, reason: DropReason, error?: Error): void
  connectionClose?(sock: SsSocketApi, cause: CloseCause): void
  failover?(sock: SsSocketApi, reason: FailoverReason): FailoverDecision | boolean | void
  retry?(sock: SsSocketApi, attempt: number, error: SyncsockError | Error): RetryDecision | void
}


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
  /** the incarnations' send-queue water marks (default: the engine's) */
  highWater?: number
  lowWater?: number
  /** pin to one shard (engine.connect only); default: round robin */
  shard?: number
  /** TLS (ctx.connect: PEM bytes only, a shard reads no files) */
  tls?: TlsConnectOptions
}
