#!/usr/bin/env node
// syncsock CLI.
//   syncsock echo  [--port 7000] [--host 127.0.0.1] [--shards N|auto] [--stats-json]
//   syncsock start   (what `npm start` runs: the echo engine on built-in defaults)
// SIGTERM / SIGINT stop the engine cleanly (DESIGN §6b) and exit 0.
import { parseArgs } from 'node:util'
import { Engine, SyncsockError } from '../src/index.ts'

const USAGE = `usage:
  syncsock echo [--port 7000] [--host 127.0.0.1] [--shards N|auto] [--stats-json] [--quiet]
  syncsock start`

async function echo(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '7000' },
      host: { type: 'string', default: '127.0.0.1' },
      shards: { type: 'string', default: 'auto' },
      'stats-json': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      'grace-ms': { type: 'string', default: '5000' },
    },
  })
  const port = Number(values.port)
  const shards = values.shards === 'auto' ? 'auto' : Number(values.shards)
  const engine = await Engine.start({ shards })
  engine.on('hook-error', (d) => console.error('hook-error', d))
  let l: Awaited<ReturnType<Engine['listen']>>
  try {
    l = await engine.listen({ port, host: values.host, protocol: 'echo' })
  } catch (e) {
    await engine.stop({ graceMs: 0 }) // the shards would otherwise keep the process alive
    throw e
  }
  // The first line is machine-readable: tests and benches wait for it.
  console.log(JSON.stringify({ listening: { host: l.host, port: l.port }, shards: engine.shardCount, pid: process.pid }))
  if (!values.quiet && !values['stats-json']) {
    console.error(`syncsock echo on ${l.host}:${l.port} with ${engine.shardCount} shards. Try:  nc ${l.host} ${l.port}   (Ctrl-C to stop)`)
  }
  let last = 0
  const interval = values.quiet ? null : setInterval(() => {
    const s = engine.stats()
    if (values['stats-json']) { console.log(JSON.stringify({ stats: s })); return }
    const line = `active ${s.active}  accepted ${s.accepted}  in ${s.bytesIn} B  out ${s.bytesOut} B  per shard [${s.shards.map((x) => x.active).join(' ')}]  loop p99 ${s.loopDelayP99Ms.toFixed(1)} ms`
    if (process.stderr.isTTY) process.stderr.write(`\r${line}   `)
    else if (s.accepted !== last) console.error(line)
    last = s.accepted
  }, 1000)
  const stop = async (sig: string) => {
    if (interval) clearInterval(interval)
    if (!values.quiet) console.error(`\n${sig}: stopping`)
    await engine.stop({ graceMs: Number(values['grace-ms']) })
    const s = engine.stats()
    if (!values.quiet) console.error(`stopped: accepted ${s.accepted}, closed ${s.closed}, dropped ${s.dropped}, reconnectsAfterStop ${s.reconnectsAfterStop}`)
    process.exitCode = 0
  }
  process.once('SIGTERM', () => void stop('SIGTERM'))
  process.once('SIGINT', () => void stop('SIGINT'))
}

const [cmd, ...rest] = process.argv.slice(2)
try {
  if (cmd === 'echo') await echo(rest)
  else if (cmd === 'start' || cmd === undefined) await echo(['--port', '7000'])
  else { console.error(USAGE); process.exitCode = 2 }
} catch (e) {
  if (SyncsockError.is(e)) { console.error(`syncsock: ${e.code}: ${e.message}`); process.exitCode = 1 }
  else throw e
}
