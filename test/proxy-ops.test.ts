// `syncsock proxy` end to end, operations side: the CLI as a child process (help, bad flags exit
// 2 with one line), balancing (roundrobin, leastconn, source), a dead backend skipped, a proxy
// with no backend answering closes clients with a FIN, a backend killed mid-test is marked down
// and comes back when restarted, SIGTERM drains an in-flight transfer then exits 0, SIGHUP applies
// a new backend list without dropping a live connection. Backends are node:net servers here
// (test/proxy-helpers.ts); every child is killed at the end of its test, every wait is bounded.
import * as assert from 'uvu/assert'
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import net from 'node:net'
import { blockedListener } from './conn-helpers.ts'
import {
  test, run, killChild, startProxy, startBackend, runCli, who, readLine, connect, closedFate, xferClient, backendXfer,
  checkXfer, waitFor, within, sleep, nextStats, num, MiB, HOST, type Scope, type TestBackend, type Stats,
} from './proxy-helpers.ts'

const dir = mkdtempSync(join(tmpdir(), 'syncsock-proxy-ops-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
let files = 0
const file = (content: string) => { const f = join(dir, `cfg-${++files}.json`); writeFileSync(f, content); return f }

/** A loopback port nobody listens on (connects are refused). */
function deadPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, HOST, () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)) })
  })
}
const addr = (b: TestBackend | number) => `${HOST}:${typeof b === 'number' ? b : b.port}`
const backendArgs = (bs: (TestBackend | number)[]) => bs.flatMap((b) => ['--backend', addr(b)])
/** a backend's state in the stats line (`backends: [{host, port, state: 'up' | 'down', …}]`) */
const backendState = (s: Stats, port: number) => (s.backends as { port: number; state: string }[] | undefined)?.find((x) => x.port === port)?.state
const tally = (names: string[]) => names.reduce<Record<string, number>>((m, n) => { m[n] = (m[n] ?? 0) + 1; return m }, {})

async function tagBackends(scope: Scope, names: string[]): Promise<TestBackend[]> {
  return Promise.all(names.map((n) => startBackend(scope, n)))
}

// ------------------------------------------------------------------------------------ CLI

test('proxy --help prints a manual and exits 0', async () => {
  const r = await runCli(['proxy', '--help'])
  assert.is(r.code, 0, `exit code; stderr: ${r.stderr}`)
  const text = r.stdout + r.stderr
  for (const flag of ['--listen', '--backend', '--balance', '--shards', '--retries', '--connect-timeout', '--health-interval', '--grace', '--stats-json', '--config']) {
    assert.ok(text.includes(flag), `--help mentions ${flag}`)
  }
  assert.ok(text.split('\n').length > 10, 'more than a usage line')
})

test('bad flags and config values: exit 2, one stderr line naming what is wrong, nothing listens', async () => {
  const ok = ['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:9']
  const cases: [string, string[], RegExp][] = [
    ['unknown flag', [...ok, '--frobnicate'], /frobnicate/],
    ['listen port out of range', ['--listen', '127.0.0.1:99999', '--backend', '127.0.0.1:9'], /listen|99999/],
    ['listen without a port', ['--listen', '127.0.0.1', '--backend', '127.0.0.1:9'], /listen/],
    ['backend port not a number', ['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:notaport'], /backend|notaport/],
    ['backend port 0', ['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:0'], /backend/],
    ['unknown balance', [...ok, '--balance', 'random'], /balance|random/],
    ['missing --backend', ['--listen', '127.0.0.1:0'], /backend/],
    ['shards 0', [...ok, '--shards', '0'], /shards/],
    ['negative retries', [...ok, '--retries', '-1'], /retries/],
    ['connect-timeout not a number', [...ok, '--connect-timeout', 'soon'], /connect-timeout|soon/],
    ['config not JSON', ['--config', file('{ "listen": "127.0.0.1:0", "backends": [')], /config|JSON/i],
    ['config balance unknown', ['--config', file(JSON.stringify({ listen: '127.0.0.1:0', backends: ['127.0.0.1:9'], balance: 'nope' }))], /balance|nope/],
    ['config backend malformed', ['--config', file(JSON.stringify({ listen: '127.0.0.1:0', backends: ['127.0.0.1'] }))], /backend/],
    ['config file missing', ['--config', join(dir, 'no-such-file.json')], /config|no-such-file/],
  ]
  const results = await Promise.all(cases.map(async ([what, args, re]) => ({ what, args, re, r: await runCli(['proxy', ...args]) })))
  const problems: string[] = []
  for (const { what, args, re, r } of results) {
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '')
    const line = lines[0] ?? ''
    if (r.code !== 2) problems.push(`${what} (${args.join(' ')}): exit ${r.code ?? r.signal}, want 2; stderr: ${r.stderr.slice(0, 300)}`)
    else if (lines.length !== 1) problems.push(`${what}: ${lines.length} stderr lines, want 1: ${JSON.stringify(r.stderr.slice(0, 300))}`)
    else if (!re.test(line)) problems.push(`${what}: the line does not name it (${re}): ${line}`)
    if (r.stdout.includes('listening')) problems.push(`${what}: printed a listening line: ${r.stdout}`)
  }
  assert.equal(problems, [])
}, 90_000)

