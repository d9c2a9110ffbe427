// Baseline for bench/proxy.ts: a plain single-process `net` L4 proxy.
//   node bench/servers/net-proxy.ts --listen 127.0.0.1:0 --backend HOST:PORT [--backend ...]
// Each client connection gets its own backend connection (round-robin over the backends);
// bytes are piped both ways with stream backpressure (pipe() pauses the reader while the writer
// is over its high-water mark), half-close is passed on (allowHalfOpen on both sides), an error
// or close on one side destroys the other. Prints one JSON line
// {"listening":{"host","port"},"pid"} when ready (same shape as `syncsock proxy`), then serves
// until SIGTERM/SIGINT, which close everything and exit 0.
// bench/servers/cluster-proxy.ts runs the same code in 2 `node:cluster` workers.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { parseArgs } from 'node:util'
import { fileURLToPath } from 'node:url'

export interface HostPort { host: string; port: number }

export function parseHostPort(s: string, what: string): HostPort {
  const i = s.lastIndexOf(':')
  const port = Number(s.slice(i + 1))
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${what}: expected HOST:PORT, got ${s}`)
  return { host: s.slice(0, i), port }
}

export function parseProxyArgs(argv = process.argv.slice(2)): { listen: HostPort; backends: HostPort[]; workers: number } {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', default: '127.0.0.1:0' },
      backend: { type: 'string', multiple: true },
      workers: { type: 'string', default: '2' },
    },
  })
  const backends = (values.backend ?? []).map((b) => parseHostPort(b, '--backend'))
  if (backends.length === 0) throw new Error('at least one --backend HOST:PORT')
  return { listen: parseHostPort(values.listen, '--listen'), backends, workers: Number(values.workers) }
}

/** Create (not yet listening) the proxy server; `sockets` tracks live sockets for shutdown. */
export function createProxy(backends: HostPort[], sockets: Set<Socket>): Server {
  let next = 0
  return createServer({ noDelay: true, allowHalfOpen: true }, (client) => {
    const b = backends[next++ % backends.length]
    const backend = connect({ host: b.host, port: b.port, noDelay: true, allowHalfOpen: true })
    sockets.add(client)
    sockets.add(backend)
    const kill = (): void => { client.destroy(); backend.destroy() }
    client.on('error', kill)
    backend.on('error', kill)
    client.on('close', () => { sockets.delete(client); backend.destroy() })
    backend.on('close', () => { sockets.delete(backend); client.destroy() })
    // pipe(): backpressure both ways; 'end' on one side ends (half-closes) the other.
    client.pipe(backend)
    backend.pipe(client)
  })
}

function main(): void {
  const { listen, backends } = parseProxyArgs()
  const sockets = new Set<Socket>()
  const server = createProxy(backends, sockets)
  server.listen({ port: listen.port, host: listen.host }, () => {
    const a = server.address()
    if (a === null || typeof a === 'string') throw new Error('unexpected server address')
    console.log(JSON.stringify({ listening: { host: a.address, port: a.port }, pid: process.pid }))
  })
  const stop = (): void => {
    server.close()
    for (const s of sockets) s.destroy()
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main()
