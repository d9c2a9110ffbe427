// Certificate reload (issue #9, skupper-router #1572): the main thread's CertStore watches the
// files, a pool task validates a change, every shard swaps its context once. New connections see
// the new certificate within a bounded time, old ones keep their session and their bytes; every
// broken update (garbage, a key of another certificate, expired, a missing or half-written file)
// keeps the old material serving and is reported (typed error, event, counter);
// engine.reloadCerts() resolves when every shard swapped or rejects with the reason.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import tls, { type TLSSocket } from 'node:tls'
import { copyFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Engine, SyncsockError } from '../src/index.ts'
import { recordEvents, waitFor, sleep, leakedHandles, type HookEvent } from './net-helpers.ts'
import { CertFactory, type Pair } from './fixtures/tls-certs.ts'

const HOOKS = new URL('./fixtures/tls-hooks.ts', import.meta.url).pathname
const rec = recordEvents(`ss-tls-reload-${process.pid}`)
const events = rec.events as (HookEvent & { code?: string })[]
const certs = new CertFactory()
const ca = certs.ca()
const v1 = certs.leaf(ca, 'v1')
const v2 = certs.leaf(ca, 'v2')
const v3 = certs.leaf(ca, 'v3')
const expired = certs.leaf(ca, 'expired', -1)
const otherCa = certs.ca('other CA')
const CERT = join(certs.dir, 'live.pem')
const KEY = join(certs.dir, 'live.key')

function tlsClient(port: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const c = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: ca.certPem }, () => { c.off('error', reject); resolve(c) })
    c.once('error', reject)
  })
}
/** The CN a new connection is served. */
async function servedCN(port: number): Promise<string> {
  const c = await tlsClient(port)
  const cn = c.getPeerCertificate().subject.CN as string
  c.destroy()
  return cn
}
function echo(c: TLSSocket, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = ''
    const t = setTimeout(() => reject(new Error(`echo: got ${got}`)), 3000)
    const on = (d: Buffer) => { got += d; if (got.includes(msg)) { clearTimeout(t); c.off('data', on); resolve(got) } }
    c.on('data', on)
    c.write(msg)
  })
}
/** Atomic replace (write a temp file, rename it over the live one), as cert managers do. */
function atomicWrite(path: string, bytes: Buffer | string): void {
  const tmp = `${path}.tmp-${Date.now()}`
  writeFileSync(tmp, bytes)
  renameSync(tmp, path)
}
function install(p: Pair, atomic = true): void {
  if (atomic) { atomicWrite(CERT, p.certPem); atomicWrite(KEY, p.keyPem) } else { writeFileSync(CERT, p.certPem); writeFileSync(KEY, p.keyPem) }
}

async function withEngine(fn: (e: Engine) => Promise<void>): Promise<void> {
  const engine = await Engine.start({ shards: 2, hooks: HOOKS })
  try { await fn(engine) } finally { await engine.stop({ graceMs: 500 }) }
  assert.is(engine.stats().active, 0)
}

test('rewrite cert and key on disk: new connections get the new certificate within a bounded time; old ones keep working', async () => {
  copyFileSync(v1.cert, CERT)
  copyFileSync(v1.key, KEY)
  await withEngine(async (engine) => {
    const reloads: Record<string, unknown>[] = []
    engine.on('cert-reload', (d) => reloads.push(d))
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: CERT, key: KEY } })
    assert.is(await servedCN(l.port), 'v1')
    const old = await tlsClient(l.port)
    assert.match(await echo(old, 'before'), /before/)

    const t0 = Date.now()
    install(v2) // atomic renames: the directory watch sees them (a watch on the file would not)
    await waitFor(() => reloads.length >= 1, 3000, 'the reload')
    assert.is(await servedCN(l.port), 'v2')
    console.log(`  new certificate served ${Date.now() - t0} ms after the rename`)
    assert.match(await echo(old, 'after'), /after/, 'the old connection keeps its session and its bytes')
    assert.is(old.getPeerCertificate().subject.CN, 'v1')

    install(v3, false) // rewritten in place
    await waitFor(() => reloads.length >= 2, 3000, 'the second reload')
    assert.is(await servedCN(l.port), 'v3')
    const st = engine.stats()
    assert.is(st.certReloads, 2)
    assert.is(st.certSwaps, 4, 'each of 2 shards swapped once per update')
    assert.is(st.certReloadsRejected, 0)
    old.destroy()
  })
})

