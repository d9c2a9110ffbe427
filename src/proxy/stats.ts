// The proxy's counters: a SharedArrayBuffer of Float64 rows, one row per shard and one block of
// per-backend counters per shard, each written only by its shard's thread (single writer, no
// Atomics, no contention on the per-chunk byte counts), summed by main for the status line,
// --stats-json and --metrics. It never does I/O.
//
// A counter row outlives a shard: a restarted shard (DESIGN R1) keeps counting in the same row,
// so totals survive a crash; its gauges (clients, upstreams, per-backend active) are zeroed by
// the replacement when it starts (hooks.ts), since the crashed thread's sockets are gone.
//
// Main reads rows while shards write them: an aligned Float64 store or load is one machine
// instruction on the 64-bit platforms Node runs worker threads on, so a read sees either the
// old or the new value; a sum over rows is not one instant, which a per-second report accepts.

export const SHARD_COUNTERS = [
  'clientsAccepted', // clients accepted
  'clientsActive', // gauge: clients linked now
  'clientsNoBackend', // clients closed because no backend answered (or none was up)
  'redispatches', // connects to a next backend after a failed one
  'connectFailures', // upstream connects that failed (refused, timeout, unreachable, ...)
  'upstreamsActive', // gauge: upstream sockets connecting or connected
  'bytesFromClients', // client -> backend
  'bytesToClients', // backend -> client
  'resetsForwarded', // an RST from one side turned into an RST to the other
] as const
export type ShardCounter = typeof SHARD_COUNTERS[number]
export const SC = Object.freeze(Object.fromEntries(SHARD_COUNTERS.map((n, i) => [n, i]))) as { readonly [K in ShardCounter]: number }

export const BACKEND_COUNTERS = [
  'connections', // upstream connects that succeeded
  'failures', // upstream connects that failed
  'active', // gauge: this shard's share of the table's ACTIVE (undone if the shard restarts)
  'checksOk', // health checks that connected
  'checksFailed', // health checks that failed
] as const
export type BackendCounter = typeof BACKEND_COUNTERS[number]
export const BC = Object.freeze(Object.fromEntries(BACKEND_COUNTERS.map((n, i) => [n, i]))) as { readonly [K in BackendCounter]: number }

const ROW = 16 // Float64 per shard row: 128 bytes, rows never share a cache line
const BACKEND_ROW = 8 // Float64 per (shard, backend)

export class ProxyStats {
  readonly sab: SharedArrayBuffer
  readonly shards: number
  readonly backends: number
  private readonly f64: Float64Array
  private readonly backendBase: number

  constructor(sab: SharedArrayBuffer, shards: number, backends: number) {
    this.sab = sab
    this.shards = shards
    this.backends = backends
    this.f64 = new Float64Array(sab)
    this.backendBase = shards * ROW
    if (this.f64.length !== ProxyStats.words(shards, backends)) throw new Error('proxy stats: buffer size does not match')
  }

  static words(shards: number, backends: number): number { return shards * ROW + shards * backends * BACKEND_ROW }
  static create(shards: number, backends: number): ProxyStats {
    return new ProxyStats(new SharedArrayBuffer(ProxyStats.words(shards, backends) * 8), shards, backends)
  }

  // ---------------- the owning shard ----------------

  add(shard: number, c: number, n = 1): void { this.f64[shard * ROW + c] += n }
  addBackend(shard: number, slot: number, c: number, n = 1): void { this.f64[this.backendBase + (shard * this.backends + slot) * BACKEND_ROW + c] += n }
  get(shard: number, c: number): number { return this.f64[shard * ROW + c] }
  getBackend(shard: number, slot: number, c: number): number { return this.f64[this.backendBase + (shard * this.backends + slot) * BACKEND_ROW + c] }
  set(shard: number, c: number, v: number): void { this.f64[shard * ROW + c] = v }
  setBackend(shard: number, slot: number, c: number, v: number): void { this.f64[this.backendBase + (shard * this.backends + slot) * BACKEND_ROW + c] = v }

  // ---------------- main: sums ----------------

  sum(c: number): number {
    let n = 0
    for (let s = 0; s < this.shards; s++) n += this.f64[s * ROW + c]
    return n
  }

  sumBackend(slot: number, c: number): number {
    let n = 0
    for (let s = 0; s < this.shards; s++) n += this.f64[this.backendBase + (s * this.backends + slot) * BACKEND_ROW + c]
    return n
  }

  /** Every shard counter summed, by name. */
  totals(): Record<ShardCounter, number> {
    return Object.fromEntries(SHARD_COUNTERS.map((n, i) => [n, this.sum(i)])) as Record<ShardCounter, number>
  }
}
