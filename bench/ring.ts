// Ring throughput between two worker threads: our SPSC ring + doorbell + Inbox (the path a
// foreign send takes to its owner shard) against MessagePort.postMessage of the same payloads.
//
//   node_modules/.bin/node bench/ring.ts [--quick] [--reps N]
//
// Both sides move the same records, producer worker -> consumer worker, and in both the
// consumer touches every record: it checks the sequence number in the first 4 bytes and the
// length, and reads the last byte. Ours: reserve, copy, commit and ring the doorbell per record
// (no batching by the producer), the consumer drains with the engine's default budget (1024)
// inside its event loop. postMessage: one Uint8Array of exactly the record size per message
// (structured clone copies it), over a MessageChannel between the two workers, with a window of
// in-flight messages the size of our ring (512 KiB, the default for 2 shards) so neither side
// queues without bound; the consumer acks every quarter window.
// Timed from opening the start gate (both workers ready) to the consumer's "done".
import { isMainThread, parentPort, workerData, MessageChannel, type MessagePort } from 'node:worker_threads'
import { Layout, defaultRingBytes } from '../src/ss/layout.ts'
import { Doorbell, Inbox, Ring } from '../src/ss/ring.ts'
import { BenchWorker, fmt, machineLine, median, parseBenchArgs, ratio, startGate, table, waitGate, writeResults } from './lib.ts'

const SELF = new URL(import.meta.url)
const SHARDS = 2 // tids: 0 main, 1 producer, 2 consumer
const RING_BYTES = defaultRingBytes(SHARDS)
const BUDGET = 1024

type Role = 'ring-producer' | 'ring-consumer' | 'port-producer' | 'port-consumer'
interface Data { role: Role; n: number; size: number; sab?: SharedArrayBuffer; gate?: SharedArrayBuffer; port?: MessagePort; window?: number }

// ---------------------------------------------------------------- workers

function template(size: number): Uint8Array {
  const t = new Uint8Array(size) // its own buffer: a view on a bigger one would clone all of it
  for (let i = 0; i < size; i++) t[i] = (i * 131 + 7) & 0xff
  return t
}

function ringProducer(d: Data): void {
  const layout = Layout.from(d.sab!)
  const ring = Ring.of(d.sab!, layout, 1, 2)
  const bell = new Doorbell(d.sab!, layout, 2)
  const body = template(d.size).subarray(4)
  const nap = new Int32Array(new SharedArrayBuffer(4))
  parentPort!.postMessage({ type: 'ready' })
  waitGate(d.gate!)
  let full = 0
  for (let i = 0; i < d.n; i++) {
    let at = ring.reserve(d.size)
    while (at < 0) {
      if ((++full & 1023) === 0) Atomics.wait(nap, 0, 0, 0.02) // long full: nap briefly, yield the core
      at = ring.reserve(d.size)
    }
    ring.dv.setUint32(at, i, true)
    ring.u8.set(body, at + 4)
    ring.commit()
    bell.ring()
  }
  parentPort!.postMessage({ type: 'sent', full })
}

function ringConsumer(d: Data): void {
  const layout = Layout.from(d.sab!)
  const keep = setInterval(() => {}, 1 << 30) // waitAsync alone does not keep a worker alive
  let expected = 0, errors = 0, touch = 0
  const inbox = new Inbox(d.sab!, layout, 2, {
    budget: BUDGET,
    onRecord: (_p, off, len, ring) => {
      if (len !== d.size || ring.dv.getUint32(off, true) !== expected) errors++
      touch += ring.u8[off + len - 1]
      if (++expected === d.n) {
        parentPort!.postMessage({ type: 'done', errors, touch, turns: inbox.turns })
        inbox.stop()
        clearInterval(keep)
      }
    },
  })
  inbox.run()
  parentPort!.postMessage({ type: 'ready' })
}

async function portProducer(d: Data): Promise<void> {
  const port = d.port!
  const msg = template(d.size)
  const window = d.window!
  let acked = 0
  let wake: (() => void) | null = null
  port.on('message', (n: number) => { acked = n; const w = wake; wake = null; w?.() })
  parentPort!.postMessage({ type: 'ready' })
  waitGate(d.gate!)
  let sent = 0, stalls = 0
  while (sent < d.n) {
    while (sent < d.n && sent - acked < window) {
      msg[0] = sent & 0xff; msg[1] = (sent >>> 8) & 0xff; msg[2] = (sent >>> 16) & 0xff; msg[3] = sent >>> 24
      port.postMessage(msg)
      sent++
    }
    if (sent < d.n) { stalls++; await new Promise<void>((r) => { wake = r }) }
  }
  parentPort!.postMessage({ type: 'sent', stalls })
  port.close()
}

function portConsumer(d: Data): void {
  const port = d.port!
  const ackEvery = Math.max(1, d.window! >> 2)
  let expected = 0, errors = 0, touch = 0
  port.on('message', (u8: Uint8Array) => {
    const seq = (u8[0] | (u8[1] << 8) | (u8[2] << 16) | (u8[3] << 24)) >>> 0
    if (u8.length !== d.size || seq !== expected) errors++
    touch += u8[u8.length - 1]
    expected++
    if (expected % ackEvery === 0) port.postMessage(expected)
    if (expected === d.n) { parentPort!.postMessage({ type: 'done', errors, touch }); port.close() }
  })
  parentPort!.postMessage({ type: 'ready' })
}

