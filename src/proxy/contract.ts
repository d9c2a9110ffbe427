// What main (main.ts) and the hooks in every shard (hooks.ts) agree on: the protocol names and
// the `config` main passes to Engine.start (ctx.config in the shards). Main imports this, not the
// hooks module, so the hooks run only in the shards.

/** Engine.start's `config`: plain numbers and two SharedArrayBuffers (shared, not copied). */
export interface ProxyShardConfig {
  /** BackendTable's SharedArrayBuffer (table.ts) */
  table: SharedArrayBuffer
  /** ProxyStats' SharedArrayBuffer (stats.ts) */
  stats: SharedArrayBuffer
  shards: number
  /** water marks of the upstream sockets (the listener gives the clients the same) */
  highWater: number
  lowWater: number
  /** client bytes kept while the upstream connects; past it the client is paused */
  pendingLimit: number
}

/** accepted clients */
export const CLIENT_PROTOCOL = 'proxy-client'
/** their one-shot connections to a backend (ctx.open) */
export const UPSTREAM_PROTOCOL = 'proxy-upstream'
/** the health connection of the backend in table slot `slot` (one protocol per slot) */
export const healthProtocol = (slot: number) => `health-${slot}`
