// `syncsock proxy` end to end, data side: bytes intact both ways (50 MB each way at once, every
// byte checked by sha256), request-FIN-response, a FIN forwarded each way while the other
// direction keeps flowing, an RST propagated each way. The CLI runs as a child process; the
// backends are node:net servers in this process (test/proxy-helpers.ts).
import * as assert from 'uvu/assert'
import {
  test, run, startProxy, startBackend, xferClient, backendXfer, checkXfer, connect, readLine, closedFate,
  waitFor, nextStats, num, MiB, type Scope, type TestBackend, type ProxyProc, type Stats,
} from './proxy-helpers.ts'

async function setup(scope: Scope, extra: string[] = []): Promise<{ p: ProxyProc; bs: TestBackend[] }> {
  const bs = [await startBackend(scope, 'A'), await startBackend(scope, 'B')]
  const p = await startProxy(scope, ['--listen', '127.0.0.1:0', '--shards', '2', '--stats-json',
    ...bs.flatMap((b) => ['--backend', `127.0.0.1:${b.port}`]), ...extra])
  return { p, bs }
}

test('bytes intact both ways: 50 MB each way at once, with backpressure, every byte hashed', async (scope) => {
  const { p, bs } = await setup(scope)
  const n = 50_000_000
  const c = await xferClient(scope, p.port, { id: 'big', up: n, down: n, timeoutMs: 90_000 })
  checkXfer(assert.is, 'big', c, await backendXfer(bs, 'big'), n, n)
}, 120_000)

test('two 8 MiB transfers at once (both shards busy) stay separate and intact', async (scope) => {
  const { p, bs } = await setup(scope)
  const ids = ['par-1', 'par-2', 'par-3', 'par-4']
  const cs = await Promise.all(ids.map((id) => xferClient(scope, p.port, { id, up: 8 * MiB, down: 8 * MiB + 17 })))
  for (const [i, id] of ids.entries()) checkXfer(assert.is, id, cs[i], await backendXfer(bs, id), 8 * MiB, 8 * MiB + 17)
}, 90_000)

test('request, FIN, response: the backend answers after reading to EOF; the client gets all of it and EOF', async (scope) => {
  const { p, bs } = await setup(scope)
  // small request, large answer; then a large request, small answer
  for (const [id, up, down] of [['rfr-small', 11, 2 * MiB], ['rfr-large', 3 * MiB, 1000], ['rfr-empty', 0, 4096]] as const) {
    const c = await xferClient(scope, p.port, { id, up, down, waitEof: true })
    checkXfer(assert.is, id, c, await backendXfer(bs, id), up, down)
  }
})

test('half-close each way: a FIN is forwarded while the other direction keeps flowing', async (scope) => {
  const { p, bs } = await setup(scope)
  // the backend finishes first (64 KiB then FIN) while the client is still sending 8 MiB slowly
  const c1 = await xferClient(scope, p.port, { id: 'hc-backend-first', up: 8 * MiB, down: 64 << 10, chunk: 64 << 10, delayMs: 3 })
  checkXfer(assert.is, 'hc-backend-first', c1, await backendXfer(bs, 'hc-backend-first'), 8 * MiB, 64 << 10)
  // the client finishes first (64 KiB then FIN) while the backend sends 8 MiB
  const c2 = await xferClient(scope, p.port, { id: 'hc-client-first', up: 64 << 10, down: 8 * MiB })
  checkXfer(assert.is, 'hc-client-first', c2, await backendXfer(bs, 'hc-client-first'), 64 << 10, 8 * MiB)
})

