#!/usr/bin/env node
// syncsock CLI.
//   syncsock proxy --listen HOST:PORT --backend HOST:PORT ...   the L4 proxy (src/proxy; --help)
//   syncsock start   what `npm start` runs: the proxy on 127.0.0.1:8080 with two in-process echo backends
//   syncsock echo  [--port 7000] [--host 127.0.0.1] [--shards N|auto] [--stats-json]   (tests, benches)
// SIGTERM / SIGINT stop cleanly and exit 0. Exit 2: bad command, flag or value; 1: could not start.
// Imports only the public API and the proxy (which itself imports only the public API).
import { parseArgs } from 'node:util'
import { Engine, SyncsockError } from '../src/index.ts'
import { loadProxyConfig, parseProxyArgs, ProxyUsageError, PROXY_HELP, type ProxyArgs, type ProxyConfig } from '../src/proxy/config.ts'
import { runProxy, type ProxyIo } from '../src/proxy/main.ts'
import { DEMO_LISTEN, demoBanner, demoConfig, echoBackend, portFree } from '../src/proxy/demo.ts'

const USAGE = `usage:
  syncsock proxy --listen HOST:PORT --backend HOST:PORT [--backend ...] [flags]   (syncsock proxy --help)
  syncsock start        the proxy demo: 127.0.0.1:8080 in front of two in-process echo backends
  syncsock echo [--port 7000] [--host 127.0.0.1] [--shards N|auto] [--stats-json] [--quiet]`

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

// A reader of stdout that went away (`syncsock proxy --stats-json | head -1`) must not take the
// proxy down with an EPIPE: the proxy keeps serving, its machine output is just unread.
let stdoutGone = false
const stdio = (reload: (() => Promise<ProxyConfig>) | null): ProxyIo => {
  process.stdout.on('error', () => { stdoutGone = true })
  return {
    out: (line) => { if (!stdoutGone) process.stdout.write(`${line}\n`) },
    err: (line) => { process.stderr.write(`${line}\n`) },
    tty: process.stderr.isTTY === true,
    reload,
  }
}

async function proxy(argv: string[]): Promise<void> {
  let args: ProxyArgs
  let config: ProxyConfig
  try {
    args = parseProxyArgs(argv)
    if (args.help) { process.stdout.write(PROXY_HELP); return }
    config = await loadProxyConfig(args)
  } catch (e) {
    if (!(e instanceof ProxyUsageError)) throw e
    console.error(`syncsock proxy: ${e.message}`)
    process.exitCode = 2
    return
  }
  const running = await runProxy(config, stdio(args.config ? () => loadProxyConfig(args) : null))
  await running.done
  process.exitCode = 0
}

/** The demo: two echo backends in this process, the proxy on 127.0.0.1:8080 in front of them. */
async function start(argv: string[]): Promise<void> {
  if (argv.length > 0) { console.error(`syncsock start: takes no arguments (got ${argv.join(' ')}); for your own setup use syncsock proxy --help`); process.exitCode = 2; return }
  const free = await portFree(DEMO_LISTEN)
  if (free !== true) {
    console.error(`syncsock start: ${DEMO_LISTEN.host}:${DEMO_LISTEN.port} is not available (${free}): something else listens there. ` +
      `Stop it, or run the proxy on another port: syncsock proxy --listen 127.0.0.1:8081 --backend HOST:PORT`)
    process.exitCode = 1
    return
  }
  const backends = [await echoBackend(), await echoBackend()]
  try {
    const running = await runProxy(demoConfig(backends.map((b) => b.at)), stdio(null))
    const cli = process.argv[1]?.endsWith('.ts') ? 'node bin/syncsock.ts' : 'syncsock'
    console.error(demoBanner(running.listening, backends.map((b) => b.at), running.engine.shardCount, cli))
    await running.done
    process.exitCode = 0
  } finally {
    await Promise.all(backends.map((b) => b.close()))
  }
}

const [cmd, ...rest] = process.argv.slice(2)
try {
  if (cmd === 'proxy') await proxy(rest)
  else if (cmd === 'start') await start(rest)
  else if (cmd === 'echo') await echo(rest)
  else if (cmd === '--help' || cmd === '-h' || cmd === 'help') console.log(USAGE)
  else { console.error(USAGE); process.exitCode = 2 }
} catch (e) {
  if (SyncsockError.is(e)) {
    console.error(`syncsock${cmd === 'proxy' || cmd === 'start' ? ` ${cmd}` : ''}: ${e.code}: ${e.message}`)
    process.exitCode = 1
  } else throw e
}
