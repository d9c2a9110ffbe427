// The SharedArrayBuffer map: the one place that knows every offset (piscina's symbols.ts,
// Seastar's smp queues). Every thread maps the same buffer through a `Layout` and never
// computes an offset of its own. Nothing here does I/O or allocates after construction.
//
//   header      magic, version, shard count, STOPPING, sizes            (one 64-byte line)
//   threads     per thread one 64-byte line: ALIVE, EPOCH, REQ_PENDING, BELL, SEQ
//   slot tables per shard: (slotsPerShard + SLOT_QUARANTINE) × 4 Int32 words, then a request summary bitmap
//   rings       one SPSC ring per (producer, consumer) pair, producer != consumer
//   counters    per thread a block of Float64 counters, single writer, read under SEQ
//
// Thread ids (tid): 0 is the main thread, shard s is tid s + 1. Locks record tid + 1.

import { SyncsockError, badOption, checkInt } from './errors.ts'

export const MAGIC = 0x53534b31 // 'SSK1'
export const VERSION = 3 // 3: TLS, reload and offload counters appended (issue #9)
export const LINE = 64 // bytes: one cache line; head/tail/bells/counter blocks never share one

// --- header words (Int32 index) ---
export const H_MAGIC = 0
export const H_VERSION = 1
export const H_SHARDS = 2
export const H_STOPPING = 3 // F1: set first by stop(); every reconnect path re-checks it
export const H_SLOTS = 4
export const H_RING_BYTES = 5

// --- per-thread words (Int32 index relative to threadBase(tid)) ---
export const T_ALIVE = 0 // 1 while the thread runs; 0 once the supervisor saw it exit
export const T_EPOCH = 1 // bumped by the supervisor when the thread dies (R1: breaks its locks)
export const T_REQ_PENDING = 2 // a foreign thread recorded a slot request for this shard (Q1)
export const T_BELL = 3 // doorbell: producers exchange 1 and notify on 0 -> 1
export const T_SEQ = 4 // seqlock over this thread's counter block (odd while writing)

// --- slot words (Int32 index relative to slotBase(shard, slot)) ---
export const SLOT_WORDS = 4
export const S_LOCK = 0 // callback lock, see lock.ts
export const S_STATE = 1 // SlotState, written by the owner only, read by anyone
export const S_GENFLAGS = 2 // generation << GEN_SHIFT | flags: one word so a CAS checks both (no ABA)
export const S_INCARNATION = 3 // incarnation number of the connection in the slot (0 at alloc, +1 per beginIncarnation)

// SlotState values (S_STATE)
export const ST_FREE = 0
export const ST_CONNECTING = 1
export const ST_ESTABLISHED = 2
export const ST_CLOSING = 3
export const ST_WAITING = 4 // server connection between incarnations (backoff)
export const ST_DEAD = 5 // server connection that gave up

// Flags in the low 10 bits of S_GENFLAGS, by the lifetime they belong to (DESIGN §4b).
// Connection-level: set when the slot is taken, live until it is released (a server
// connection's slot outlives its incarnations).
export const F_IN_USE = 1 << 0 // the slot holds a socket or server connection
export const F_FINAL = 1 << 1 // intentional close happened: never failover/retry again (F1)
export const F_SERVER = 1 << 2 // persistent server connection (outbound)
export const F_TLS = 1 << 3
export const F_REQ_CLOSE = 1 << 4 // foreign close requested (graceful)
export const F_REQ_ABORT = 1 << 5 // foreign close requested (abort)
// Incarnation-level: about one TCP connection; SlotTable.beginIncarnation clears them, so a
// verdict about incarnation k never reaches k+1 (hardening bug 1: HIGH_WATER of a dropped
// incarnation refused every send to the next one).
export const F_LINKED = 1 << 6 // user data is linked: hooks may run (L1)
export const F_HIGH_WATER = 1 << 7 // send queue above high water: foreign sends are refused
export const F_REQ_UNLINK = 1 << 8 // foreign unlink requested: it means the data linked now
export const INCARNATION_FLAGS = F_LINKED | F_HIGH_WATER | F_REQ_UNLINK
export const FLAGS_MASK = 0x3ff
export const GEN_SHIFT = 10
/** 21 generation bits: the word stays a positive Int32 and the id below 2^49 (exact in a double). */
export const GEN_MAX = (1 << 21) - 1
/**
 * Free slots held back from allocation. The free list is FIFO and never hands out a slot while
 * fewer than this many others are free, so a freed slot is reused only after at least
 * SLOT_QUARANTINE other allocations, however full the table. A stale id (slot s, generation g)
 * can alias only once s's generation wraps: GEN_MAX reuses of s, hence at least
 * GEN_MAX × SLOT_QUARANTINE ≈ 1.07e9 allocations of that shard's table (hardening bug 5: a LIFO
 * list and 15-bit generations aliased after 32,767 serial connections). The quarantined slots
 * are extra: the table has maxSocketsPerShard + SLOT_QUARANTINE slots.
 */
