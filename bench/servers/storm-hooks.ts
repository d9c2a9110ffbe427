// Hooks module of the syncsock client in bench/reconnect-storm.ts (loaded in every shard).
// `storm` / `stormDefaults`: server connections whose liveness probe is a one-byte ping sent from
// connectionIdle; the storm server echoes it, and any bytes that come back answer the probe
// (src/hooks/liveness.ts). `storm` adds a retry hook (below); `stormDefaults` keeps the engine's.
//
// The shards publish a lifetime maximum of their event-loop delay (loopDelayMaxMs), which also
// covers engine start and the initial connect. To see the storm alone, each shard also runs its
// own resettable monitor, driven over a BroadcastChannel (unref'd: it never keeps a shard alive):
// 'reset' clears it (and acks), 'read' answers {shard, maxMs}, 'off' ends it (before stop()).
import { BroadcastChannel, isMainThread, threadId } from 'node:worker_threads'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { defineProtocols, type SsSocket } from '../../src/index.ts'

export const LOOP_CHANNEL = 'syncsock-storm-loop'
const PING = Buffer.from('p')

/**
 * The most failed connects in a row any connection of this shard saw since the last 'reset'
 * (retry's `attempt`, reset when a connection becomes ready): max attempts per endpoint is this
 * plus the one that succeeded. Read with the loop monitor ('read').
 */
let maxAttempt = 0
function noteAttempt(attempt: number): void { if (attempt > maxAttempt) maxAttempt = attempt }

if (!isMainThread) {
  const eld = monitorEventLoopDelay({ resolution: 10 })
  eld.enable()
  // Where the long blocks were: a 5 ms ticker notes every gap over 50 ms (epoch ms, length).
  let blocks: [number, number][] = []
  let last = performance.now()
  const ticker = setInterval(() => {
    const t = performance.now()
    if (t - last > 50 && blocks.length < 100) blocks.push([Math.round(performance.timeOrigin + last), Math.round(t - last)])
    last = t
  }, 5)
  ticker.unref()
  const bc = new BroadcastChannel(LOOP_CHANNEL)
  bc.unref()
  bc.onmessage = (ev: unknown) => {
    const m = (ev as { data: unknown }).data
    if (m === 'reset') { eld.reset(); blocks = []; maxAttempt = 0; bc.postMessage({ thread: threadId, reset: true }) }
    else if (m === 'read') bc.postMessage({ thread: threadId, maxMs: eld.max / 1e6, blocks, maxAttempt })
    else if (m === 'off') { eld.disable(); clearInterval(ticker); bc.close() }
  }
}

const pinger = {
  connectionNew(sock: SsSocket) { sock.link(true) },
  connectionRecv() { /* the echoed ping: arrival alone answers the probe */ },
  connectionIdle(sock: SsSocket) { sock.send(PING) },
}

/**
 * The retry policy of the tuned client. Stock full jitter, uniform [0, base * 2^(attempt-1)],
 * makes many quick attempts against a listener that is down for a few seconds and then waits
 * long: after a 2 s gap that is ~6 attempts and up to ~12 s (measured and simulated, see
 * bench/README.md). A refusal means "nobody listens right now", typically a restart that takes
 * seconds, so the first refusals retry at a steady ~1.15 s (jittered 1.0-1.3 s); after 5
 * failures in a row the engine's default backoff takes over (full jitter, base/cap from the
 * retry options), so a long outage still backs off. Timeouts and other errors keep the default:
 * they may mean overload, where waiting longer is right.
 */
function restartTolerantRetry(_sock: SsSocket, attempt: number, error: Error): number | undefined {
  noteAttempt(attempt)
  if ((error as NodeJS.ErrnoException).code === 'ECONNREFUSED' && attempt <= 5) return 1000 + Math.random() * 300
  return undefined
}

/** Only records the attempt; undefined keeps the engine's default backoff. */
function countingRetry(_sock: SsSocket, attempt: number): undefined { noteAttempt(attempt); return undefined }

export default defineProtocols({
  /** the tuned client: pings for liveness, restart-tolerant retry */
  storm: { ...pinger, retry: restartTolerantRetry },
  /** the same without a retry hook: the engine's default backoff alone */
  stormDefaults: { ...pinger, retry: countingRetry },
})
