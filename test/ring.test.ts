// The SPSC ring and its doorbell (src/ss/ring.ts): FIFO with no loss or duplicate across real
// threads through wraps and full rings (S2: full is refused, never a block or a drop),
// fragments published whole or not at all, D1's drain budget, and no lost wake-up.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import fc from 'fast-check'
import { Layout } from '../src/ss/layout.ts'
import { Doorbell, Ring, recordBytes } from '../src/ss/ring.ts'
import { TestWorker, terminateAll } from './thread-helpers.ts'

/** Producer and consumer views of one ring (0 -> 1) in one thread, optionally starting at index `start`. */
function pair(ringBytes = 1024, start = 0) {
  const layout = new Layout({ shards: 1, slotsPerShard: 1, ringBytes })
  const sab = layout.create()
  const off = layout.ringOffset(0, 1)
  const i32 = new Int32Array(sab)
  i32[off >> 2] = start | 0 // head
  i32[(off + 64) >> 2] = start | 0 // tail
  return { layout, sab, p: Ring.of(sab, layout, 0, 1), c: Ring.of(sab, layout, 0, 1) }
}

function body(id: number, len: number): Uint8Array {
  const b = new Uint8Array(len)
  for (let i = 0; i < len; i++) b[i] = (id * 7 + i * 13) & 0xff
  return b
}

function drainAll(c: Ring, budget = 1 << 30, more?: (rec: Uint8Array) => boolean): Uint8Array[] {
  const out: Uint8Array[] = []
  c.drain(budget, (off, len) => {
    const rec = c.u8.slice(off, off + len)
    out.push(rec)
    return more?.(rec)
  })
  return out
}

// ---------------- one thread ----------------

test('fragments: several reserves become visible together at commit, in order', () => {
  const { p, c } = pair()
  const parts = [body(1, 10), body(2, 0), body(3, 100)]
  for (const b of parts) {
    const at = p.reserve(b.length)
    assert.ok(at >= 0)
    p.u8.set(b, at)
  }
  assert.is(c.drain(100, () => {}), 0, 'nothing visible before commit')
  assert.ok(c.isEmpty())
  p.commit()
  assert.equal(drainAll(c), parts)
  assert.ok(c.isEmpty())
})

test('abort forgets uncommitted reserves; the next commit publishes only what followed', () => {
  const { p, c } = pair()
  assert.ok(p.tryPush(body(1, 20)))
  const tail = c.publishedTail()
  for (let i = 0; i < 3; i++) p.u8.set(body(100 + i, 40), p.reserve(40))
  p.abort()
  assert.is(c.publishedTail(), tail, 'abort publishes nothing')
  p.u8.set(body(2, 30), p.reserve(30))
  p.commit()
  assert.equal(drainAll(c), [body(1, 20), body(2, 30)])
})

test('a message that does not fit whole is aborted and leaves the ring as it was', () => {
  const { p, c } = pair(1024)
  let reserved = 0
  for (let i = 0; i < 10; i++) { // 10 × 200 B > 1 KiB: it must run out part way
    const at = p.reserve(200)
    if (at < 0) break
    reserved++
  }
  assert.ok(reserved > 0 && reserved < 10)
  p.abort()
  assert.ok(c.isEmpty())
  assert.is(p.freeBytes(), 1024)
  assert.ok(p.tryPush(body(9, p.maxBody)), 'the whole ring is usable again')
  assert.equal(drainAll(c), [body(9, p.maxBody)])
})

test('a body larger than maxBody is refused (-1) and nothing is published', () => {
  const { p, c } = pair(1024)
  assert.is(p.maxBody, 1024 / 2 - 4)
  const tail = c.publishedTail()
  assert.is(p.reserve(p.maxBody + 1), -1)
  assert.is(p.reserve(1 << 20), -1)
  assert.is(p.reserve(-1), -1)
  assert.not.ok(p.tryPush(new Uint8Array(p.maxBody + 1)))
  p.commit()
  assert.is(c.publishedTail(), tail)
  assert.is(c.drain(10, () => {}), 0)
})

test('maxBody fits an empty ring at every start position (the wrap skip never makes it unfittable)', () => {
  const cap = 1024
  for (let start = 0; start < cap; start += 8) {
    const { p, c } = pair(cap, start)
    assert.ok(p.tryPush(body(start, p.maxBody)), `start ${start}`)
    assert.equal(drainAll(c), [body(start, p.maxBody)])
    assert.ok(p.tryPush(body(start + 1, p.maxBody)), `second at start ${start}`)
    assert.equal(drainAll(c), [body(start + 1, p.maxBody)])
  }
})

