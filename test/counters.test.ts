// Per-thread counter blocks (src/ss/counters.ts): one writer each, read by any thread through
// the seqlock without tearing; summing adds events and takes the max of delay gauges.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { C, COUNTER_NAMES, Layout, T_SEQ } from '../src/ss/layout.ts'
import { CounterBlock, readCounters, sumCounters } from '../src/ss/counters.ts'
import { TestWorker, terminateAll } from './thread-helpers.ts'

test('a reader on another thread sees a writer\'s counters grow monotonically, as whole numbers, to the exact total', async () => {
  const l = new Layout({ shards: 1, slotsPerShard: 1, ringBytes: 1024 })
  const sab = l.create()
  const ROUNDS = 200_000
  const w = new TestWorker('counter-worker.ts', { sab, tid: 1, rounds: ROUNDS }, 'counter writer')
  try {
    await w.next('ready')
    const done = w.next('done', 60_000)
    let finished = false
    void done.then(() => { finished = true }, () => { finished = true })
    let prevIn = 0, reads = 0
    const deadline = Date.now() + 60_000
    while (!finished && Date.now() < deadline) {
      const s = readCounters(sab, l, 1)
      reads++
      assert.ok(Number.isInteger(s.bytesIn) && s.bytesIn >= prevIn, `bytesIn went ${prevIn} -> ${s.bytesIn}`)
      // a snapshot is taken between whole add() calls: bytesOut is 2×bytesIn or 2×bytesIn − 2 (one add behind)
      assert.ok(s.bytesOut <= 2 * s.bytesIn && s.bytesOut >= 2 * s.bytesIn - 2, `bytesIn ${s.bytesIn}, bytesOut ${s.bytesOut}`)
      prevIn = s.bytesIn
      await new Promise((r) => setImmediate(r))
    }
    await done
    const s = readCounters(sab, l, 1)
    assert.is(s.bytesIn, ROUNDS)
    assert.is(s.bytesOut, 2 * ROUNDS)
    assert.is(s.loopDelayMaxMs, 999)
    assert.ok(reads > 1)
  } finally {
    await terminateAll([w])
  }
})

test('a writer that died mid-add (sequence word left odd) does not make its counters unreadable', () => {
  const l = new Layout({ shards: 1, slotsPerShard: 1, ringBytes: 1024 })
  const sab = l.create()
  new CounterBlock(sab, l, 1).add(C.accepted, 3)
  Atomics.add(new Int32Array(sab), l.threadBase(1) + T_SEQ, 1) // odd forever
  const s = readCounters(sab, l, 1)
  assert.is(s.accepted, 3)
  for (const n of COUNTER_NAMES) assert.type(s[n], 'number', n)
})

test('sumCounters adds events and gauges, and takes the max of loop delay and latency maxima', () => {
  const l = new Layout({ shards: 2, slotsPerShard: 1, ringBytes: 1024 })
  const sab = l.create()
  const a = new CounterBlock(sab, l, 1), b = new CounterBlock(sab, l, 2)
  a.add(C.accepted, 2); b.add(C.accepted, 5)
  a.set(C.active, 3); b.set(C.active, 4)
  a.max(C.loopDelayP99Ms, 7); b.max(C.loopDelayP99Ms, 3); b.max(C.loopDelayP99Ms, 1)
  a.max(C.reconnectLatencyMaxMs, 10); b.max(C.reconnectLatencyMaxMs, 12)
  const s = sumCounters([readCounters(sab, l, 1), readCounters(sab, l, 2)])
  assert.is(s.accepted, 7)
  assert.is(s.active, 7)
  assert.is(s.loopDelayP99Ms, 7)
  assert.is(s.reconnectLatencyMaxMs, 12)
  a.reset()
  assert.is(readCounters(sab, l, 1).accepted, 0)
  assert.is(readCounters(sab, l, 2).accepted, 5)
})

test('reset after a writer died mid-update (SEQ left odd) leaves SEQ even: readers are not stuck behind a dead write (bug 8)', () => {
  const l = new Layout({ shards: 1, slotsPerShard: 1, ringBytes: 1024 })
  const sab = l.create()
  const i32 = new Int32Array(sab)
  const seq = l.threadBase(1) + T_SEQ
  for (const dead of [7, 0x7ffffffd, -3]) {
    Atomics.store(i32, seq, dead) // the old writer died between its two increments
    const c = new CounterBlock(sab, l, 1)
    c.reset()
    assert.is(Atomics.load(i32, seq) & 1, 0, `after reset from ${dead}`)
    c.add(C.bytesIn, 5)
    assert.is(Atomics.load(i32, seq) & 1, 0, 'and after the next add')
    assert.is(readCounters(sab, l, 1).bytesIn, 5)
    Atomics.store(i32, seq, dead)
    c.zero([C.active])
    assert.is(Atomics.load(i32, seq) & 1, 0, `after zero() from ${dead}`)
  }
})

test.run()