// ------------------------------------------------------------------------------------ balancing

test('roundrobin: 30 clients in turn see all 3 backends, each a fair share', async (scope) => {
  const bs = await tagBackends(scope, ['A', 'B', 'C'])
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--balance', 'roundrobin', ...backendArgs(bs)])
  assert.is(p.info.listening.host, HOST)
  assert.is(p.info.shards, 2)
  assert.equal(p.info.backends.map((b) => b.port), bs.map((b) => b.port), 'the first line lists the backends')
  const names: string[] = []
  for (let i = 0; i < 30; i++) names.push((await who(scope, p.port)).name)
  const t = tally(names)
  assert.equal(Object.keys(t).sort(), ['A', 'B', 'C'], `spread: ${JSON.stringify(t)}`)
  // round robin per shard (or global): each backend gets 30/3 ± the shards' phase
  for (const n of ['A', 'B', 'C']) assert.ok(t[n] >= 5, `roundrobin share of ${n}: ${JSON.stringify(t)}`)
})

test('leastconn: 30 clients held open at once are spread over the 3 backends', async (scope) => {
  const bs = await tagBackends(scope, ['A', 'B', 'C'])
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--balance', 'leastconn', ...backendArgs(bs)])
  const held = []
  for (let i = 0; i < 30; i++) held.push(await who(scope, p.port, { keep: true }))
  const t = tally(held.map((h) => h.name))
  // least connections per shard: a shard with k of the clients gives each backend k/3 ± 1
  for (const n of ['A', 'B', 'C']) assert.ok((t[n] ?? 0) >= 5, `leastconn spread: ${JSON.stringify(t)}`)
  // the held connections all still work
  for (const h of held) { h.sock.write('@@WHO\n'); assert.ok(['A', 'B', 'C'].includes(await readLine(h.sock))) }
  // release them, then new clients still go everywhere
  for (const h of held) h.sock.end()
  await Promise.all(held.map((h) => closedFate(h.sock)))
  const later: string[] = []
  for (let i = 0; i < 12; i++) later.push((await who(scope, p.port)).name)
  assert.ok(new Set(later).size >= 2, `after release: ${JSON.stringify(tally(later))}`)
})

test('source: the same client address always lands on the same backend; addresses spread', async (scope) => {
  const bs = await tagBackends(scope, ['A', 'B', 'C'])
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--balance', 'source', ...backendArgs(bs)])
  const byAddr = new Map<string, string[]>()
  for (let round = 0; round < 4; round++) {
    for (let i = 2; i < 14; i++) {
      const a = `127.0.0.${i}` // the whole 127/8 is loopback on Linux: distinct client addresses
      const { name } = await who(scope, p.port, { localAddress: a })
      byAddr.set(a, [...(byAddr.get(a) ?? []), name])
    }
  }
  for (const [a, names] of byAddr) assert.is(new Set(names).size, 1, `${a} went to ${names.join(',')}`)
  const chosen = new Set([...byAddr.values()].map((n) => n[0]))
  // 12 addresses on one backend out of 3 by chance: 3·(1/3)^12 ≈ 6e-6 for any reasonable hash
  assert.ok(chosen.size >= 2, `12 source addresses all hashed to ${[...chosen]}`)
})

// ------------------------------------------------------------------------------------ health

test('a dead backend is skipped: every client is served by the others, none gets an RST', async (scope) => {
  const [a, b] = await tagBackends(scope, ['A', 'B'])
  const dead = await deadPort()
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--balance', 'roundrobin', '--retries', '3',
    '--health-interval', '200', '--stats-json', ...backendArgs([dead, a, b])])
  // at once (redispatch: health may not know yet), 20 at a time, then in turn after health had time
  const burst = await Promise.allSettled(Array.from({ length: 20 }, () => who(scope, p.port)))
  const failed = burst.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))
  assert.equal(failed, [], 'every client of the first burst served')
  const names = burst.map((r) => (r as PromiseFulfilledResult<{ name: string }>).value.name)
  await sleep(1000)
  for (let i = 0; i < 20; i++) names.push((await who(scope, p.port)).name)
  const t = tally(names)
  assert.equal(Object.keys(t).sort(), ['A', 'B'], JSON.stringify(t))
  const st = await nextStats(p, (x) => backendState(x, dead) === 'down', 5000, 'the dead backend shown down')
  assert.is(num(st, 'clientsNoBackend'), 0, 'no client went without a backend')
})

