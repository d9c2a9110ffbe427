// Control-plane message shapes between the main thread and shards (MessagePort). Rare, structured
// and answered: listen, connect, stop. The data plane (send) and the requests that must never be
// lost (close, unlink) go through the SharedArrayBuffer instead (src/ss/foreign.ts).

import type { ConnectOptions } from '../hooks/types.ts'

export interface ShardInit {
  sab: SharedArrayBuffer
  shard: number
  hooks: string | null
  /** Engine.start's `config`, structured-cloned into every shard: ctx.config */
  config: unknown
  limits: ShardLimits
}

export interface ShardLimits {
  highWater: number
  lowWater: number
  maxQueue: number
  sendTimeoutMs: number
  closeTimeoutMs: number
  drainBudget: number
  maxConnectsInFlight: number
}

export interface ListenSpec {
  key: number
  port: number
  host: string
  protocol: string
  backlog: number
  /** per-listener water marks (null: the engine's) */
  water: { high: number; low: number } | null
}

export type ToShard =
  | { t: 'listen'; req: number; spec: ListenSpec }
  | { t: 'unlisten'; req: number; key: number }
  | { t: 'connect'; req: number; opts: ConnectOptions; count: number }
  | { t: 'stop'; req: number; graceMs: number }

export type FromShard =
  | { t: 'ready' }
  | { t: 'reply'; req: number; ok: true; value: unknown }
  | { t: 'reply'; req: number; ok: false; error: { code?: string; message: string } }
  | { t: 'event'; type: string; detail: Record<string, unknown> }
