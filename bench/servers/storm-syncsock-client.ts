// The client under test in bench/reconnect-storm.ts: a syncsock engine holding N persistent
// server connections, in its own process (forked with an IPC channel) so the bench can check
// that it exits by itself after stop(). Commands answer {t:'ok', req, ...}:
//   init {ports, n, engine, connect}  start the engine, spread N over the ports, answer when all
//                                     N are established
//   arm {expectDrops, watch}          snapshot the counters, then poll stats() every 2 ms:
//                                     'allBack'  → event when the expected drops were seen and
//                                                  connected − dropped is N again
//                                     'liveness' → event when droppedLiveness grew by expectDrops
//   report                            counters now and since arm
//   stop {graceMs}                    engine.stop(); then the live handles, and the IPC channel is
//                                     let go so the process can end by itself (the bench times it)
// Hooks run in the shards (worker threads), so every measurement here comes from the shared
// counters (engine.stats()), never from a hook.
import { performance } from 'node:perf_hooks'
import { BroadcastChannel } from 'node:worker_threads'
import { Engine, type EngineStats } from '../../src/index.ts'
import { LOOP_CHANNEL } from './storm-hooks.ts'

const now = (): number => performance.timeOrigin + performance.now()
const hooks = new URL('./storm-hooks.ts', import.meta.url)
const POLL_MS = 2

let engine: Engine | null = null
let n = 0
let s0: EngineStats | null = null
let ru0: NodeJS.ResourceUsage | null = null

/** CPU the process (all shards) used since arm, and how often the kernel preempted it. */
function cpuSince(a: NodeJS.ResourceUsage | null): Record<string, number> | null {
  if (!a) return null
  const b = process.resourceUsage()
  return {
    userMs: (b.userCPUTime - a.userCPUTime) / 1000, systemMs: (b.systemCPUTime - a.systemCPUTime) / 1000,
    involuntaryCtxSwitches: b.involuntaryContextSwitches - a.involuntaryContextSwitches,
  }
}
let poll: NodeJS.Timeout | null = null
let stopping = false

/** Established right now: every established incarnation counts once in `connected`, and leaves
 *  through `dropped` (peer/network) or a close (none happen before stop). */
const established = (s: EngineStats): number => s.connected - s.dropped - s.closed

function strip(s: EngineStats): Record<string, number> {
  const { shards: _s, main: _m, ...flat } = s
  return flat
}

function delta(a: EngineStats, b: EngineStats): Record<string, number> {
  const out: Record<string, number> = {}
  const fa = strip(a), fb = strip(b)
  for (const k of Object.keys(fb)) { const d = fb[k] - (fa[k] ?? 0); if (d) out[k] = d }
  return out
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

// The shards' resettable loop-delay monitors (see storm-hooks.ts).
const loopChannel = new BroadcastChannel(LOOP_CHANNEL)
loopChannel.unref()
type LoopReply = { thread: number; maxMs?: number; reset?: boolean; blocks?: [number, number][]; maxAttempt?: number }
let loopReplies: LoopReply[] = []
loopChannel.onmessage = (ev: unknown) => { loopReplies.push((ev as { data: LoopReply }).data) }

/** Ask every shard; answers within timeoutMs (a shard busy in a storm answers when it can). */
async function askShards(msg: 'reset' | 'read', shards: number, timeoutMs = 2000): Promise<LoopReply[]> {
  loopReplies = []
  loopChannel.postMessage(msg)
  const want = (r: LoopReply): boolean => msg === 'reset' ? r.reset === true : r.maxMs !== undefined
  const deadline = Date.now() + timeoutMs
  while (loopReplies.filter(want).length < shards && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2))
  return loopReplies.filter(want)
}

type Cmd = { t: string; req: number; [k: string]: unknown }