test('the client gets its FIN before it stops sending: the backend still receives every later byte', async (scope) => {
  // a stricter half-close check: the client waits for the backend's FIN, then sends more
  const { p, bs } = await setup(scope)
  const s = scope.socket(await connect(p.port, { allowHalfOpen: true }))
  s.write('@@XFER hc-strict 5 3 hc-strict:down 0 0\n')
  let got = ''
  const eof = new Promise<void>((r) => s.once('end', () => r()))
  s.on('data', (d) => { got += d.toString('latin1') })
  await eof // the backend wrote 3 bytes and FIN; the proxy forwarded both
  assert.is(got.length, 3)
  s.write('hello')
  s.end()
  const b = await backendXfer(bs, 'hc-strict')
  assert.is(b.recvBytes, 5, 'bytes sent after the FIN came through')
  assert.is(b.error, undefined)
})

test('RST propagated: a backend reset resets the client; a client reset resets the backend side', async (scope) => {
  const { p, bs } = await setup(scope)
  // backend → client
  const c = scope.socket(await connect(p.port))
  c.write('@@WHO\n')
  const name = await readLine(c)
  const fate = closedFate(c, 10_000)
  c.write('@@RST\n')
  const f = await fate
  assert.is(f.error, 'ECONNRESET', `the client saw ${JSON.stringify(f)} after backend ${name} reset`)

  // client → backend
  const d = scope.socket(await connect(p.port))
  d.write('@@ID rst-from-client\n@@WHO\n')
  await readLine(d)
  const bf = () => bs.map((b) => b.fates.get('rst-from-client')).find(Boolean)
  assert.ok(bf(), 'the backend saw the ID line')
  d.resetAndDestroy()
  await waitFor(() => bf()!.closed, 10_000, 'the backend side to close')
  assert.is(bf()!.error, 'ECONNRESET', `the backend side saw ${JSON.stringify(bf())}`)
  assert.is(bf()!.ended, false, 'not a clean FIN')
})

test('redispatch replays what the client already sent: a refused connect goes to the next backend, every byte intact', async (scope) => {
  // health checks far apart: B stays "up" in the table after it is killed, so clients are sent
  // there, get refused, and are redispatched to A with the bytes they already sent (1 MiB each,
  // past the proxy's pending limit: the client is paused meanwhile)
  const { p, bs } = await setup(scope, ['--health-interval', '60000', '--retries', '2', '--balance', 'roundrobin'])
  const [a, b] = bs
  const up = (x: Stats) => (x.backends as { state: string }[] | undefined)?.every((y) => y.state === 'up') === true
  await nextStats(p, up, 10_000, 'both backends up')
  await b.kill()
  // 4 clients in turn over 2 shards: some shard gets two, and each shard's rotation offers B
  // by its second client at the latest (or its first): at least one connect is refused
  for (let i = 0; i < 4; i++) {
    const id = `redis-${i}`
    const c = await xferClient(scope, p.port, { id, up: MiB, down: 64 << 10 })
    checkXfer(assert.is, id, c, await backendXfer([a], id), MiB, 64 << 10)
  }
  const st = await nextStats(p, (x) => num(x, 'redispatches') >= 1, 5000, 'a redispatch counted')
  assert.is(num(st, 'clientsNoBackend'), 0, JSON.stringify(st))
  assert.ok(num(st, 'connectFailures') >= 1, JSON.stringify(st))
})

test('afterwards the stats line shows no client connection left, and counts them all', async (scope) => {
  const { p, bs } = await setup(scope)
  const base = await nextStats(p, () => true, 5000, 'a first stats line')
  for (let i = 0; i < 5; i++) {
    const c = await xferClient(scope, p.port, { id: `st-${i}`, up: 100_000, down: 100_000 })
    checkXfer(assert.is, `st-${i}`, c, await backendXfer(bs, `st-${i}`), 100_000, 100_000)
  }
  // `connections`: proxied connections open now; `clientsTotal`: clients accepted so far
  const s = await nextStats(p, (x) => num(x, 'connections') === 0 && num(x, 'clientsTotal') >= num(base, 'clientsTotal') + 5, 10_000, 'connections back to 0')
  assert.is(num(s, 'clientsNoBackend'), 0)
  assert.ok(num(s, 'bytesIn') >= 500_000 && num(s, 'bytesOut') >= 500_000, `bytes counted: ${JSON.stringify(s)}`)
})

run()
