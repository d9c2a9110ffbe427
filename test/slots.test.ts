// Slot tables and socket ids (src/ss/slots.ts, ids in src/ss/layout.ts): a freed and reused slot
// rejects every id of its earlier incarnations, from any thread (no ABA); ids round-trip; foreign
// request bits reach the owner exactly (Q1) and never leak into a later incarnation.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import fc from 'fast-check'
import {
  Layout, encodeId, idShard, idSlot, idGen, isSocketId, GEN_MAX, MAX_SHARDS, MAX_SLOTS, SLOT_QUARANTINE,
  F_IN_USE, F_LINKED, F_REQ_CLOSE, F_REQ_ABORT, F_REQ_UNLINK, F_SERVER, F_FINAL, F_HIGH_WATER, INCARNATION_FLAGS,
  S_LOCK, ST_ESTABLISHED, ST_FREE, T_ALIVE,
} from '../src/ss/layout.ts'
import { SlotTable, SlotView, STALE_FLAGS, genOf } from '../src/ss/slots.ts'
import { SyncsockError } from '../src/ss/errors.ts'
import { CounterBlock } from '../src/ss/counters.ts'
import { CallbackLock } from '../src/ss/lock.ts'
import { Ring } from '../src/ss/ring.ts'
import { ForeignOps, recordId, recordIncarnation, recordPayload } from '../src/ss/foreign.ts'
import { TestWorker, terminateAll } from './thread-helpers.ts'

function setup(shards = 2, slotsPerShard = 8) {
  const layout = new Layout({ shards, slotsPerShard, ringBytes: 1024 })
  const sab = layout.create()
  return { layout, sab, i32: new Int32Array(sab), view: new SlotView(sab, layout) }
}

test('a freed and reused slot rejects the old id: live() false, orIfLive() -1, its bits never reach the new incarnation', () => {
  const { sab, layout, view } = setup()
  const t = new SlotTable(sab, layout, 1, { size: 2, quarantine: 1 }) // two slots, one held back: FIFO alternates
  const a = t.alloc(F_LINKED, ST_ESTABLISHED)
  assert.ok(view.wellFormed(a))
  assert.is(idShard(a), 1)
  assert.ok(view.live(a))
  assert.is(view.orIfLive(a, F_REQ_UNLINK), F_LINKED | F_IN_USE, 'returns the flags before')
  t.release(a)
  assert.not.ok(view.live(a), 'freed')
  assert.is(view.orIfLive(a, F_REQ_CLOSE), -1)
  assert.is(view.state(a), ST_FREE)
  assert.is(t.flags(a), STALE_FLAGS, 'owner-side reads of a stale id answer final')
  assert.is(t.takeFlags(a, F_REQ_UNLINK), 0, 'owner-side takes of a stale id take nothing')

  const other = t.alloc(0, ST_ESTABLISHED)
  assert.is.not(idSlot(other), idSlot(a), 'FIFO with a quarantine: the freed slot is not handed out next')
  t.release(other)
  const b = t.alloc(0, ST_ESTABLISHED)
  assert.is(idSlot(b), idSlot(a), 'then the slot comes back')
  assert.is(idGen(b), idGen(a) + 1)
  assert.is.not(b, a)
  assert.not.ok(view.live(a))
  assert.is(view.orIfLive(a, F_REQ_CLOSE), -1)
  t.setFlags(a, F_LINKED)
  t.clearFlags(a, F_IN_USE)
  assert.is(t.flags(b), F_IN_USE, 'no request bit of the old incarnation (nor LINKED) survived, and owner ops by the old id changed nothing')
  assert.ok(view.live(b))
  assert.is(view.orIfLive(b, F_REQ_CLOSE), F_IN_USE)
  assert.is(t.takeFlags(a, F_REQ_CLOSE), 0, 'a stale id cannot take the new incarnation\'s request (bug 4)')
  assert.is(t.takeFlags(b, F_REQ_CLOSE | F_REQ_UNLINK), F_REQ_CLOSE, 'takeFlags returns only bits that were set')
  assert.is(t.flags(b), F_IN_USE)
  try { t.release(a); assert.unreachable('release of a stale id must throw') } catch (e) {
    assert.ok(SyncsockError.is(e, 'ERR_SS_STALE'), String(e))
  }
  assert.ok(view.live(b), 'the failed stale release left the live incarnation alone')
})