export const SLOT_QUARANTINE = 512

// Socket id: ((gen * 256 + shard) * 2^20) + slot, an integer < 2^49, exact in a double.
export const MAX_SHARDS = 255
export const MAX_SLOTS = (1 << 20) - SLOT_QUARANTINE
const SLOT_SPAN = 1 << 20

export function encodeId(shard: number, slot: number, gen: number): number {
  return (gen * 256 + shard) * SLOT_SPAN + slot
}
export function idShard(id: number): number { return Math.floor(id / SLOT_SPAN) % 256 }
export function idSlot(id: number): number { return id % SLOT_SPAN }
export function idGen(id: number): number { return Math.floor(id / (SLOT_SPAN * 256)) }
export function isSocketId(id: unknown): id is number {
  return typeof id === 'number' && Number.isSafeInteger(id) && id >= SLOT_SPAN * 256
}

// --- counters (Float64 index within a thread's block) ---
export const COUNTER_NAMES = [
  'accepted', 'connected', 'active', 'connecting', 'listeners',
  'closed', 'closedLocal', 'closedForeign', 'closedUnlink', 'closedShutdown', 'closedHookError',
  'dropped', 'droppedFin', 'droppedReset', 'droppedError', 'droppedSendTimeout', 'droppedLiveness',
  'hookErrors', 'bytesIn', 'bytesOut', 'discardedAfterUnlink', 'discardedChunks',
  'ringSent', 'ringRecv', 'ringFull', 'requestsApplied', 'lockContended', 'lockBroken',
  'sendRefused', 'sendFailed', 'establishedAfterStop', 'refusedNoSlot', 'closeTimeouts',
  'connectAttempts', 'connectFailed', 'connectFailedRefused', 'connectFailedTimeout',
  'connectFailedTls', 'connectFailedOther', 'failovers', 'retries', 'reconnects',
  'deadConnections', 'connectsInFlight', 'pendingConnects', 'parked', 'serverConns', 'reconnectsAfterStop',
  'livenessProbes', 'livenessFailures', 'reconnectLatencyMaxMs',
  'loopDelayP50Ms', 'loopDelayP99Ms', 'loopDelayMaxMs',
  'shardRestarts', 'shardsDown', 'outboundOpened', 'outboundConnected', 'gates',
  'shardsTerminated', // main: shards stop() had to terminate (a handle kept them alive); stays 0
  // TLS (issue #9): handshakes of both sides (accepted and server connections), durations, failures by cause
  'tlsHandshakes', 'tlsHandshakesInFlight', 'tlsResumed', 'tlsHandshakeFailed', 'tlsFailedTimeout',
  'tlsFailedCert', 'tlsFailedProtocol', 'tlsFailedClosed', 'tlsHandshakeP50Ms', 'tlsHandshakeP99Ms',
  // certificate reloads: main counts validated (ok) and rejected updates; shards count contexts swapped
  'certReloads', 'certReloadsRejected', 'certSwaps', 'ticketRotations',
  // ctx.offload (the blocking pool): per shard
  'offloads', 'offloadsInFlight', 'offloadsDelivered', 'offloadsDiscarded', 'offloadsRefused', 'offloadErrors',
] as const
export type CounterName = typeof COUNTER_NAMES[number]
export const C = Object.freeze(Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i]))) as {
  readonly [K in CounterName]: number
}
/** Gauges are levels, not events: summing is right for them too, but max-of for loop delay. */
export const MAX_COUNTERS: ReadonlySet<CounterName> = new Set([
  'loopDelayP50Ms', 'loopDelayP99Ms', 'loopDelayMaxMs', 'reconnectLatencyMaxMs',
  'tlsHandshakeP50Ms', 'tlsHandshakeP99Ms',
])

export interface LayoutOptions {
  shards: number
  slotsPerShard: number
  /** bytes per ring, a power of two; default scales down with the shard count */
  ringBytes?: number
}

const align = (n: number, a: number) => Math.ceil(n / a) * a

/** Default ring size: about 4 MiB over all N×(N+1) rings, clamped to [16 KiB, 512 KiB]. */
export function defaultRingBytes(shards: number): number {
  const threads = shards + 1
  const share = (4 << 20) / (threads * (threads - 1))
  let p = 1 << 14
  while (p * 2 <= share && p < (1 << 19)) p *= 2
  return p
}

