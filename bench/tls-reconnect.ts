// TLS reconnect storm (issue #9; Icinga 2 #6517): N TLS server connections (ECDSA P-256) to one
// Node TLS server, which drops them all at once; how fast do they all come back? syncsock
// (engine.connect with tls: failover through the reconnect heap, handshakes admitted at
// maxConnectsInFlight per shard) against plain Node (tls.connect, reconnect at once on 'close',
// 10 s handshake timeout), each client and the server in their own process, in the same run.
// Reported: time until all N are back (at the server), p50 of the per-connection times, handshake
// failures and timeouts after the drop, the client's worst loop block, client memory per TLS
// connection. Targets (issue #9): 5,000 <= 9 s, 10,000 <= 16 s, p50 <= 0.6 x total, 0 handshake
// failures, no loop block over 100 ms, <= 80 KB per TLS connection.
//   node_modules/.bin/node bench/tls-reconnect.ts [--quick] [--n 5000,10000] [--only syncsock,node] [--max-in-flight 32]
import { fork, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseBenchArgs, machineLine, table, fmt, median, writeResults } from './lib.ts'

const ARGS = parseBenchArgs()
const flag = (k: string) => (typeof ARGS.flags[k] === 'string' ? ARGS.flags[k] as string : undefined)
const SIZES = (flag('n') ?? (ARGS.quick ? '1000' : '5000,10000')).split(',').map(Number)
const KINDS = (flag('only') ?? 'node,syncsock').split(',')
/** syncsock's maxConnectsInFlight per shard: every handshake in flight is crypto on the shard's loop */
const IN_FLIGHT = Number(flag('max-in-flight') ?? 8)
const LIMIT_MS = ARGS.quick ? 30_000 : 90_000

const dir = mkdtempSync(join(tmpdir(), 'tls-reconnect-'))
const ossl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
ossl(['req', '-x509', ...ec, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'), '-days', '2', '-subj', '/CN=reconnect CA'])
writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
ossl(['req', ...ec, '-keyout', join(dir, 'srv.key'), '-out', join(dir, 'srv.csr'), '-subj', '/CN=localhost'])
ossl(['x509', '-req', '-in', join(dir, 'srv.csr'), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca.key'),
  '-CAcreateserial', '-out', join(dir, 'srv.pem'), '-days', '2', '-extfile', join(dir, 'san.ext')])

function proc(file: string, args: string[]) {
  const child: ChildProcess = fork(new URL(file, import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const next = <T>(t: string, ms = 120_000) => new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file}: no ${t} in ${ms} ms`)), ms)
    const on = (m: { t: string }) => { if (m.t === t) { clearTimeout(timer); child.off('message', on); resolve(m as T) } }
    child.on('message', on)
  })
  const ask = <T>(t: string, extra: Record<string, unknown> = {}) => { const p = next<T>(t); child.send({ t, ...extra }); return p }
  const kill = async () => { child.kill('SIGKILL'); if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r)) }
  return { child, next, ask, kill }
}

interface ClientStats { connected: number; failures: number; timeouts: number; loopMaxMs: number }
interface Row { kind: string; n: number; totalMs: number; p50Ms: number; failures: number; timeouts: number; loopMaxMs: number; loopBeforeMs: number; kbPerConn: number; back: number }

async function run(kind: string, n: number): Promise<Row> {
  const server = proc('./servers/tls-reconnect-server.ts', [join(dir, 'srv.pem'), join(dir, 'srv.key')])
  const { port } = await server.next<{ port: number }>('ready')
  const client = proc('./servers/tls-reconnect-client.ts', [kind, String(port), String(n), join(dir, 'ca.pem'), String(IN_FLIGHT)])
  try {
    const { rssPerConn } = await client.next<{ rssPerConn: number }>('up', LIMIT_MS * 2)
    const before = await client.ask<ClientStats>('stats')
    await server.ask('mark', { target: n })
    await server.ask('drop')
    const t0 = Date.now()
    let st = await server.ask<{ open: number; times: number[]; allAt: number }>('stats')
    while (!st.allAt && Date.now() - t0 < LIMIT_MS) {
      await new Promise((r) => setTimeout(r, 100))
      st = await server.ask('stats')
    }
    const after = await client.ask<ClientStats>('stats')
    const times = st.times.slice(0, n).sort((a, b) => a - b)
    return {
      kind, n, totalMs: st.allAt || Infinity, p50Ms: times.length ? median(times) : Infinity,
      failures: after.failures - before.failures, timeouts: after.timeouts - before.timeouts,
      loopMaxMs: after.loopMaxMs, loopBeforeMs: before.loopMaxMs, kbPerConn: rssPerConn / 1024, back: st.open,
    }
  } finally {
    await client.kill()
    await server.kill()
  }
}

console.log(`tls-reconnect: N TLS connections (ECDSA P-256) dropped at once by the server; sizes ${SIZES.join(', ')}`)
console.log(machineLine())
const rows: Row[] = []
try {
  for (const n of SIZES) for (const k of KINDS) rows.push(await run(k, n))
} finally {
  rmSync(dir, { recursive: true, force: true })
}
const mark = (ok: boolean) => (ok ? 'met' : 'MISSED')
const goal = (n: number) => (n >= 10_000 ? 16_000 : n >= 5000 ? 9000 : Infinity)
console.log(table(
  ['client', 'N', 'all back s', 'p50 s', 'p50/total', 'hs failures', 'hs timeouts', 'loop max ms (before drop)', 'KB/conn', 'targets (time, p50<=0.6, 0 fail, loop<=100, <=80 KB)'],
  rows.map((r) => [
    r.kind, fmt(r.n), Number.isFinite(r.totalMs) ? fmt(r.totalMs / 1000, 2) : `> ${LIMIT_MS / 1000} (${r.back} back)`, fmt(r.p50Ms / 1000, 2),
    fmt(r.p50Ms / r.totalMs, 2), r.failures, r.timeouts, `${fmt(r.loopMaxMs, 0)} (${fmt(r.loopBeforeMs, 0)})`, fmt(r.kbPerConn, 1),
    [goal(r.n) === Infinity ? '-' : mark(r.totalMs <= goal(r.n)), mark(r.p50Ms <= 0.6 * r.totalMs), mark(r.failures + r.timeouts === 0),
      mark(r.loopMaxMs <= 100), mark(r.kbPerConn <= 80)].join(' '),
  ]),
))
console.log(`results: ${writeResults('tls-reconnect', { sizes: SIZES, rows }, ARGS)}`)
