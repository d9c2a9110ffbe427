// The socket layer's vocabulary: why a socket ended, how it may be closed, what a send answers,
// and the names of the upcalls (hooks) it makes. Defined here, by the layer that calls hooks
// (Tempesta's sync_socket.h defines SsHooks); src/hooks implements protocols against it and
// re-exports these types. Types and one constant only: no code, no imports.

export type DropReason = 'fin' | 'reset' | 'error' | 'send-timeout' | 'liveness' | 'ready-timeout' | 'connect-failed'
/** Why failover runs: the incarnation was dropped, or a hook of it threw ('hook-error'). */
export type FailoverReason = DropReason | 'hook-error'
export type CloseCause = 'local' | 'foreign' | 'unlink' | 'shutdown' | 'hook-error'
export type CloseMode = 'graceful' | 'abort'
/**
 * The one close signature of engine.close(id, m), ctx.close(id, m) and sock.close(m): nothing
 * (graceful), the mode, or `{ mode }` (DESIGN §3). Anything else throws ERR_SS_BAD_OPTION.
 */
export type CloseModeArg = CloseMode | { mode?: CloseMode }
/** 'client': accepted; 'server': an incarnation of a persistent server connection; 'outbound': ctx.open */
export type SocketKind = 'client' | 'server' | 'outbound'

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

export const HOOK_NAMES = [
  'connectionNew', 'connectionRecv', 'connectionWritable', 'connectionEnd', 'connectionIdle',
  'connectionDrop', 'connectionClose', 'failover', 'retry',
] as const
export type HookName = typeof HOOK_NAMES[number]

/**
 * A protocol as the socket layer sees it: a table of optional upcalls. src/hooks/types.ts types
 * each one for users (Protocol); the socket layer only checks presence and calls them.
 */
export type HookTable = { readonly [K in HookName]?: (...args: never[]) => unknown }
