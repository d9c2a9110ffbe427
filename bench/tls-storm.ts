// TLS storm with certificate reload (issue #9; skupper-router #1572): 200 concurrent short TLS
// connections (connect, verify the server against the CA, 1-byte echo, close) for a bounded time
// while the server's certificate and key are rewritten every second (atomic renames, alternating
// two pairs); the CA bundle the server loads has 144 certificates. Every server thread runs a
// 100 ms heartbeat timer that records its lateness. Three servers, each in its own process
// (bench/servers/tls-storm-server.ts), in the same run:
//   node-per-conn  reloads cert/key/bundle from disk for every connection on its I/O thread
//   node-once      builds the context once, rebuilds it on a file change (on its loop)
//   syncsock       Engine (2 shards), listen({ tls: files }): CertStore, pool validation, one
//                  context per shard per update
// Targets (issue #9): >= 600 handshakes/s, 0 failures, heartbeat lateness p99 <= 25 ms, max <= 50 ms.
//   node_modules/.bin/node bench/tls-storm.ts [--quick] [--duration MS] [--conns 200] [--only syncsock,node-once]
import { fork, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { parseBenchArgs, machineLine, table, fmt, writeResults } from './lib.ts'

const ARGS = parseBenchArgs()
const flag = (k: string) => (typeof ARGS.flags[k] === 'string' ? ARGS.flags[k] as string : undefined)
const DURATION = Number(flag('duration') ?? (ARGS.quick ? 4000 : 10_000))
const CONNS = Number(flag('conns') ?? 200)
const KINDS = (flag('only') ?? 'node-per-conn,node-once,syncsock').split(',')
const BUNDLE_SIZE = 144

// ---------------------------------------------------------------- certificates (made per run)
const dir = mkdtempSync(join(tmpdir(), 'tls-storm-'))
const ossl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
ossl(['req', '-x509', ...ec, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'), '-days', '2', '-subj', '/CN=storm CA'])
writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
for (const p of ['a', 'b']) {
  ossl(['req', ...ec, '-keyout', join(dir, `${p}.key`), '-out', join(dir, `${p}.csr`), '-subj', `/CN=storm ${p}`])
  ossl(['x509', '-req', '-in', join(dir, `${p}.csr`), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca.key'),
    '-CAcreateserial', '-out', join(dir, `${p}.pem`), '-days', '2', '-extfile', join(dir, 'san.ext')])
}
// The bundle: the CA plus 143 others (12 distinct self-signed certificates, repeated: parsing
// costs the same per certificate whether it repeats or not).
const fillers: Buffer[] = []
for (let i = 0; i < 12; i++) {
  ossl(['req', '-x509', ...ec, '-keyout', join(dir, `f${i}.key`), '-out', join(dir, `f${i}.pem`), '-days', '2', '-subj', `/CN=filler ${i}`])
  fillers.push(readFileSync(join(dir, `f${i}.pem`)))
}
const caPem = readFileSync(join(dir, 'ca.pem'))
writeFileSync(join(dir, 'bundle.pem'), Buffer.concat([caPem, ...Array.from({ length: BUNDLE_SIZE - 1 }, (_, i) => fillers[i % fillers.length])]))
const pairs = ['a', 'b'].map((p) => ({ cert: readFileSync(join(dir, `${p}.pem`)), key: readFileSync(join(dir, `${p}.key`)) }))
const atomic = (path: string, b: Buffer) => { writeFileSync(`${path}.tmp`, b); renameSync(`${path}.tmp`, path) }
const install = (i: number) => { atomic(join(dir, 'live.pem'), pairs[i].cert); atomic(join(dir, 'live.key'), pairs[i].key) }
install(0)

// ---------------------------------------------------------------- one run
interface Row {
  kind: string; handshakes: number; perSec: number; failures: number; errors: Record<string, number>
  late: { p50: number; p99: number; max: number; n: number }; reloads: number; rejected?: number; rewrites: number
}

function oneConnection(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const c = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: caPem }, () => c.write('x'))
    const t = setTimeout(() => { c.destroy(); resolve('client-timeout') }, 10_000)
    c.once('data', () => { clearTimeout(t); c.destroy(); resolve(null) })
    c.once('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); c.destroy(); resolve(e.code ?? e.message) })
  })
}

async function run(kind: string): Promise<Row> {
  const child: ChildProcess = fork(new URL('./servers/tls-storm-server.ts', import.meta.url), [kind, dir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const next = <T>(t: string) => new Promise<T>((resolve, reject) => {
    const on = (m: { t: string }) => { if (m.t === t) { child.off('message', on); resolve(m as T) } }
    child.on('message', on)
    child.once('exit', (code) => reject(new Error(`${kind} server exited (${code})`)))
  })
  const { port } = await next<{ port: number }>('ready')
  let rewrites = 0
  const rewriter = setInterval(() => install(++rewrites % 2), 1000)
  const errors: Record<string, number> = {}
  let ok = 0
  const end = Date.now() + DURATION
  const t0 = Date.now()
  await Promise.all(Array.from({ length: CONNS }, async () => {
    while (Date.now() < end) {
      const e = await oneConnection(port)
      if (e === null) ok++
      else errors[e] = (errors[e] ?? 0) + 1
    }
  }))
  const secs = (Date.now() - t0) / 1000
  clearInterval(rewriter)
  child.send({ t: 'report' })
  const rep = await next<{ late: Row['late']; reloads: number; rejected?: number }>('report')
  child.kill('SIGTERM')
  await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))
  install(0)
  return {
    kind, handshakes: ok, perSec: ok / secs, failures: Object.values(errors).reduce((a, b) => a + b, 0), errors,
    late: rep.late, reloads: rep.reloads, rejected: rep.rejected, rewrites,
  }
}

console.log(`tls-storm: ${CONNS} concurrent short TLS connections for ${DURATION / 1000} s, cert+key rewritten every 1 s, CA bundle of ${BUNDLE_SIZE}`)
console.log(machineLine())
const rows: Row[] = []
try {
  for (const k of KINDS) rows.push(await run(k))
} finally {
  rmSync(dir, { recursive: true, force: true })
}
const mark = (ok: boolean) => (ok ? 'met' : 'MISSED')
console.log(table(
  ['server', 'handshakes/s', 'failures', 'hb late p50 ms', 'p99 ms', 'max ms', 'reloads', 'targets (>=600/s, 0 fail, p99<=25, max<=50)'],
  rows.map((r) => [
    r.kind, fmt(r.perSec), r.failures, fmt(r.late.p50, 1), fmt(r.late.p99, 1), fmt(r.late.max, 1),
    r.kind === 'node-per-conn' ? `${fmt(r.reloads)} (per conn)` : `${r.reloads}/${r.rewrites}${r.rejected ? ` (${r.rejected} rejected)` : ''}`,
    [mark(r.perSec >= 600), mark(r.failures === 0), mark(r.late.p99 <= 25), mark(r.late.max <= 50)].join(' '),
  ]),
))
for (const r of rows) if (r.failures) console.log(`  ${r.kind} failures: ${JSON.stringify(r.errors)}`)
const path = writeResults('tls-storm', { durationMs: DURATION, conns: CONNS, bundle: BUNDLE_SIZE, rows }, ARGS)
console.log(`results: ${path}`)
