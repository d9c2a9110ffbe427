// The far end of bench/tls-reconnect.ts: one Node TLS server (ECDSA P-256) in its own process,
// forked with IPC. argv: CERT KEY. It answers {t:'ready', port} and then, per command:
//   {t:'mark', target}  forget handshake times; `target` is the count that means "all back"
//   {t:'drop'}          destroy every established TLS socket at once (the storm's trigger)
//   {t:'stats'}         {open, times: ms after the drop of each handshake completed since, allAt}
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'

const [cert, key] = process.argv.slice(2)
const open = new Set<tls.TLSSocket>()
let dropAt = 0
let target = 0
let allAt = 0
const times: number[] = []
const server = tls.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (s) => {
  open.add(s)
  if (dropAt) times.push(performance.now() - dropAt)
  if (dropAt && !allAt && open.size >= target) allAt = performance.now() - dropAt
  s.on('error', () => {})
  s.on('data', () => {})
  s.on('close', () => open.delete(s))
})
server.on('tlsClientError', () => {})
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => process.send!({ t: 'ready', port: (server.address() as { port: number }).port }))
process.on('disconnect', () => process.exit(0))
process.on('message', (m: { t: string; target?: number }) => {
  if (m.t === 'mark') { target = m.target ?? 0; times.length = 0; allAt = 0; dropAt = 0; process.send!({ t: 'mark' }) }
  else if (m.t === 'drop') { dropAt = performance.now(); for (const s of [...open]) s.destroy(); process.send!({ t: 'drop' }) }
  else if (m.t === 'stats') process.send!({ t: 'stats', open: open.size, times, allAt })
})
