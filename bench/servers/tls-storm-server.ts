// The server side of bench/tls-storm.ts, in its own process (forked with IPC). argv: KIND DIR
//   node-per-conn  Node TLS server that reloads cert, key and CA bundle from disk for every new
//                  connection, synchronously, on its one I/O thread (skupper-router #1572's design)
//   node-once      Node TLS server with the context built once, rebuilt (synchronously, on its
//                  loop) when fs.watch sees a change
//   syncsock       Engine, 2 shards, listen({ tls: files }): CertStore + pool, one context per shard per update
// Each has a 100 ms heartbeat timer (in every shard for syncsock) that records its lateness.
// IPC: answers {t:'ready', port}; on {t:'report'} answers {t:'report', late: {p50,p99,max,n}, reloads}.
import tls from 'node:tls'
import { readFileSync, watch } from 'node:fs'
import { join } from 'node:path'
import { BroadcastChannel } from 'node:worker_threads'
import { createHistogram } from 'node:perf_hooks'
import { Engine } from '../../src/index.ts'

const [kind, dir] = process.argv.slice(2)
const CERT = join(dir, 'live.pem'), KEY = join(dir, 'live.key'), BUNDLE = join(dir, 'bundle.pem')
const send = (m: unknown) => process.send!(m)
process.on('disconnect', () => process.exit(0))

/** Heartbeat of this thread: lateness of a 100 ms interval, in µs. */
function heartbeat() {
  const h = createHistogram()
  let last = performance.now()
  const t = setInterval(() => {
    const now = performance.now()
    h.record(Math.max(1, Math.round((now - last - 100) * 1000)))
    last = now
  }, 100)
  t.unref()
  return h
}
const summary = (h: ReturnType<typeof createHistogram>) => ({ p50: h.percentile(50) / 1000, p99: h.percentile(99) / 1000, max: h.max / 1000, n: h.count })

const echo = (s: tls.TLSSocket) => { s.on('error', () => {}); s.on('data', (d) => s.write(d)) }

if (kind === 'node-per-conn' || kind === 'node-once') {
  const h = heartbeat()
  let reloads = 0
  const load = () => ({ cert: readFileSync(CERT), key: readFileSync(KEY), ca: readFileSync(BUNDLE) })
  const server = kind === 'node-per-conn'
    ? tls.createServer({ ...load(), SNICallback: (_name, cb) => { reloads++; cb(null, tls.createSecureContext(load())) } }, echo)
    : tls.createServer(load(), echo)
  if (kind === 'node-once') {
    let t: NodeJS.Timeout | null = null
    watch(dir, () => {
      if (t) clearTimeout(t)
      t = setTimeout(() => { try { server.setSecureContext(load()); reloads++ } catch { /* half-written: keep the old */ } }, 50)
    })
  }
  server.on('tlsClientError', () => {})
  server.listen(0, '127.0.0.1', () => send({ t: 'ready', port: (server.address() as { port: number }).port }))
  process.on('message', (m: { t: string }) => {
    if (m.t === 'report') send({ t: 'report', late: summary(h), reloads })
  })
} else {
  const ch = `tls-storm-${process.pid}`
  process.env.TLS_STORM_CHANNEL = ch
  const engine = await Engine.start({ shards: 2, hooks: new URL('./tls-storm-hooks.ts', import.meta.url) })
  const l = await engine.listen({ port: 0, protocol: 'echo', tls: { cert: CERT, key: KEY, ca: BUNDLE } })
  const bc = new BroadcastChannel(ch)
  const got: { p50: number; p99: number; max: number; n: number }[] = []
  bc.onmessage = (e) => { const d = (e as MessageEvent).data; if (d?.t === 'late') got.push(d.late) }
  send({ t: 'ready', port: l.port })
  process.on('message', async (m: { t: string }) => {
    if (m.t !== 'report') return
    got.length = 0
    bc.postMessage({ t: 'report' })
    const deadline = Date.now() + 2000
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    const st = engine.stats()
    send({
      t: 'report',
      late: { p50: Math.max(...got.map((g) => g.p50)), p99: Math.max(...got.map((g) => g.p99)), max: Math.max(...got.map((g) => g.max)), n: got.reduce((a, g) => a + g.n, 0) },
      reloads: st.certReloads, rejected: st.certReloadsRejected, loopDelayMaxMs: st.loopDelayMaxMs, handshakes: st.tlsHandshakes,
    })
  })
}
