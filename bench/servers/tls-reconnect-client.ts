// The clients of bench/tls-reconnect.ts, one process per run (forked with IPC). argv: KIND PORT N CA
//   syncsock  Engine (2 shards), engine.connect({ count: N, tls: { ca } }): failover reconnects
//             through the reconnect heap; handshakes hold admission slots (maxConnectsInFlight,
//             argv[5], default 256)
//   node      N tls.connect sockets, reconnect at once on 'close' (the usual plain Node code),
//             a 10 s handshake timeout (socket.setTimeout before secureConnect), like Icinga's
// Answers {t:'up', rssPerConn} once all N are up, and {t:'stats', ...} on request.
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Engine } from '../../src/index.ts'

const [kind, portS, nS, caPath, inFlightS] = process.argv.slice(2)
const port = Number(portS), n = Number(nS)
const ca = readFileSync(caPath)
process.on('disconnect', () => process.exit(0))
let rss0 = process.memoryUsage().rss

if (kind === 'syncsock') {
  const engine = await Engine.start({ shards: 2, maxConnectsInFlight: Number(inFlightS ?? 256) })
  rss0 = process.memoryUsage().rss // the engine's own threads are not per-connection memory
  await engine.connect({
    host: '127.0.0.1', port, protocol: 'discard', count: n,
    tls: { ca: caPath, servername: 'localhost' }, retry: { baseMs: 100, capMs: 1000 }, connectTimeoutMs: 10_000,
  })
  const up = () => { const st = engine.stats(); return st.serverConns - st.pendingConnects - st.connectsInFlight - st.parked }
  while (engine.stats().connected < n) await new Promise((r) => setTimeout(r, 20))
  await new Promise((r) => setTimeout(r, 200))
  process.send!({ t: 'up', rssPerConn: (process.memoryUsage().rss - rss0) / n })
  process.on('message', (m: { t: string }) => {
    if (m.t !== 'stats') return
    const st = engine.stats()
    process.send!({
      t: 'stats', connected: st.connected, up: up(), failures: st.tlsHandshakeFailed, timeouts: st.tlsFailedTimeout,
      connectFailed: st.connectFailed, loopMaxMs: st.loopDelayMaxMs, hsP50: st.tlsHandshakeP50Ms, hsP99: st.tlsHandshakeP99Ms,
    })
  })
} else {
  const eld = monitorEventLoopDelay({ resolution: 10 })
  eld.enable()
  let connected = 0, failures = 0, timeouts = 0
  const dial = () => {
    let secure = false
    const s = tls.connect({ port, host: '127.0.0.1', ca, servername: 'localhost' }, () => { secure = true; s.setTimeout(0); connected++ })
    s.setTimeout(10_000, () => { if (!secure) { timeouts++; s.destroy() } })
    s.on('error', () => { if (!secure) failures++ })
    s.on('data', () => {})
    s.on('close', () => dial()) // reconnect at once
  }
  for (let i = 0; i < n; i++) dial()
  while (connected < n) await new Promise((r) => setTimeout(r, 20))
  await new Promise((r) => setTimeout(r, 200))
  process.send!({ t: 'up', rssPerConn: (process.memoryUsage().rss - rss0) / n })
  process.on('message', (m: { t: string }) => {
    if (m.t !== 'stats') return
    process.send!({ t: 'stats', connected, failures, timeouts, loopMaxMs: eld.max / 1e6 })
  })
}
