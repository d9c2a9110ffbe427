// Requests to sockets owned by another thread (O1): send through the owner's ring, close and
// unlink recorded in the slot itself (Q1). Used by the main thread (engine.send/close/unlink) and
// by shards (ctx.send/close/unlink for sockets of other shards). Never blocks (S1, S2).
//
// Ring message: [u32 op | flags << 8][u32 incarnation][f64 socket id][payload]. A payload larger than one
// record is split into fragments committed together (published whole or refused whole); the
// consumer writes each fragment to the socket in order and never interleaves another producer's
// message inside one (Ring.drain keeps going while MORE is set).
//
// Close/unlink never need ring space: the request bits go into the slot's flag word with one
// CAS that also checks the generation, the slot is marked in the owner's summary bitmap, and the
// owner's bell rings. The owner applies them after consuming everything that was published
// before it saw them (Inbox.barrier), so a close never overtakes the sends its producer made
// before it, and a full ring cannot lose it.

import {
  type Layout, C, F_FINAL, F_HIGH_WATER, F_REQ_CLOSE, F_REQ_ABORT, F_REQ_UNLINK, F_SERVER,
  H_STOPPING, ST_ESTABLISHED, F_IN_USE, idShard, idGen,
} from './layout.ts'
import { Ring, Doorbell } from './ring.ts'
import { SlotView, flagsOf, genOf } from './slots.ts'
import { CallbackLock, LOCK_FAILED } from './lock.ts'
import type { CounterBlock } from './counters.ts'
import { SyncsockError } from './errors.ts'
import { closeModeOf, shown, type CloseModeArg } from './options.ts'
import type { RemoteSendStatus, RequestStatus } from './types.ts'

export const OP_SEND = 1
export const MSG_MORE = 1 // flag: the message continues in the next record
export const MSG_HDR = 16
/** Fragment payload size: big enough to amortize the header, small enough to share the ring. */
const FRAGMENT = 64 * 1024

export class ForeignOps {
  readonly tid: number
  readonly slots: SlotView
  private readonly rings: (Ring | null)[] // by consumer tid
  private readonly bells: (Doorbell | null)[]
  private readonly i32: Int32Array
  private readonly lock: CallbackLock
  private readonly counters: CounterBlock
  private readonly maxMessage: number

  constructor(sab: SharedArrayBuffer, layout: Layout, tid: number, counters: CounterBlock, lock: CallbackLock) {
    this.tid = tid
    this.slots = new SlotView(sab, layout)
    this.i32 = new Int32Array(sab)
    this.lock = lock
    this.counters = counters
    this.rings = []
    this.bells = []
    for (let c = 0; c < layout.threads; c++) {
      this.rings.push(c === tid ? null : Ring.of(sab, layout, tid, c))
      this.bells.push(c === tid ? null : new Doorbell(sab, layout, c))
    }
    // A message must fit an empty ring whole, with its fragment headers and a wrap.
    this.maxMessage = Math.floor(layout.ringBytes / 2) - 2 * MSG_HDR
  }

  stopping(): boolean { return Atomics.load(this.i32, H_STOPPING) !== 0 }