async function handle(m: Cmd): Promise<Record<string, unknown>> {
  switch (m.t) {
    case 'init': {
      n = Number(m.n)
      const ports = m.ports as number[]
      const eo = (m.engine ?? {}) as { shards?: number; maxConnectsInFlight?: number }
      engine = await Engine.start({ shards: eo.shards ?? 2, hooks, maxConnectsInFlight: eo.maxConnectsInFlight })
      engine.on('dead', () => {})
      const co = (m.connect ?? {}) as Record<string, unknown>
      const protocol = String(m.protocol ?? 'storm')
      const t0 = now()
      for (let i = 0; i < ports.length; i++) {
        const count = Math.floor(n / ports.length) + (i < n % ports.length ? 1 : 0)
        if (count > 0) await engine.connect({ host: '127.0.0.1', port: ports[i], protocol, count, ...co })
      }
      const e = engine
      await waitFor(() => established(e.stats()) === n, 60_000, `${n} initial connections`)
      return { initialConnectMs: now() - t0, stats: strip(e.stats()) }
    }
    case 'arm': {
      const e = engine!
      const acks = await askShards('reset', e.shardCount)
      s0 = e.stats()
      ru0 = process.resourceUsage()
      const start = s0
      const expectDrops = Number(m.expectDrops ?? 0)
      const watch = String(m.watch ?? 'allBack')
      let detectedAt = 0
      if (poll) clearInterval(poll)
      poll = setInterval(() => {
        const s = e.stats()
        if (watch === 'liveness' && !detectedAt && s.droppedLiveness - start.droppedLiveness >= expectDrops) {
          detectedAt = now()
          process.send?.({ t: 'event', kind: 'detected', at: detectedAt })
        }
        if ((watch !== 'liveness' || detectedAt) && s.dropped - start.dropped >= expectDrops && established(s) === n) {
          process.send?.({ t: 'event', kind: 'allBack', at: now() })
          if (poll) clearInterval(poll)
          poll = null
        }
      }, POLL_MS)
      // Shards publish a lifetime max only: this is what the storm has to beat.
      return { at: now(), loopResetAcks: acks.length, loopDelayMaxBeforeMs: s0.loopDelayMaxMs, loopDelayMaxBeforeByShard: s0.shards.map((x) => x.loopDelayMaxMs) }
    }
    case 'report': {
      const s = engine!.stats()
      const loop = await askShards('read', engine!.shardCount)
      return {
        stats: strip(s), delta: s0 ? delta(s0, s) : {}, established: established(s), loopDelayMaxByShard: s.shards.map((x) => x.loopDelayMaxMs),
        stormLoopMaxByShard: loop.map((r) => r.maxMs), stormLoopMaxMs: loop.length ? Math.max(...loop.map((r) => r.maxMs!)) : null,
        stormBlocks: loop.map((r) => r.blocks ?? []),
        // failed connects in a row at worst, plus the connect that succeeded
        maxAttemptsPerEndpoint: loop.length ? Math.max(...loop.map((r) => r.maxAttempt ?? 0)) + 1 : null,
        cpu: cpuSince(ru0),
      }
    }
    case 'stop': {
      stopping = true
      if (poll) { clearInterval(poll); poll = null }
      const e = engine!
      const loop = await askShards('read', e.shardCount, 500)
      loopChannel.postMessage('off')
      loopChannel.close()
      const before = e.stats()
      const at = now()
      await e.stop({ graceMs: Number(m.graceMs ?? 2000) })
      const resolvedAt = now()
      const after = e.stats()
      // The IPC channel is the only handle we expect to see; everything of the engine must be gone.
      const resources = process.getActiveResourcesInfo()
      process.send?.({
        t: 'ok', req: m.req, at, resolvedAt, resources,
        delta: delta(before, after), stats: strip(after), sinceArm: s0 ? delta(s0, after) : {},
        inFlightAtStop: before.connectsInFlight, pendingAtStop: before.pendingConnects, establishedAtStop: established(before),
        stormLoopMaxMs: loop.length ? Math.max(...loop.map((r) => r.maxMs!)) : null,
      })
      process.channel?.unref()
      process.disconnect()
      // If something the engine left keeps the loop alive, do not linger as an orphan; the bench
      // has already recorded that the process did not end within 1 s.
      setTimeout(() => process.exit(3), 15_000).unref()
      return { replied: true }
    }
    default: throw new Error(`unknown command ${m.t}`)
  }
}

process.on('message', (m: Cmd) => {
  handle(m).then(
    (v) => { if (!v.replied) process.send?.({ t: 'ok', req: m.req, ...v }) },
    (e: Error) => process.send?.({ t: 'err', req: m.req, message: e.message }),
  )
})
process.on('disconnect', () => { if (!stopping) process.exit(0) })
process.on('SIGTERM', () => process.exit(0))