test('beginIncarnation clears the incarnation-level flags (LINKED, HIGH_WATER, a pending unlink) and keeps the connection-level ones', () => {
  const { sab, layout } = setup()
  const t = new SlotTable(sab, layout, 0)
  const id = t.alloc(F_SERVER, ST_ESTABLISHED)
  t.setFlags(id, F_LINKED | F_HIGH_WATER | F_REQ_UNLINK | F_REQ_CLOSE)
  t.beginIncarnation(id)
  assert.is(t.flags(id), F_SERVER | F_IN_USE | F_REQ_CLOSE)
  assert.is(INCARNATION_FLAGS & (F_FINAL | F_SERVER | F_IN_USE | F_REQ_CLOSE | F_REQ_ABORT), 0)
})

test('a foreign send carries the incarnation it was checked against: a server connection\'s next incarnation (same id) can tell it apart', () => {
  const { sab, layout } = setup(1, 4)
  Atomics.store(new Int32Array(sab), layout.threadBase(1) + T_ALIVE, 1) // the owner shard "runs"
  const t = new SlotTable(sab, layout, 0)
  const counters = new CounterBlock(sab, layout, 0)
  const foreign = new ForeignOps(sab, layout, 0, counters, new CallbackLock(sab, layout, 0, counters))
  const id = t.alloc(F_SERVER, ST_ESTABLISHED)
  t.beginIncarnation(id)
  assert.is(t.incarnation(id), 1)
  assert.is(foreign.send(id, Buffer.from('for k=1')), 'ok')
  t.beginIncarnation(id) // k=1 dropped, k=2 began: same id, same generation
  t.setState(id, ST_ESTABLISHED)
  assert.is(foreign.send(id, Buffer.from('for k=2')), 'ok')
  const ring = Ring.of(sab, layout, 0, 1)
  const got: [number, number, string][] = []
  ring.drain(16, (off, len) => { got.push([recordId(ring.dv, off), recordIncarnation(ring.dv, off), Buffer.from(recordPayload(ring.u8, off, len)).toString()]) })
  assert.equal(got, [[id, 1, 'for k=1'], [id, 2, 'for k=2']], 'the owner drops the first (its incarnation ended: sendFailed), writes the second')
})

test('generations wrap from genMax to 1, never 0, and the wrapped-from id is stale', () => {
  const { sab, layout, view } = setup(1, 1)
  const genMax = 50
  const t = new SlotTable(sab, layout, 0, { size: 1, quarantine: 0, genMax })
  let prev = -1
  const seen = new Set<number>()
  for (let i = 0; i < genMax + 3; i++) {
    const id = t.alloc(0, ST_ESTABLISHED)
    const g = idGen(id)
    assert.ok(g >= 1 && g <= genMax)
    assert.ok(isSocketId(id))
    if (prev !== -1) assert.not.ok(view.live(prev))
    seen.add(g)
    t.release(id)
    prev = id
  }
  assert.is(seen.size, genMax, 'every generation 1..genMax used, 0 never')
  assert.ok(!seen.has(0))
})

