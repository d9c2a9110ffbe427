// Baseline (c) for bench/echo.ts: a `node:cluster` echo server with N worker processes
// (default 2), Node's default scheduling policy (on Linux: the primary accepts and hands
// connections round-robin to the workers).
//   node bench/servers/cluster-echo.ts [--port 0] [--host 127.0.0.1] [--workers 2]
// The primary prints one JSON line {"listening":{"host","port"},"workers","pid"} once every
// worker listens (port 0: cluster workers share the one port the primary picked), then serves
// until SIGTERM/SIGINT, which stop the workers and exit 0.
import cluster, { type Worker } from 'node:cluster'
import { createServer, type Socket } from 'node:net'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    workers: { type: 'string', default: '2' },
  },
})

if (cluster.isPrimary) {
  const n = Number(values.workers)
  const workers: Worker[] = []
  const ports = new Set<number>()
  let listening = 0
  let stopping = false
  cluster.on('listening', (_w, addr) => {
    ports.add(addr.port)
    if (++listening === n) {
      if (ports.size !== 1) throw new Error(`workers listen on different ports: ${[...ports].join(',')}`)
      console.log(JSON.stringify({ listening: { host: values.host, port: [...ports][0] }, workers: n, pid: process.pid }))
    }
  })
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) {
      console.error(`cluster-echo: worker ${w.process.pid} died (${signal ?? code}); exiting`)
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
  const server = createServer({ noDelay: true }, (s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    s.pipe(s)
  })
  server.listen({ port: Number(values.port), host: values.host })
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