  check(id: unknown): asserts id is number {
    if (!this.slots.wellFormed(id)) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', `not a socket id of this engine: ${shown(id)}`)
    }
  }

  /** Send to a socket owned by another thread. Accepted ('ok') or refused with a code, at once. */
  send(id: number, bytes: Uint8Array): RemoteSendStatus {
    this.check(id)
    if (!(bytes instanceof Uint8Array)) throw new SyncsockError('ERR_SS_BAD_OPTION', 'send takes a Uint8Array or Buffer')
    // Read before the checks: the send is for the incarnation that was there when it was
    // checked; if that one is gone when the owner drains it, it fails (sendFailed), never reaching
    // the next incarnation of a server connection (same id, same generation).
    const incarnation = this.slots.incarnation(id)
    const st = this.refusal(id)
    if (st !== 'ok') { this.counters.add(C.sendRefused); return st }
    if (bytes.length > this.maxMessage) { this.counters.add(C.sendRefused); return 'ERR_SS_TOO_BIG' }
    const consumer = idShard(id) + 1
    const ring = this.rings[consumer]!
    let off = 0
    do {
      const n = Math.min(FRAGMENT, ring.maxBody - MSG_HDR, bytes.length - off)
      const at = ring.reserve(MSG_HDR + n)
      if (at < 0) {
        ring.abort()
        this.counters.add(C.ringFull)
        return 'ERR_SS_RING_FULL'
      }
      const more = off + n < bytes.length
      ring.dv.setUint32(at, OP_SEND | ((more ? MSG_MORE : 0) << 8), true)
      ring.dv.setUint32(at + 4, incarnation, true)
      ring.dv.setFloat64(at + 8, id, true)
      ring.u8.set(bytes.subarray(off, off + n), at + MSG_HDR)
      off += n
    } while (off < bytes.length)
    ring.commit()
    this.counters.add(C.ringSent)
    this.bells[consumer]!.ring()
    return 'ok'
  }

  private refusal(id: number): RemoteSendStatus {
    if (this.stopping()) return 'ERR_SS_STOPPED'
    // A dead shard's ring is read by nobody until a replacement resets the table: refuse rather
    // than accept bytes that would be lost (S2; hardening bug 10).
    if (!this.slots.ownerAlive(id)) return 'ERR_SS_SHARD_DIED'
    // ONE load of the slot word decides liveness and flags together: two loads could pair the
    // generation of one incarnation with the flags of the next. The state is another word, read
    // after: it may lag (a server connection just dropped still reads ESTABLISHED), which is
    // benign — the owner checks its socket again when it drains the record, and a send that finds
    // no open incarnation there is counted as sendFailed (S2), never written to another socket.
    const w = this.slots.word(id)
    if (genOf(w) !== idGen(id) || (w & F_IN_USE) === 0) return 'ERR_SS_STALE'
    const f = flagsOf(w)
    if (f & (F_FINAL | F_REQ_CLOSE | F_REQ_ABORT)) return 'ERR_SS_CLOSED'
    if (f & F_HIGH_WATER) return 'ERR_SS_BACKPRESSURE'
    if ((f & F_SERVER) && this.slots.state(id) !== ST_ESTABLISHED) return 'ERR_SS_NOT_CONNECTED'
    return 'ok'
  }

  /** Intentional, final close by id: the one close signature (ss/options.ts closeModeOf). */
  close(id: number, how?: CloseModeArg): RequestStatus {
    const mode = closeModeOf(how, 'close')
    return this.request(id, F_FINAL | (mode === 'abort' ? F_REQ_ABORT : F_REQ_CLOSE))
  }

  unlink(id: number): RequestStatus { return this.request(id, F_REQ_UNLINK) }

  /**
   * Record request bits in the slot: under a foreign try-lock when the owner is not in a hook (so
   * the owner's next hook check sees them), else by the generation-checked CAS alone (O1).
   */
  private request(id: number, bits: number): RequestStatus {
    this.check(id)
    const lockIdx = this.slots.lockIdx(id)
    const got = this.lock.tryLock(lockIdx)
    let before: number
    try {
      before = this.slots.orIfLive(id, bits)
    } finally {
      if (got !== LOCK_FAILED) this.lock.release(lockIdx)
    }
    // Stale: the incarnation is gone, or its shard died and the engine sealed the table (a CAS
    // that lands before the seal is seen by it, so 'ok' is never lost: hardening bug 3). While
    // the owner is dead (until a replacement is up, or for good without restarts) say so.
    if (before < 0) return this.slots.ownerAlive(id) ? 'ERR_SS_STALE' : 'ERR_SS_SHARD_DIED'
    if ((bits & F_FINAL) && (before & F_FINAL)) return 'ERR_SS_CLOSED'
    this.slots.markRequest(id)
    this.bells[idShard(id) + 1]?.ring()
    return 'ok'
  }
}

// ---- the consumer side of the encoding above (the owner shard's Inbox reads records with it) ----

/** The record's op (OP_SEND; other values are skipped by the consumer). */
export function recordOp(dv: DataView, off: number): number { return dv.getUint32(off, true) & 0xff }
/** The message continues in the next record (a fragment). */
export function recordMore(dv: DataView, off: number): boolean { return ((dv.getUint32(off, true) >>> 8) & MSG_MORE) !== 0 }
/** The incarnation of the connection the send was accepted for (SlotTable.beginIncarnation). */
export function recordIncarnation(dv: DataView, off: number): number { return dv.getUint32(off + 4, true) }
/** The socket id the record is for. */
export function recordId(dv: DataView, off: number): number { return dv.getFloat64(off + 8, true) }
/** The payload of a record of `len` bytes at `off`: a view into the ring, valid until the drain publishes its head. */
export function recordPayload(u8: Uint8Array, off: number, len: number): Uint8Array { return u8.subarray(off + MSG_HDR, off + len) }