test('a backend that never answers a SYN: the connect times out, the client goes to the next one', async (scope) => {
  const [a] = await tagBackends(scope, ['A'])
  // a listener with a full accept queue (backlog 1, two handshakes made here, never accepted):
  // further SYNs are dropped, connects to it hang until their timeout
  const port = await deadPort()
  const blk = await blockedListener(port)
  scope.add(() => killChild(blk))
  for (let i = 0; i < 2; i++) scope.socket(await connect(port))
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--balance', 'roundrobin', '--retries', '2',
    '--connect-timeout', '500', '--health-interval', '200', '--stats-json', ...backendArgs([port, a])])
  // at once: some clients are sent to the blackholed backend before its health check times out
  const first = await Promise.allSettled(Array.from({ length: 8 }, () => who(scope, p.port)))
  assert.equal(first.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)), [])
  for (const r of first) assert.is((r as PromiseFulfilledResult<{ name: string }>).value.name, 'A')
  await nextStats(p, (x) => backendState(x, port) === 'down', 10_000, 'the blackholed backend marked down')
  for (let i = 0; i < 6; i++) assert.is((await who(scope, p.port)).name, 'A')
}, 60_000)

test('no backend answers: the client is closed with a FIN (not an RST) and counted', async (scope) => {
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--retries', '2', '--connect-timeout', '1000',
    '--health-interval', '200', '--stats-json', ...backendArgs([await deadPort(), await deadPort()])])
  for (let i = 0; i < 6; i++) {
    const c = scope.socket(await connect(p.port))
    const fate = closedFate(c, 10_000)
    c.write('@@WHO\n') // a client that speaks first, as most do: unread bytes must not turn the close into an RST
    let got = ''
    c.on('data', (d) => { got += d })
    const f = await fate
    assert.is(f.error, undefined, `client ${i}: closed with an error (an RST?)`)
    assert.ok(f.eof, `client ${i}: closed with a FIN`)
    assert.is(got, '', 'nothing was answered')
  }
  // counted: the stats line's clientsNoBackend (the proxy's name for it)
  const st = await nextStats(p, (x) => num(x, 'clientsNoBackend') >= 6, 5000, 'clientsNoBackend to count the 6 clients')
  assert.is(num(st, 'clientsNoBackend'), 6, JSON.stringify(st))
})

test('a backend killed mid-test is marked down (clients keep working) and comes back when restarted', async (scope) => {
  const bs = await tagBackends(scope, ['A', 'B', 'C'])
  const [, b] = bs
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--balance', 'roundrobin', '--retries', '3',
    '--health-interval', '200', '--stats-json', ...backendArgs(bs)])
  const before: string[] = []
  for (let i = 0; i < 15; i++) before.push((await who(scope, p.port)).name)
  assert.equal(Object.keys(tally(before)).sort(), ['A', 'B', 'C'])

  await b.kill()
  // marked down: the stats line says so within a few health intervals (bounded generously) ...
  await nextStats(p, (x) => backendState(x, b.port) === 'down', 10_000, 'B marked down in the stats line')
  // ... and the clients of the next seconds are all served by A and C
  const during: string[] = []
  const until = Date.now() + 2000
  while (Date.now() < until) during.push((await who(scope, p.port)).name)
  const t = tally(during)
  assert.equal(Object.keys(t).sort(), ['A', 'C'], `while B is down: ${JSON.stringify(t)}`)

  await b.restart()
  // comes back by itself: new clients reach B within a few health intervals (bounded generously)
  await waitFor(async () => (await who(scope, p.port)).name === 'B', 10_000, 'B to get clients again', 100)
  const after: string[] = []
  for (let i = 0; i < 15; i++) after.push((await who(scope, p.port)).name)
  assert.equal(Object.keys(tally(after)).sort(), ['A', 'B', 'C'], `after the restart: ${JSON.stringify(tally(after))}`)
  await nextStats(p, (x) => backendState(x, b.port) === 'up', 10_000, 'B up again in the stats line')
}, 60_000)

// ------------------------------------------------------------------------------------ signals