// ---------------------------------------------------------------- main

interface Run { seconds: number; recPerSec: number; errors: number }

async function timed(producer: BenchWorker, consumer: BenchWorker, open: () => void, n: number): Promise<Run> {
  await Promise.all([producer.next('ready'), consumer.next('ready')])
  const t0 = performance.now()
  open()
  const done = await consumer.next<{ errors: number }>('done')
  const seconds = (performance.now() - t0) / 1000
  await producer.next('sent')
  if (done.errors) throw new Error(`consumer saw ${done.errors} bad records`)
  return { seconds, recPerSec: n / seconds, errors: done.errors }
}

async function runRing(size: number, n: number): Promise<Run> {
  const layout = new Layout({ shards: SHARDS, slotsPerShard: 1, ringBytes: RING_BYTES })
  const sab = layout.create()
  const gate = startGate()
  const consumer = new BenchWorker(SELF, { workerData: { role: 'ring-consumer', n, size, sab } satisfies Data })
  const producer = new BenchWorker(SELF, { workerData: { role: 'ring-producer', n, size, sab, gate: gate.sab } satisfies Data })
  try { return await timed(producer, consumer, gate.open, n) } finally { await Promise.all([producer.terminate(), consumer.terminate()]) }
}

async function runPort(size: number, n: number): Promise<Run> {
  const { port1, port2 } = new MessageChannel()
  const gate = startGate()
  const window = Math.max(64, RING_BYTES / size)
  const consumer = new BenchWorker(SELF, { workerData: { role: 'port-consumer', n, size, port: port2, window } satisfies Data, transferList: [port2] })
  const producer = new BenchWorker(SELF, { workerData: { role: 'port-producer', n, size, port: port1, window, gate: gate.sab } satisfies Data, transferList: [port1] })
  try { return await timed(producer, consumer, gate.open, n) } finally { await Promise.all([producer.terminate(), consumer.terminate()]) }
}

async function main(): Promise<void> {
  const args = parseBenchArgs()
  const reps = Number(args.flags.reps ?? (args.quick ? 1 : 5))
  // records per run: each run lasts roughly 0.3-2 s on a 2-vCPU EPYC; --quick runs are ~4x shorter
  const plan = [
    { size: 64, ours: args.quick ? 3_000_000 : 10_000_000, port: args.quick ? 300_000 : 1_000_000 },
    { size: 4096, ours: args.quick ? 500_000 : 2_000_000, port: args.quick ? 100_000 : 400_000 },
  ]
  console.log(`bench/ring.ts: SPSC ring + doorbell vs MessagePort.postMessage, worker -> worker${args.quick ? ' (--quick)' : ''}`)
  console.log(`machine: ${machineLine()}`)
  console.log(`ring ${RING_BYTES / 1024} KiB, drain budget ${BUDGET}, ${reps} rep(s) per cell, median shown; 1 MB = 10^6 B\n`)
  const rows: (string | number)[][] = []
  const results: Record<string, unknown>[] = []
  for (const p of plan) {
    const ours: Run[] = [], port: Run[] = []
    for (let r = 0; r < reps; r++) { // interleaved, so drift in machine load hits both sides alike
      ours.push(await runRing(p.size, p.ours))
      port.push(await runPort(p.size, p.port))
    }
    const o = median(ours.map((x) => x.recPerSec)), m = median(port.map((x) => x.recPerSec))
    rows.push([`${p.size} B`, fmt(o), fmt((o * p.size) / 1e6, 1), fmt(m), fmt((m * p.size) / 1e6, 1), ratio(o, m)])
    results.push({
      recordBytes: p.size, oursRecords: p.ours, postMessageRecords: p.port,
      oursRecPerSec: o, oursMBps: (o * p.size) / 1e6, postMessageRecPerSec: m, postMessageMBps: (m * p.size) / 1e6,
      ratio: o / m, oursRuns: ours.map((x) => x.recPerSec), postMessageRuns: port.map((x) => x.recPerSec),
    })
  }
  console.log(table(['record', 'ours rec/s', 'ours MB/s', 'postMessage rec/s', 'postMessage MB/s', 'ratio'], rows))
  const r64 = results[0].ratio as number
  console.log(`\ntarget: ours >= 10x postMessage at 64 B: ${r64 >= 10 ? 'met' : 'NOT met'} (${r64.toFixed(1)}x)`)
  const path = writeResults('ring', { ringBytes: RING_BYTES, drainBudget: BUDGET, reps, rows: results, target64: { want: 10, got: r64 } }, args)
  console.log(`results: ${path}`)
}

if (isMainThread) {
  await main()
} else {
  const d = workerData as Data
  try {
    if (d.role === 'ring-producer') ringProducer(d)
    else if (d.role === 'ring-consumer') ringConsumer(d)
    else if (d.role === 'port-producer') await portProducer(d)
    else portConsumer(d)
  } catch (e) {
    parentPort!.postMessage({ type: 'fatal', error: e instanceof Error ? e.stack : String(e) })
  }
}