test('a stale id answers ERR_SS_STALE for at least 10^9 allocations of its table (bug 5: ids repeated after 32,767)', () => {
  // Why: the free list is FIFO and never allocates while only `quarantine` slots are free, so
  // whatever the allocation pattern (even a table kept full but for one churning socket) each
  // reuse of a slot comes after at least `quarantine` other allocations. An id (slot s, gen g)
  // reappears only when s's generation has wrapped: genMax allocations of s, hence at least
  // genMax × (quarantine + 1) allocations of the table.
  assert.ok(GEN_MAX * (SLOT_QUARANTINE + 1) >= 1e9, `${GEN_MAX} × ${SLOT_QUARANTINE + 1} >= 1e9`)
  const { layout } = setup(1, 16)
  // The same argument checked at a small scale: random alloc/release patterns on a tiny table.
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 7 }),
    fc.array(fc.nat(), { minLength: 50, maxLength: 400 }),
    (genMax, quarantine, extra, ops) => {
      const size = quarantine + extra
      const sab = layout.create()
      const view = new SlotView(sab, layout)
      const t = new SlotTable(sab, layout, 0, { size, quarantine, genMax })
      const bound = genMax * (quarantine + 1)
      const held: number[] = []
      const releasedAt = new Map<number, number>() // stale id -> allocation count at its release
      let allocs = 0
      for (const op of ops) {
        if (op % 3 !== 0 || held.length === 0) {
          const id = t.alloc(0, ST_ESTABLISHED)
          if (id < 0) { assert.is(held.length, size - quarantine, 'full only at capacity'); continue }
          allocs++
          const at = releasedAt.get(id)
          if (at !== undefined) {
            assert.ok(allocs - at >= bound, `id reused after ${allocs - at} allocations (< ${bound})`)
            releasedAt.delete(id)
          }
          held.push(id)
        } else {
          const id = held.splice(op % held.length, 1)[0]
          t.release(id)
          releasedAt.set(id, allocs)
        }
        for (const [id] of releasedAt) assert.is(view.orIfLive(id, F_REQ_CLOSE), -1)
      }
    },
  ), { numRuns: 300 })
})

test('a full table answers -1, and a release makes room again', () => {
  const { sab, layout } = setup(1, 3)
  const t = new SlotTable(sab, layout, 0)
  const ids = [t.alloc(0, 1), t.alloc(0, 1), t.alloc(0, 1)]
  assert.ok(ids.every((id) => id >= 0))
  assert.is(new Set(ids.map(idSlot)).size, 3)
  assert.is(t.alloc(0, 1), -1, 'maxSocketsPerShard in use: full (the quarantine is not capacity)')
  assert.is(t.inUse, 3)
  t.release(ids[1])
  const again = t.alloc(0, 1)
  assert.ok(again >= 0)
  assert.is(t.inUse, 3)
  assert.is(t.alloc(0, 1), -1)
})

test('resetAll (shard restart, R1): every old id is stale, locks and request summaries are cleared', () => {
  const { sab, layout, view, i32 } = setup(2, 40)
  const t = new SlotTable(sab, layout, 1)
  const ids = Array.from({ length: 40 }, () => t.alloc(F_SERVER, ST_ESTABLISHED))
  i32[t.lockIdx(ids[5])] = 7 // a lock the dead thread held
  view.markRequest(ids[33])
  t.resetAll()
  for (const id of ids) assert.not.ok(view.live(id))
  assert.is(i32[t.lockIdx(ids[5])], 0)
  assert.equal(t.takeRequests([]), [])
  assert.is(i32[layout.slotBase(1, 5) + S_LOCK], 0)
})

test('property: encodeId / idShard / idSlot / idGen round-trip; ids are safe integers; gen 0 is not a socket id', () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: MAX_SHARDS }), fc.integer({ min: 0, max: MAX_SLOTS - 1 }), fc.integer({ min: 0, max: GEN_MAX }),
    (shard, slot, gen) => {
      const id = encodeId(shard, slot, gen)
      assert.ok(Number.isSafeInteger(id))
      assert.is(idShard(id), shard)
      assert.is(idSlot(id), slot)
      assert.is(idGen(id), gen)
      assert.is(isSocketId(id), gen >= 1)
    },
  ), { numRuns: 2000 })
  // distinct triples give distinct ids (checked on the extremes and random pairs)
  fc.assert(fc.property(
    fc.tuple(fc.integer({ min: 0, max: MAX_SHARDS }), fc.integer({ min: 0, max: MAX_SLOTS - 1 }), fc.integer({ min: 1, max: GEN_MAX })),
    fc.tuple(fc.integer({ min: 0, max: MAX_SHARDS }), fc.integer({ min: 0, max: MAX_SLOTS - 1 }), fc.integer({ min: 1, max: GEN_MAX })),
    (a, b) => (a.join() === b.join()) === (encodeId(...a) === encodeId(...b)),
  ), { numRuns: 2000 })
  for (const bad of [-1, 1.5, NaN, '1', null, undefined, 2 ** 53, 5]) assert.not.ok(isSocketId(bad), String(bad))
})

