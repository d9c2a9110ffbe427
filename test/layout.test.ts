// The SharedArrayBuffer map (src/ss/layout.ts): bad options are refused at the door with a
// typed error naming the option, a buffer that is not a layout is refused as bad memory, and
// every region is in bounds, 64-byte aligned and disjoint, identically computed in every thread.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import fc from 'fast-check'
import {
  Layout, LINE, MAX_SHARDS, MAX_SLOTS, SLOT_WORDS, T_ALIVE, T_SEQ, H_SHARDS, H_VERSION, COUNTER_NAMES, defaultRingBytes,
} from '../src/ss/layout.ts'
import { SyncsockError, type ErrorCode } from '../src/ss/errors.ts'
import { readCounters } from '../src/ss/counters.ts'
import { TestWorker, terminateAll } from './thread-helpers.ts'

function throwsCode(fn: () => unknown, code: ErrorCode, mention?: string) {
  let err: unknown
  try { fn() } catch (e) { err = e }
  assert.ok(err !== undefined, `expected ${code}, nothing was thrown`)
  assert.ok(err instanceof SyncsockError, `expected a SyncsockError, got ${String(err)}`)
  assert.ok(SyncsockError.is(err, code), `expected ${code}, got ${(err as SyncsockError).code}: ${(err as Error).message}`)
  if (mention) assert.match((err as Error).message, mention)
}

test('bad options are ERR_SS_BAD_OPTION naming the option: shards 0, ringBytes not a power of two, more slots than an id can encode', () => {
  const ok = { shards: 2, slotsPerShard: 16, ringBytes: 4096 }
  throwsCode(() => new Layout({ ...ok, shards: 0 }), 'ERR_SS_BAD_OPTION', 'shards')
  throwsCode(() => new Layout({ ...ok, shards: -1 }), 'ERR_SS_BAD_OPTION', 'shards')
  throwsCode(() => new Layout({ ...ok, shards: 1.5 }), 'ERR_SS_BAD_OPTION', 'shards')
  throwsCode(() => new Layout({ ...ok, shards: NaN }), 'ERR_SS_BAD_OPTION', 'shards')
  throwsCode(() => new Layout({ ...ok, shards: MAX_SHARDS + 1 }), 'ERR_SS_BAD_OPTION', 'shards')
  throwsCode(() => new Layout({ ...ok, shards: '2' as unknown as number }), 'ERR_SS_BAD_OPTION', 'shards')
  throwsCode(() => new Layout({ ...ok, ringBytes: 3000 }), 'ERR_SS_BAD_OPTION', 'ringBytes')
  throwsCode(() => new Layout({ ...ok, ringBytes: 4097 }), 'ERR_SS_BAD_OPTION', 'ringBytes')
  throwsCode(() => new Layout({ ...ok, ringBytes: 512 }), 'ERR_SS_BAD_OPTION', 'ringBytes') // a power of two, but too small
  throwsCode(() => new Layout({ ...ok, ringBytes: 2 ** 31 }), 'ERR_SS_BAD_OPTION', 'ringBytes')
  throwsCode(() => new Layout({ ...ok, ringBytes: Infinity }), 'ERR_SS_BAD_OPTION', 'ringBytes')
  throwsCode(() => new Layout({ ...ok, slotsPerShard: MAX_SLOTS + 1 }), 'ERR_SS_BAD_OPTION', 'PerShard')
  throwsCode(() => new Layout({ ...ok, slotsPerShard: 0 }), 'ERR_SS_BAD_OPTION', 'PerShard')
  throwsCode(() => new Layout({} as unknown as { shards: number; slotsPerShard: number }), 'ERR_SS_BAD_OPTION')
  // the limits themselves are accepted (computing the map allocates nothing)
  assert.is(new Layout({ shards: MAX_SHARDS, slotsPerShard: MAX_SLOTS, ringBytes: 1024 }).threads, MAX_SHARDS + 1)
  assert.is(new Layout({ shards: 1, slotsPerShard: 1 }).ringBytes, defaultRingBytes(1))
})

test('Layout.from refuses what is not a layout with ERR_SS_BAD_MEMORY (never a crash)', () => {
  const good = new Layout({ shards: 2, slotsPerShard: 8, ringBytes: 1024 })
  throwsCode(() => Layout.from(new SharedArrayBuffer(16)), 'ERR_SS_BAD_MEMORY') // too small for a header
  throwsCode(() => Layout.from(new SharedArrayBuffer(good.byteLength)), 'ERR_SS_BAD_MEMORY', 'magic') // zeros
  throwsCode(() => Layout.from(new ArrayBuffer(4096) as unknown as SharedArrayBuffer), 'ERR_SS_BAD_MEMORY')
  for (const v of [null, undefined, {}, 42, 'sab']) throwsCode(() => Layout.from(v as unknown as SharedArrayBuffer), 'ERR_SS_BAD_MEMORY')
  // another version
  const other = good.create()
  new Int32Array(other)[H_VERSION] = 99
  throwsCode(() => Layout.from(other), 'ERR_SS_BAD_MEMORY', 'version')
  // right header, wrong size: a buffer built for another layout
  const small = new Layout({ shards: 1, slotsPerShard: 8, ringBytes: 1024 })
  const big = new SharedArrayBuffer(small.byteLength + 64)
  new Int32Array(big).set(new Int32Array(small.create(), 0, 16))
  throwsCode(() => Layout.from(big), 'ERR_SS_BAD_MEMORY', 'size')
  // right magic and version, impossible sizes in the header: bad memory, not a bad option
  const corrupt = good.create()
  new Int32Array(corrupt)[H_SHARDS] = 0
  throwsCode(() => Layout.from(corrupt), 'ERR_SS_BAD_MEMORY')
  // and the good one maps back to the same layout
  const back = Layout.from(good.create())
  assert.equal([back.shards, back.slotsPerShard, back.ringBytes, back.byteLength], [2, 8, 1024, good.byteLength])
  throwsCode(() => good.ringOffset(1, 1), 'ERR_SS_BAD_OPTION')
})

