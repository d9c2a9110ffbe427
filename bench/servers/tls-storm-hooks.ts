// Hooks module of bench/tls-storm.ts's syncsock server: no protocol of its own (the built-in echo
// serves), just a 100 ms heartbeat in every shard whose lateness the server asks for.
import { BroadcastChannel } from 'node:worker_threads'
import { createHistogram } from 'node:perf_hooks'
import { defineProtocols } from '../../src/index.ts'

const h = createHistogram()
let last = performance.now()
setInterval(() => {
  const now = performance.now()
  h.record(Math.max(1, Math.round((now - last - 100) * 1000)))
  last = now
}, 100).unref()
const bc = new BroadcastChannel(process.env.TLS_STORM_CHANNEL ?? 'tls-storm')
bc.unref()
bc.onmessage = (e) => {
  if ((e as MessageEvent).data?.t !== 'report') return
  bc.postMessage({ t: 'late', late: { p50: h.percentile(50) / 1000, p99: h.percentile(99) / 1000, max: h.max / 1000, n: h.count } })
}

export default defineProtocols({})