export class Layout {
  readonly shards: number
  readonly threads: number
  /** slots a shard may have in use (maxSocketsPerShard) */
  readonly slotsPerShard: number
  /** slots in a shard's table: slotsPerShard + SLOT_QUARANTINE */
  readonly slotTableSize: number
  readonly ringBytes: number
  readonly summaryWords: number
  readonly byteLength: number
  readonly counterCount = COUNTER_NAMES.length
  private readonly threadsOff: number
  private readonly slotsOff: number
  private readonly slotTableBytes: number
  private readonly ringsOff: number
  private readonly ringStride: number
  private readonly countersOff: number
  private readonly counterStride: number

  constructor(o: LayoutOptions) {
    this.shards = checkInt('shards', o.shards, 1, MAX_SHARDS)
    this.slotsPerShard = checkInt('maxSocketsPerShard', o.slotsPerShard, 1, MAX_SLOTS)
    const rb = o.ringBytes ?? defaultRingBytes(this.shards)
    if (typeof rb !== 'number' || !Number.isInteger(rb) || rb < 1024 || rb > (1 << 30) || (rb & (rb - 1)) !== 0) {
      badOption('ringBytes', 'a power of two in [1024, 2^30]', rb)
    }
    this.ringBytes = rb
    this.threads = this.shards + 1
    this.slotTableSize = this.slotsPerShard + SLOT_QUARANTINE
    this.summaryWords = Math.ceil(this.slotTableSize / 32)
    this.threadsOff = LINE
    this.slotsOff = this.threadsOff + this.threads * LINE
    this.slotTableBytes = align(this.slotTableSize * SLOT_WORDS * 4 + this.summaryWords * 4, LINE)
    this.ringsOff = this.slotsOff + this.shards * this.slotTableBytes
    this.ringStride = 2 * LINE + this.ringBytes
    this.countersOff = this.ringsOff + this.threads * this.threads * this.ringStride
    this.counterStride = align(this.counterCount * 8, LINE)
    this.byteLength = this.countersOff + this.threads * this.counterStride
  }

  /** Allocate and stamp a fresh buffer. */
  create(): SharedArrayBuffer {
    const sab = new SharedArrayBuffer(this.byteLength)
    const h = new Int32Array(sab, 0, 16)
    h[H_MAGIC] = MAGIC
    h[H_VERSION] = VERSION
    h[H_SHARDS] = this.shards
    h[H_SLOTS] = this.slotsPerShard
    h[H_RING_BYTES] = this.ringBytes
    return sab
  }

  /** Rebuild the layout another thread created, checking that it is one. */
  static from(sab: SharedArrayBuffer): Layout {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < LINE) {
      throw new SyncsockError('ERR_SS_BAD_MEMORY', 'not a SharedArrayBuffer holding a syncsock layout')
    }
    const h = new Int32Array(sab, 0, 16)
    if (h[H_MAGIC] !== MAGIC || h[H_VERSION] !== VERSION) {
      throw new SyncsockError('ERR_SS_BAD_MEMORY', `bad magic/version ${h[H_MAGIC]}/${h[H_VERSION]}`)
    }
    let l: Layout
    try {
      l = new Layout({ shards: h[H_SHARDS], slotsPerShard: h[H_SLOTS], ringBytes: h[H_RING_BYTES] })
    } catch (e) {
      // A header with the right magic but impossible sizes is bad memory, not a bad user option.
      throw new SyncsockError('ERR_SS_BAD_MEMORY', 'corrupt layout header', { cause: e })
    }
    if (l.byteLength !== sab.byteLength) throw new SyncsockError('ERR_SS_BAD_MEMORY', 'size mismatch')
    return l
  }

  /** Int32 index of a thread's first word. */
  threadBase(tid: number): number { return (this.threadsOff + tid * LINE) >> 2 }
  /** Int32 index of a slot's first word. */
  slotBase(shard: number, slot: number): number {
    return ((this.slotsOff + shard * this.slotTableBytes) >> 2) + slot * SLOT_WORDS
  }
  /** Int32 index of a shard's request summary bitmap (one bit per slot). */
  summaryBase(shard: number): number {
    return ((this.slotsOff + shard * this.slotTableBytes) >> 2) + this.slotTableSize * SLOT_WORDS
  }
  /** Byte offset of the ring from producer tid to consumer tid. */
  ringOffset(producer: number, consumer: number): number {
    if (producer === consumer) throw new SyncsockError('ERR_SS_BAD_OPTION', 'no ring from a thread to itself')
    return this.ringsOff + (producer * this.threads + consumer) * this.ringStride
  }
  /** Byte offset of a thread's counter block (Float64). */
  countersOffset(tid: number): number { return this.countersOff + tid * this.counterStride }
}