test('drain stops at its budget, except that it finishes a fragmented message (D1)', () => {
  const { p, c } = pair()
  // message A = 3 fragments (first byte 1 = "continues"), then 2 single records
  const recs = [[1, 1], [1, 2], [0, 3], [0, 4], [0, 5]].map(([more, id]) => Uint8Array.of(more, id))
  for (const r of recs) p.u8.set(r, p.reserve(r.length))
  p.commit()
  const got: number[] = []
  const n = c.drain(1, (off) => { got.push(c.u8[off + 1]); return c.u8[off] === 1 })
  assert.is(n, 3, 'budget 1, but the message spans 3 records')
  assert.equal(got, [1, 2, 3])
  assert.is(c.drain(1, (off) => { got.push(c.u8[off + 1]) }), 1)
  assert.is(c.drain(5, (off) => { got.push(c.u8[off + 1]) }), 1)
  assert.equal(got, [1, 2, 3, 4, 5])
})

test('model: random push / multi-reserve (commit or abort) / drain sequences match a FIFO array model, across u32 index wrap', () => {
  const CAP = 1024
  const op = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('push' as const), len: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 530 })) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('multi' as const), lens: fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 4 }), commit: fc.boolean() }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('drain' as const), budget: fc.integer({ min: 1, max: 8 }) }) },
  )
  // start: 0, just below 2^32 (indices wrap during the run), or anywhere (8-aligned like records)
  const start = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 64 }).map((k) => 2 ** 32 - 8 * k), fc.nat({ max: 2 ** 29 - 1 }).map((k) => k * 8))
  fc.assert(fc.property(start, fc.array(op, { maxLength: 150 }), (st, ops) => {
    const { p, c } = pair(CAP, st)
    const model: { bytes: Uint8Array; more: boolean }[] = [] // published, not yet consumed
    let nextId = 0
    let tail = st >>> 0, head = st >>> 0 // the spec's own view of the indices
    // The spec of room: a record fits iff free space covers it, plus the bytes skipped at the end
    // when it cannot fit before the end of the data area. Nothing else may refuse it.
    const fits = (len: number, t: number) => {
      if (len > p.maxBody) return -1
      const need = recordBytes(len)
      const toEnd = CAP - (t & (CAP - 1))
      const skip = toEnd < need ? toEnd : 0
      return ((t - head) >>> 0) + skip + need <= CAP ? ((t + skip + need) >>> 0) : -1
    }
    for (const o of ops) {
      if (o.kind === 'push') {
        const b = body(nextId++, o.len)
        const nt = fits(o.len, tail)
        assert.is(p.tryPush(b), nt >= 0, `push ${o.len} with ${((tail - head) >>> 0)} used`)
        if (nt >= 0) { tail = nt; model.push({ bytes: b, more: false }) }
      } else if (o.kind === 'multi') {
        const staged: { bytes: Uint8Array; more: boolean }[] = []
        let t = tail, ok = true
        for (const len of o.lens) {
          const nt = fits(len, t)
          const at = p.reserve(len)
          assert.is(at >= 0, nt >= 0)
          if (at < 0) { ok = false; break }
          t = nt
          const b = body(nextId++, len)
          p.u8.set(b, at)
          staged.push({ bytes: b, more: true })
        }
        if (ok && o.commit) {
          staged[staged.length - 1].more = false
          p.commit()
          tail = t
          model.push(...staged)
        } else {
          p.abort()
        }
        assert.is(c.publishedTail(), tail)
      } else {
        // The consumer learns "this message continues" from the record; here the model says it.
        const flags = model.map((m) => m.more)
        let n = 0, more = false
        while (n < model.length && (n < o.budget || more)) { more = model[n].more; n++ }
        const want = model.splice(0, n).map((m) => m.bytes)
        let k = 0
        assert.equal(drainAll(c, o.budget, () => flags[k++] === true), want)
        head = c.consumed()
      }
    }
    // whatever is left is still there, in order
    assert.equal(drainAll(c), model.map((m) => m.bytes))
    assert.ok(c.isEmpty())
  }), { numRuns: 400 })
})

// ---------------- real threads ----------------