test('property: wellFormed accepts exactly the ids whose shard and slot exist in this layout', () => {
  const { view, layout } = setup(3, 100)
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 1, max: GEN_MAX }),
    (shard, slot, gen) => view.wellFormed(encodeId(shard, slot, gen)) === (shard < layout.shards && slot < layout.slotTableSize),
  ))
})

test('property: slots marked by foreign threads are taken by the owner exactly once (Q1 summary bitmap)', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 200 }), fc.array(fc.nat(), { maxLength: 60 }), (size, picks) => {
    const { sab, layout, view } = setup(2, size)
    const t = new SlotTable(sab, layout, 1)
    const ids = Array.from({ length: size }, () => t.alloc(0, ST_ESTABLISHED))
    const marked = new Set(picks.map((p) => p % size))
    for (const s of marked) view.markRequest(ids.find((id) => idSlot(id) === s)!)
    const other = new SlotTable(sab, layout, 0)
    assert.equal(other.takeRequests([]), [], 'shard 0 saw nothing')
    const got = t.takeRequests([]).sort((a, b) => a - b)
    assert.equal(got, [...marked].sort((a, b) => a - b))
    assert.equal(t.takeRequests([]), [], 'taken once')
  }), { numRuns: 300 })
})

test('across threads: a foreign hammer on a slot the owner frees and reuses 20k times never touches a later incarnation', async () => {
  const { sab, layout, view } = setup(2, 1)
  // One slot, no quarantine: every allocation reuses slot 0, the one the foreign thread hammers
  // (this is about the CAS, not about the free list spreading reuse).
  const t = new SlotTable(sab, layout, 1, { size: 1, quarantine: 0 })
  const scratch = new SharedArrayBuffer(64)
  const pub = new Int32Array(scratch, 0, 4)
  const w = new TestWorker('slot-worker.ts', { sab, scratch, shard: 1, slot: 0 }, 'slot hammer')
  try {
    await w.next('ready')
    const CYCLES = 20_000 // < GEN_MAX: generations never repeat, so any stale success is a real bug
    let leaked = 0, taken = 0
    for (let i = 0; i < CYCLES; i++) {
      const id = t.alloc(F_SERVER, ST_ESTABLISHED)
      if (t.flags(id) !== (F_SERVER | F_IN_USE)) leaked++
      const g = idGen(id)
      Atomics.store(pub, 0, g) // publish the id to the foreign thread
      for (let k = 0; k < 5000 && Atomics.load(pub, 1) < g; k++) { /* let the foreign thread see it */ }
      if (t.takeFlags(id, F_REQ_CLOSE)) taken++
      t.release(id)
      if (genOf(view.word(id)) === g) leaked++
    }
    Atomics.store(pub, 2, 1)
    const r = await w.next<{ type: string; staleAccepted: number; staleLive: number; currentAccepted: number; currentRefused: number }>('done')
    assert.is(r.staleAccepted, 0, 'a previous incarnation accepted a request bit')
    assert.is(r.staleLive, 0)
    assert.is(leaked, 0)
    assert.ok(r.currentAccepted > 0 && taken > 0, `the foreign thread really raced the owner (accepted ${r.currentAccepted}, owner took ${taken})`)
    assert.ok(taken <= r.currentAccepted)
  } finally {
    await terminateAll([w])
  }
})

test.run()