test('every broken update keeps the old material serving and is reported (typed error, event, counter)', async () => {
  copyFileSync(v1.cert, CERT)
  copyFileSync(v1.key, KEY)
  await withEngine(async (engine) => {
    const rejected: { reason: string; code: string; file?: string }[] = []
    engine.on('cert-rejected', (d) => rejected.push(d))
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: CERT, key: KEY, ca: ca.cert } })
    const cases: [string, () => void, string][] = [
      ['garbage PEM', () => writeFileSync(CERT, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n'), 'not-pem'],
      ['a key of another certificate', () => writeFileSync(KEY, v2.keyPem), 'key-mismatch'],
      ['an expired certificate', () => { atomicWrite(CERT, expired.certPem); atomicWrite(KEY, expired.keyPem) }, 'expired'],
      ['a certificate of another CA', () => { const o = certs.leaf(otherCa, 'x'); atomicWrite(CERT, o.certPem); atomicWrite(KEY, o.keyPem) }, 'untrusted'],
      ['a missing file', () => rmSync(CERT), 'unreadable'],
      ['a half-written file', () => writeFileSync(CERT, v2.certPem.subarray(0, Math.floor(v2.certPem.length / 2))), 'not-pem'],
    ]
    for (const [what, breakIt, reason] of cases) {
      install(v1)
      await sleep(300) // v1 again (no change: not a reload)
      const before = rejected.length
      breakIt()
      await waitFor(() => rejected.slice(before).some((r) => r.reason === reason), 4000, `${what} rejected as ${reason}`)
      const r = rejected.slice(before).find((x) => x.reason === reason)!
      assert.is(r.code, 'ERR_SS_TLS_MATERIAL', what)
      assert.is(await servedCN(l.port), 'v1', `${what}: the old certificate keeps serving`)
    }
    assert.ok(engine.stats().certReloadsRejected >= cases.length)
    assert.is(engine.stats().certReloads, 0, 'nothing broken was ever swapped in')
    install(v2)
    await waitFor(() => engine.stats().certReloads === 1, 3000, 'a good update after the broken ones')
    assert.is(await servedCN(l.port), 'v2')
  })
})

test('engine.reloadCerts() resolves once every shard swapped, rejects with the reason when the material is broken', async () => {
  copyFileSync(v1.cert, CERT)
  copyFileSync(v1.key, KEY)
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'whoami', tls: { cert: CERT, key: KEY } })
    const swaps = engine.stats().certSwaps
    await engine.reloadCerts()
    assert.is(engine.stats().certSwaps, swaps + 2, 'resolved after both shards swapped')
    // broken on disk: reloadCerts rejects with the reason; v1 keeps serving
    writeFileSync(KEY, v2.keyPem)
    const e = await engine.reloadCerts().then(() => null, (x) => x)
    assert.ok(SyncsockError.is(e, 'ERR_SS_TLS_MATERIAL'), String(e))
    assert.match((e as Error).message, /key-mismatch/)
    assert.is(await servedCN(l.port), 'v1')
    writeFileSync(KEY, v1.keyPem)
    await engine.reloadCerts()
  })
})

test("a server connection's CA file is watched too: fixing it lets the next retry succeed", async () => {
  const CA = join(certs.dir, 'client-ca.pem')
  copyFileSync(otherCa.cert, CA) // wrong CA at first
  const server = tls.createServer({ cert: v1.certPem, key: v1.keyPem }, (s) => { s.on('error', () => {}); s.pipe(s) })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  await withEngine(async (engine) => {
    const [id] = await engine.connect({ host: '127.0.0.1', port, protocol: 'tlsup', tls: { ca: CA } })
    await waitFor(() => events.some((e) => e.ev === 'retry' && e.id === id && e.code === 'ERR_SS_TLS'), 5000, 'TLS failures first')
    atomicWrite(CA, ca.certPem)
    await waitFor(() => events.some((e) => e.ev === 'new' && e.id === id), 5000, 'established with the new CA')
    engine.close(id)
  })
  await new Promise((r) => server.close(r))
})

test('no handle left', async () => {
  rec.close()
  certs.cleanup()
  await sleep(50)
  assert.equal(leakedHandles(), [])
})

test.run()
