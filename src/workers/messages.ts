// Control-plane message shapes between the main thread and shards (MessagePort). Rare, structured
// and answered: listen, connect, stop. The data plane (send) and the requests that must never be
// lost (close, unlink) go through the SharedArrayBuffer instead (src/ss/foreign.ts).

import type { ConnectOptions } from '../hooks/types.ts'
import type { TlsClientSpec, TlsServerSpec } from '../tls/options.ts'

export interface ShardInit {
  sab: SharedArrayBuffer
  shard: number
  hooks: string | null
  /** Engine.start's `config`, structured-cloned into every shard: ctx.config */
  config: unknown
  limits: ShardLimits
  /** Engine.start's tasks module (ctx.offload runs its exports on the pool), or null */
  tasks: string | null
}

export interface ShardLimits {
  highWater: number
  lowWater: number
  maxQueue: number
  sendTimeoutMs: number
  closeTimeoutMs: number
  drainBudget: number
  maxConnectsInFlight: number
  /** ctx.offload calls in flight per shard (blocking.maxOffloadsPerShard) */
  maxOffloads: number
}

export interface ListenSpec {
  key: number
  port: number
  host: string
  protocol: string
  backlog: number
  /** per-listener water marks (null: the engine's) */
  water: { high: number; low: number } | null
  /** TLS: the listener set's current material and ticket keys (CertStore; updated in place) */
  tls: TlsServerSpec | null
}

export type ToShard =
  | { t: 'listen'; req: number; spec: ListenSpec }
  | { t: 'unlisten'; req: number; key: number }
  | { t: 'connect'; req: number; opts: ConnectOptions; count: number; tls?: TlsClientSpec }
  | { t: 'stop'; req: number; graceMs: number }
  /** a TLS set's new material (or ticket keys): build one context, swap it, reply */
  | { t: 'certs'; req: number; spec: TlsServerSpec | TlsClientSpec }
  /** the result of a ctx.offload (no reply) */
  | { t: 'offload-done'; req: number; oid: number; ok: boolean; value?: unknown; error?: { name: string; message: string; code?: string } }

export type FromShard =
  | { t: 'ready' }
  | { t: 'reply'; req: number; ok: true; value: unknown }
  | { t: 'reply'; req: number; ok: false; error: { code?: string; message: string } }
  | { t: 'event'; type: string; detail: Record<string, unknown> }
  /** ctx.offload: run `task` of the tasks module on the pool, answer with offload-done */
  | { t: 'offload'; oid: number; task: string; input: unknown }
