// The Kuma exchange (kuma-cp #5373, ../shared/seeds/kuma-5373-kds-send-deadlock.txt): two ends of
// one connection each write a large stream while reading. KDS deadlocked because both sides sat
// in a blocking Send while neither read. Here both ends write 64 MiB at once:
//   1. through `syncsock proxy` (CLI child process): the ends are a client and a backend in this
//      process; both start by NOT reading for a while (the worst case: the proxy must stop
//      reading each side once the other's queue is at its high-water mark, not buffer the
//      streams), then read; every byte arrives (sha256), and the proxy's memory stays bounded.
//   2. between two engine endpoints in one Engine (fixtures/kuma-hooks.ts): an accepted socket
//      and a one-shot outbound socket (ctx.open) of the same engine, each sending until 'high-water', resuming on
//      connectionWritable, reading all along; both complete and no queue passes its mark.
import * as assert from 'uvu/assert'
import { BroadcastChannel } from 'node:worker_threads'
import { Engine } from '../src/index.ts'
import {
  test, run, startProxy, startBackend, who, connect, xferClient, backendXfer, checkXfer, waitFor, sleep, procKb, mb, MiB,
} from './proxy-helpers.ts'

const BYTES = 64 * MiB
/**
 * V8 heap caps for the proxy's node (its shards' isolates take them too), as in proxy-soak:
 * garbage must then be collected rather than left to grow the heap, so RSS reflects what the
 * proxy holds. (Uncapped, the peak below varied 33–51 MB over runs; capped, ~30–35 MB.)
 */
const HEAP_CAP = ['--max-old-space-size=64', '--max-semi-space-size=2']

test('Kuma through the proxy: both ends write 64 MiB while not reading, then read: every byte, proxy memory bounded', async (scope) => {
  const a = await startBackend(scope, 'A')
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--backend', `127.0.0.1:${a.port}`], { nodeArgs: HEAP_CAP })
  assert.is((await who(scope, p.port)).name, 'A') // warm: a shard, an outbound socket, a backend path
  await sleep(300)
  const rss0 = procKb(p.pid, 'VmRSS')
  const PAUSE = 1500
  let clientRecv = 0
  const x = xferClient(scope, p.port, { id: 'kuma', up: BYTES, down: BYTES, pauseMs: PAUSE, timeoutMs: 90_000, onRecv: (n) => { clientRecv = n } })
  // while both ends write and neither reads, the proxy can hold at most its water marks' worth
  // (plus kernel socket buffers, which are not its RSS); it must not soak up the streams
  await sleep(PAUSE - 200)
  const rssPaused = procKb(p.pid, 'VmRSS')
  const inflightUp = a.xferIn, inflightDown = clientRecv
  const c = await x
  checkXfer(assert.is, 'kuma', c, await backendXfer([a], 'kuma'), BYTES, BYTES)
  const hwm = procKb(p.pid, 'VmHWM')
  console.log(`  [proxy-kuma] proxy RSS: ${mb(rss0)} MB before, ${mb(rssPaused)} MB with both ends paused (read so far: up ${inflightUp}, down ${inflightDown}), peak ${mb(hwm)} MB; 2×64 MiB crossed`)
  // Bounds (explained): a proxy that honours its water marks holds its high-water mark (256 KiB
  // as built; the engine's default is 1 MiB) plus a read chunk per direction; 32 MiB leaves room
  // for allocator and GC slack. One
  // that kept reading a side whose peer does not read would hold up to the whole 64 MiB stream of
  // each paused direction (128 MiB) by the end of the pause.
  assert.ok(rssPaused - rss0 < 32 * 1024, `RSS grew ${mb(rssPaused - rss0)} MB while both ends were paused (bound 32 MB)`)
  // Over the whole exchange the peak includes buffers already forwarded and not yet collected
  // (~30–35 MB measured): 80 MB is under what one whole direction (64 MiB) held on top of that
  // would cost, and well above the noise.
  assert.ok(hwm - rss0 < 80 * 1024, `peak RSS ${mb(hwm - rss0)} MB above the idle proxy (bound 80 MB)`)
}, 120_000)

