// Baseline (b) for bench/echo.ts: a plain single-thread `net` echo server.
//   node bench/servers/net-echo.ts [--port 0] [--host 127.0.0.1]
// Prints one JSON line {"listening":{"host","port"},"pid"} when ready (same shape as
// `syncsock echo`), then serves until SIGTERM/SIGINT, which close it and exit 0.
import { createServer, type Socket } from 'node:net'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' } },
})

const sockets = new Set<Socket>()
// noDelay like syncsock's shards; pipe() is the idiomatic echo and respects backpressure.
const server = createServer({ noDelay: true }, (s) => {
  sockets.add(s)
  s.on('error', () => {})
  s.on('close', () => sockets.delete(s))
  s.pipe(s)
})
server.listen({ port: Number(values.port), host: values.host }, () => {
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
