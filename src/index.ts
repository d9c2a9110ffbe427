// syncsock public API. src/proxy uses only what is exported here.
export { Engine, reusePortSupported } from './workers/engine.ts'
export type { EngineOptions, ListenOptions, Listener, EngineStats, StopOptions } from './workers/engine.ts'
export { defineProtocols, builtinProtocols } from './hooks/protocols.ts'
export { backoffDelay } from './hooks/retry.ts'
export type {
  Protocol, SsSocketApi as SsSocket, ShardContext, DropReason, FailoverReason, CloseCause, CloseMode, SendStatus,
  RemoteSendStatus, RequestStatus, FailoverDecision, RetryDecision, ConnectOptions, RetryOptions,
  LivenessOptions, Target, SocketKind, SocketTimer, CloseModeArg, OpenOptions, CtxSendStatus,
  OffloadStatus, OffloadDone, TlsMaterial, TlsListenOptions, TlsConnectOptions,
} from './hooks/types.ts'
export { SyncsockError, codes as errorCodes } from './ss/errors.ts'
export type { ErrorCode } from './ss/errors.ts'
export { COUNTER_NAMES, idShard, idSlot, idGen } from './ss/layout.ts'
export type { CounterName } from './ss/layout.ts'
export type { CounterSnapshot } from './ss/counters.ts'