test('Kuma between two engine endpoints: accepted socket and ctx.open socket each write 64 MiB while reading', async () => {
  const channel = `ss-kuma-${process.pid}`
  process.env.SS_TEST_CHANNEL = channel
  const events: Record<string, unknown>[] = []
  const bc = new BroadcastChannel(channel)
  bc.onmessage = (m: unknown) => { events.push((m as { data: Record<string, unknown> }).data) }
  const HIGH = 256 << 10, CHUNK = 64 << 10, PAUSE = 1000
  const engine = await Engine.start({
    shards: 2, hooks: new URL('./fixtures/kuma-hooks.ts', import.meta.url).pathname,
    highWater: HIGH, config: { bytes: BYTES, chunk: CHUNK, pauseMs: PAUSE },
  })
  let peak = 0
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  try {
    const l = await engine.listen({ port: 0, host: '127.0.0.1', protocol: 'kuma' })
    const kick = await engine.listen({ port: 0, host: '127.0.0.1', protocol: 'kick' })
    await sleep(200)
    const rss0 = process.memoryUsage().rss
    peak = rss0
    // a shard opens the connector (ctx.open) to the kuma listener of the same engine
    const k = await connect(kick.port)
    k.on('error', () => {})
    k.write(`GO ${l.port}\n`)
    await waitFor(() => events.filter((e) => e.ev === 'new').length === 2, 5000, `both ends up (events: ${JSON.stringify(events)})`)
    k.destroy()
    // both ends write and neither reads: each queue stops at its mark ('high-water', then wait)
    await sleep(PAUSE - 300)
    const rssPaused = process.memoryUsage().rss
    const done = () => events.filter((e) => e.ev === 'done')
    await waitFor(() => done().length === 2, 90_000, `both ends to finish (events: ${JSON.stringify(events.slice(-4))})`, 50)
    const by = Object.fromEntries(done().map((e) => [e.role as string, e])) as Record<string, Record<string, unknown>>
    const [acc, con] = [by.accepted, by.connector]
    assert.ok(acc && con, JSON.stringify(done()))
    for (const e of [acc, con]) {
      assert.is(e.error, undefined, `${e.role}: ${e.error}`)
      assert.is(e.sent, BYTES, `${e.role} sent`)
      assert.is(e.recv, BYTES, `${e.role} received`)
      // a sender stops at 'high-water': its queue never holds more than the mark plus one chunk
      assert.ok((e.maxQueued as number) <= HIGH + CHUNK, `${e.role} queue peaked at ${e.maxQueued} (high water ${HIGH})`)
    }
    assert.is(acc.recvHash, con.sentHash, 'accepted end received exactly what the connector sent')
    assert.is(con.recvHash, acc.sentHash, 'connector received exactly what the accepted end sent')
    const resumed = events.filter((e) => e.ev === 'resume')
    assert.is(resumed.length, 2, 'both ends resumed reading after the pause')
    for (const r of resumed) assert.ok((r.sent as number) < BYTES, `${r.role} could not send everything while the peer did not read (sent ${r.sent})`)
    console.log(`  [proxy-kuma] engine endpoints: sent while paused ${resumed.map((r) => `${r.role} ${r.sent} (queued ${r.queued})`).join(', ')}; ` +
      `high-water ${acc.highWater}/${con.highWater} times, writable ${acc.writables}/${con.writables}, released ${acc.how}/${con.how}; ` +
      `RSS ${mb(rss0 / 1024)} MB, ${mb(rssPaused / 1024)} MB while paused, peak ${mb(peak / 1024)} MB`)
    // While paused, what the ends hold is their queues (≤ 256 KiB + a chunk each) and kernel
    // buffers (not RSS): 32 MB is allocator and GC slack. Queues that ignored the marks would hold
    // both whole streams (2×64 MiB) by now. (The peak over the whole run is printed, not bounded:
    // 2×64 MiB of buffers cross this process, and when V8 collects them is its business.)
    assert.ok(rssPaused - rss0 < 32 * MiB, `RSS grew ${mb((rssPaused - rss0) / 1024)} MB while both ends were paused (bound 32 MB)`)
    assert.is(engine.stats().hookErrors, 0, 'hook errors')
  } finally {
    clearInterval(sampler)
    await engine.stop({ graceMs: 1000 })
    bc.close()
  }
  assert.is(engine.stats().active, 0, 'nothing left after stop')
}, 120_000)

run()