test('1M records of random sizes (1 B..6 KiB) cross two workers through a 64 KiB ring: in order, checksummed, none lost or doubled; full is hit and retried', async () => {
  const N = 1_000_000
  const MAX_LEN = 6144
  const seed = (Math.random() * 2 ** 32) >>> 0
  const layout = new Layout({ shards: 2, slotsPerShard: 1, ringBytes: 1 << 16 })
  const sab = layout.create()
  const common = { sab, n: N, maxLen: MAX_LEN, seed }
  const consumer = new TestWorker('ring-worker.ts', { ...common, role: 'stream-consumer', budget: 256 }, 'stream consumer')
  const producer = new TestWorker('ring-worker.ts', { ...common, role: 'stream-producer' }, 'stream producer')
  try {
    const p = await producer.next<{ type: string; fullRecords: number; fullRetries: number; bytes: number; timedOut: boolean; stalledAt: number }>('done', 120_000)
    assert.is(p.stalledAt, -1, `the ring stayed full for 10 s at record ${p.stalledAt}: the consumer stopped draining (seed ${seed})`)
    assert.not.ok(p.timedOut, `producer gave up (seed ${seed})`)
    await consumer.next('done', 10_000) // everything is published; the consumer only has to finish
    consumer.post({ type: 'check' })
    const c = await consumer.next<{ type: string; received: number; errors: number; firstError: string; tiny: number; big: number; empty: boolean }>('check')
    assert.is(c.errors, 0, `seed ${seed}: ${c.firstError}`)
    assert.is(c.received, N)
    assert.ok(c.empty, 'nothing left in the ring')
    assert.ok(c.tiny > 0 && c.big > 0, `sizes covered both ends (tiny ${c.tiny}, >4 KiB ${c.big})`)
    assert.ok(p.fullRecords > 0, `the producer must have met a full ring (got ${p.fullRecords})`)
    assert.ok(p.bytes > 64 * (1 << 16), 'the ring wrapped many times')
    console.log(`  stream: ${N} records, ${(p.bytes / 2 ** 20).toFixed(0)} MiB, full met by ${p.fullRecords} records (${p.fullRetries} retries), tiny ${c.tiny}, >4 KiB ${c.big}, seed ${seed}`)
    consumer.post({ type: 'stop' })
  } finally {
    await terminateAll([producer, consumer])
  }
})

test('doorbell: 3000 bursts with idle gaps are all delivered (no lost wake-up); an idle consumer burns no CPU; it wakes again after idling', async () => {
  const layout = new Layout({ shards: 2, slotsPerShard: 1, ringBytes: 1 << 16 })
  const sab = layout.create()
  const scratch = new SharedArrayBuffer(64)
  const seed = (Math.random() * 2 ** 32) >>> 0
  const consumer = new TestWorker('ring-worker.ts', { role: 'burst-consumer', sab, scratch, budget: 8 }, 'burst consumer')
  const producer = new TestWorker('ring-worker.ts', { role: 'burst-producer', sab, scratch, bursts: 3000, seed }, 'burst producer')
  try {
    const p = await producer.next<{ type: string; sent: number; stuckAt: number; gapsMs: number; maxAckWaitMs: number }>('done', 120_000)
    assert.is(p.stuckAt, -1, `burst ${p.stuckAt} never acknowledged: a lost wake-up (seed ${seed})`)
    consumer.post({ type: 'check' })
    const c = await consumer.next<{ type: string; received: number; errors: number; firstError: string; empty: boolean }>('check')
    assert.is(c.errors, 0, c.firstError)
    assert.is(c.received, p.sent)
    assert.ok(c.empty)
    await producer.terminate()

    // Idle: nobody produces for 500 ms. A consumer that polled would show up here.
    consumer.post({ type: 'measure-idle', ms: 500 })
    const idle = await consumer.next<{ type: string; wallMs: number; cpuMs: number; elu: number; turns: number }>('idle')
    const share = idle.cpuMs / idle.wallMs
    assert.ok(share < 0.2, `idle consumer CPU ${idle.cpuMs.toFixed(1)} ms over ${idle.wallMs.toFixed(0)} ms (turns ${idle.turns})`)
    assert.ok(idle.elu < 0.2, `idle consumer event-loop utilization ${idle.elu.toFixed(3)}`)
    console.log(`  bursts: ${p.sent} records in 3000 bursts, gaps ${p.gapsMs.toFixed(0)} ms, slowest ack ${p.maxAckWaitMs.toFixed(2)} ms; idle 500 ms: CPU ${idle.cpuMs.toFixed(2)} ms, ELU ${idle.elu.toFixed(4)}, turns ${idle.turns}`)

    // After the idle period the bell still works, and another producer (main, tid 0) is heard.
    const ring = Ring.of(sab, layout, 0, 2)
    const at = ring.reserve(4)
    assert.ok(at >= 0)
    ring.dv.setUint32(at, 0xc0ffee, true)
    ring.commit()
    new Doorbell(sab, layout, 2).ring()
    const ping = await consumer.next<{ type: string; value: number; len: number }>('ping', 10_000)
    assert.is(ping.value, 0xc0ffee)
    assert.is(ping.len, 4)
    consumer.post({ type: 'stop' })
  } finally {
    await terminateAll([producer, consumer])
  }
})

test.run()