test('property: every region is in bounds, 64-byte aligned and disjoint; head and tail on separate lines', () => {
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 10, max: 16 }),
    (shards, slotsPerShard, ringLog) => {
      const l = new Layout({ shards, slotsPerShard, ringBytes: 2 ** ringLog })
      const regions: [string, number, number][] = [['header', 0, LINE]] // [name, start byte, end byte)
      for (let t = 0; t < l.threads; t++) {
        const b = l.threadBase(t) * 4
        assert.ok(T_SEQ * 4 < LINE && T_ALIVE === 0)
        regions.push([`thread ${t}`, b, b + LINE])
        const c = l.countersOffset(t)
        regions.push([`counters ${t}`, c, c + COUNTER_NAMES.length * 8])
      }
      for (let s = 0; s < shards; s++) {
        const first = l.slotBase(s, 0) * 4
        const summaryEnd = (l.summaryBase(s) + l.summaryWords) * 4
        assert.is(l.summaryBase(s), l.slotBase(s, l.slotTableSize - 1) + SLOT_WORDS)
        regions.push([`slots ${s}`, first, summaryEnd])
      }
      for (let p = 0; p < l.threads; p++) {
        for (let c = 0; c < l.threads; c++) {
          if (p === c) continue
          const r = l.ringOffset(p, c)
          regions.push([`ring ${p}->${c} head`, r, r + 4], [`ring ${p}->${c} tail`, r + 64, r + 68], [`ring ${p}->${c} data`, r + 128, r + 128 + l.ringBytes])
        }
      }
      for (const [name, a, b] of regions) {
        assert.ok(a >= 0 && b <= l.byteLength, `${name} out of bounds`)
        if (!name.endsWith('tail') && !name.endsWith('data')) assert.is(a % LINE, 0, `${name} not line-aligned`)
      }
      const sorted = regions.slice().sort((x, y) => x[1] - y[1])
      for (let i = 1; i < sorted.length; i++) {
        assert.ok(sorted[i][1] >= sorted[i - 1][2], `${sorted[i - 1][0]} overlaps ${sorted[i][0]}`)
      }
      // head and tail words never share a cache line; counter blocks start on their own line
      for (const [name, a] of regions) if (name.endsWith('tail')) assert.is(a % LINE, 0)
    },
  ), { numRuns: 200 })
})

test('defaultRingBytes is a power of two in [16 KiB, 512 KiB] and shrinks as shards grow', () => {
  let prev = Infinity
  for (let s = 1; s <= MAX_SHARDS; s++) {
    const r = defaultRingBytes(s)
    assert.ok(r >= 1 << 14 && r <= 1 << 19 && (r & (r - 1)) === 0, `shards ${s}: ${r}`)
    assert.ok(r <= prev)
    prev = r
  }
})

test('a worker maps the same buffer to the same offsets and writes land where main reads them', async () => {
  const l = new Layout({ shards: 3, slotsPerShard: 100, ringBytes: 2048 })
  const sab = l.create()
  const w = new TestWorker('layout-worker.ts', { sab, junk: new SharedArrayBuffer(4096), tid: 2 }, 'layout worker')
  try {
    const m = await w.next<{ type: string; offsets: Record<string, unknown>; junkCode: string }>('offsets')
    assert.equal(m.offsets, {
      byteLength: l.byteLength, shards: 3, slotsPerShard: 100, ringBytes: 2048,
      threadBase: [0, 1, 2, 3].map((t) => l.threadBase(t)),
      slotBase: [0, 1, 2].map((s) => l.slotBase(s, 99)),
      ring: l.ringOffset(1, 0),
      counters: l.countersOffset(2),
    })
    assert.is(Atomics.load(new Int32Array(sab), l.threadBase(2) + T_ALIVE), 1)
    assert.is(readCounters(sab, l, 2).accepted, 5)
    assert.is(readCounters(sab, l, 1).accepted, 0)
    assert.is(m.junkCode, 'ERR_SS_BAD_MEMORY')
  } finally {
    await terminateAll([w])
  }
})

test.run()