test('SIGTERM: new connects refused, the in-flight transfer finishes intact, then exit 0', async (scope) => {
  const [a] = await tagBackends(scope, ['A'])
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--grace', '20000', ...backendArgs([a])])
  const exitedAt = p.exited.then((e) => ({ ...e, at: Date.now() }))
  // a slow client: 4 MiB in 64 KiB chunks 40 ms apart (~2.6 s), the answer (4 MiB) after its FIN
  const up = 4 * MiB, down = 4 * MiB
  const x = xferClient(scope, p.port, { id: 'term', up, down, waitEof: true, delayMs: 40, timeoutMs: 30_000 })
  await waitFor(() => a.xferIn >= 512 << 10, 10_000, 'the transfer to be under way')
  p.child.kill('SIGTERM')
  // the listener closes: a connect is refused (poll: the signal takes a moment to land)
  await waitFor(async () => {
    try { const c = await connect(p.port); c.destroy(); return false } catch (e) { return (e as NodeJS.ErrnoException).code === 'ECONNREFUSED' }
  }, 5000, 'connects to be refused after SIGTERM', 50)
  assert.ok(p.alive(), 'still running while the transfer is in flight')
  const c = await x
  checkXfer(assert.is, 'term', c, await backendXfer([a], 'term'), up, down)
  const e = await within(exitedAt, 15_000, 'proxy exit after the drain')
  assert.is(e.code, 0, `exit code after SIGTERM (signal ${e.signal}); stderr: ${p.stderr()}`)
  assert.ok(e.at >= c.eofAt, 'exited after the transfer finished')
}, 60_000)

test('SIGTERM with a connection that does not finish: closed when --grace runs out, exit 0', async (scope) => {
  const [a] = await tagBackends(scope, ['A'])
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--grace', '1000', ...backendArgs([a])])
  const held = await who(scope, p.port, { keep: true })
  const fate = closedFate(held.sock, 15_000)
  p.child.kill('SIGTERM')
  const f = await fate // closed by the proxy once the grace period is over (FIN or RST: its choice)
  const e = await within(p.exited, 15_000, 'proxy exit after the grace period')
  assert.is(e.code, 0, `exit code; stderr: ${p.stderr()}`)
  console.log(`  [proxy-ops] a client left after --grace: ${JSON.stringify(f)}`)
})

test('SIGINT with nothing in flight exits 0', async (scope) => {
  const [a] = await tagBackends(scope, ['A'])
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', ...backendArgs([a])])
  assert.is((await who(scope, p.port)).name, 'A')
  p.child.kill('SIGINT')
  const e = await within(p.exited, 15_000, 'proxy exit after SIGINT')
  assert.is(e.code, 0, `stderr: ${p.stderr()}`)
})

test('SIGHUP re-reads --config: new clients reach the new backend, a connection opened before keeps working', async (scope) => {
  const [a, b] = await tagBackends(scope, ['A', 'B'])
  const cfg = file(JSON.stringify({ listen: '127.0.0.1:0', backends: [addr(a)], balance: 'roundrobin' }))
  const p = await startProxy(scope, ['--config', cfg, '--shards', '2', '--health-interval', '200'])
  const old = await who(scope, p.port, { keep: true })
  assert.is(old.name, 'A')
  for (let i = 0; i < 5; i++) assert.is((await who(scope, p.port)).name, 'A')

  writeFileSync(cfg, JSON.stringify({ listen: '127.0.0.1:0', backends: [addr(b)], balance: 'roundrobin' }))
  p.child.kill('SIGHUP')
  await waitFor(async () => (await who(scope, p.port)).name === 'B', 10_000, 'a new client to reach B after SIGHUP', 100)
  const after: string[] = []
  for (let i = 0; i < 10; i++) after.push((await who(scope, p.port)).name)
  assert.equal(tally(after), { B: 10 }, 'every new client goes to the new list')
  assert.ok(p.alive(), 'SIGHUP did not stop the proxy')

  // the connection from before the reload is still up, still to A, both ways
  old.sock.write('@@WHO\n')
  assert.is(await readLine(old.sock), 'A')
  old.sock.write('still here\n')
  assert.is(await readLine(old.sock), 'still here')

  // a config that does not parse: reported, the old one keeps serving
  writeFileSync(cfg, '{ "backends": [')
  const errBefore = p.stderr().length
  p.child.kill('SIGHUP')
  await waitFor(() => /config|JSON|parse/i.test(p.stderr().slice(errBefore)), 5000, 'the bad reload to be reported on stderr', 50)
  console.log(`  [proxy-ops] bad config on SIGHUP reported: ${p.stderr().slice(errBefore).trim()}`)
  for (let i = 0; i < 5; i++) assert.is((await who(scope, p.port)).name, 'B')
  assert.ok(p.alive(), 'a bad config on SIGHUP does not stop the proxy')

  // and a second reload back to both, with leastconn
  writeFileSync(cfg, JSON.stringify({ listen: '127.0.0.1:0', backends: [addr(a), addr(b)], balance: 'leastconn' }))
  p.child.kill('SIGHUP')
  await waitFor(async () => (await who(scope, p.port)).name === 'A', 10_000, 'A back in the list after the second SIGHUP', 100)
  old.sock.end()
  assert.ok((await closedFate(old.sock)).eof, 'the old connection ends with a FIN')
}, 60_000)

run()
