// Baseline for bench/proxy.ts: the `net` proxy of net-proxy.ts in N `node:cluster` worker
// processes (default 2), Node's default scheduling (Linux: the primary accepts and hands each
// connection to a worker, round-robin).
//   node bench/servers/cluster-proxy.ts --listen 127.0.0.1:0 --backend HOST:PORT [--backend ...] [--workers 2]
// The primary prints one JSON line {"listening":{"host","port"},"workers","pid"} once every worker
// listens, then serves until SIGTERM/SIGINT, which stop the workers and exit 0.
import cluster, { type Worker } from 'node:cluster'
import type { Socket } from 'node:net'
import { createProxy, parseProxyArgs } from './net-proxy.ts'

const { listen, backends, workers: n } = parseProxyArgs()

if (cluster.isPrimary) {
  if (!Number.isInteger(n) || n < 1) throw new Error(`--workers must be an integer >= 1; got ${n}`)
  const workers: Worker[] = []
  const ports = new Set<number>()
  let listening = 0
  let stopping = false
  cluster.on('listening', (_w, addr) => {
    ports.add(addr.port)
    if (++listening === n) {
      if (ports.size !== 1) throw new Error(`workers listen on different ports: ${[...ports].join(',')}`)
      console.log(JSON.stringify({ listening: { host: listen.host, port: [...ports][0] }, workers: n, pid: process.pid }))
    }
  })
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) {
      console.error(`cluster-proxy: worker ${w.process.pid} died (${signal ?? code}); exiting`)
      stop(1)
    }
  })
  for (let i = 0; i < n; i++) workers.push(cluster.fork())
  const stop = (code: number): void => {
    if (stopping) return
    stopping = true
    for (const w of workers) if (!w.isDead()) w.process.kill('SIGTERM')
    const check = setInterval(() => {
      if (workers.every((w) => w.isDead())) { clearInterval(check); process.exit(code) }
    }, 20)
    setTimeout(() => {
      for (const w of workers) if (!w.isDead()) w.process.kill('SIGKILL')
      process.exit(code)
    }, 3000).unref()
  }
  process.once('SIGTERM', () => stop(0))
  process.once('SIGINT', () => stop(0))
} else {
  const sockets = new Set<Socket>()
  const server = createProxy(backends, sockets)
  server.listen({ port: listen.port, host: listen.host })
  const stop = (): void => {
    server.close()
    for (const s of sockets) s.destroy()
    process.exit(0)
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  // The primary went away (even SIGKILLed): do not linger.
  process.once('disconnect', () => process.exit(0))
}
