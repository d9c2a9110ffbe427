// Strict input, one style of call: every public option object rejects unknown keys with
// ERR_SS_BAD_OPTION naming the key, every value is checked for type and range, a bad call changes
// nothing, and close has one signature on engine, ctx and sock ('graceful' | 'abort' | { mode }).
// Also: a partly failed engine.connect is all or nothing (hardening bug 6).
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import type net from 'node:net'
import { Engine, SyncsockError, backoffDelay, type ErrorCode } from '../src/index.ts'
import { connect, roundTrip, waitFor, sleep, leakedHandles } from './net-helpers.ts'
import { PROBE, SELF, SELF_ID, probeChannel, endOf } from './probe-helpers.ts'

const probe = probeChannel('options-test')
const engine = await Engine.start({ shards: 2, hooks: PROBE })
const shardExits: unknown[] = []
engine.on('shard-exit', (d) => shardExits.push(d))
const probes = await engine.listen({ port: 0, protocol: 'probe' })
const echo = await engine.listen({ port: 0, protocol: 'echo' })
const clients: net.Socket[] = []

async function client(port = probes.port): Promise<net.Socket> {
  const c = await connect(port)
  c.on('error', () => {})
  clients.push(c)
  return c
}

/** fn must throw (or reject with) a SyncsockError of `code` whose message matches `msg`. */
async function bad(fn: () => unknown, code: ErrorCode = 'ERR_SS_BAD_OPTION', msg?: RegExp): Promise<void> {
  let threw: unknown = null
  try { await fn() } catch (e) { threw = e }
  assert.ok(threw !== null, `expected ${code}, but it succeeded: ${fn}`)
  assert.ok(SyncsockError.is(threw), `expected a SyncsockError, got ${threw}: ${fn}`)
  assert.is((threw as SyncsockError).code, code, `${(threw as Error).message}: ${fn}`)
  if (msg) assert.match((threw as Error).message, msg)
}

/** The same, for a call made inside a hook through the probe. */
async function badInHook(c: net.Socket, op: string, args: unknown[], code: ErrorCode = 'ERR_SS_BAD_OPTION'): Promise<void> {
  const r = await probe.call(c, op, args)
  assert.is(r.ok, false, `${op}(${args.map(String)}) should throw ${code}; it answered ${r.value}`)
  assert.ok(r.typed, `${op}: a SyncsockError, not ${r.name}: ${r.message}`)
  assert.is(r.code, code, `${op}: ${r.message}`)
}

async function idOf(c: net.Socket): Promise<number> {
  const r = await probe.call(c, 'self')
  assert.ok(r.ok)
  return Number(r.value)
}

const stillEchoes = async () => {
  const c = await client(echo.port)
  assert.is((await roundTrip(c, 'still here')).toString(), 'still here')
  c.destroy()
}

// ---------------- Engine.start ----------------

test('Engine.start: an unknown key is ERR_SS_BAD_OPTION naming it (a misspelt maxSocketPerShard is not the default)', async () => {
  await bad(() => Engine.start({ shards: 1, maxSocketPerShard: 4 } as never), 'ERR_SS_BAD_OPTION', /"maxSocketPerShard".*Engine\.start/)
  await bad(() => Engine.start({ shards: 1, restart: false } as never), 'ERR_SS_BAD_OPTION', /"restart"/)
  await bad(() => Engine.start({ shards: 1, hook: PROBE } as never), 'ERR_SS_BAD_OPTION', /"hook"/)
})

test('Engine.start: every value is checked for type and range', async () => {
  const cases: [Record<string, unknown> | unknown, RegExp][] = [
    [{ restartShards: 'yes' }, /restartShards/], [{ restartShards: 1 }, /restartShards/],
    [{ shards: '2' }, /shards/], [{ shards: 0 }, /shards/], [{ shards: 1.5 }, /shards/], [{ shards: 256 }, /shards/],
    [{ shards: 1, hooks: 42 }, /hooks/], [{ shards: 1, hooks: '' }, /hooks/],
    [{ shards: 1, maxSocketsPerShard: 0 }, /maxSocketsPerShard/], [{ shards: 1, maxSocketsPerShard: '64' }, /maxSocketsPerShard/],
    [{ shards: 1, ringBytes: 3000 }, /ringBytes/], [{ shards: 1, ringBytes: '16384' }, /ringBytes/],
    [{ shards: 1, highWater: Number.NaN }, /highWater/], [{ shards: 1, highWater: 1 << 20, maxQueue: 4096 }, /maxQueue/],
    [{ shards: 1, bootTimeoutMs: 0 }, /bootTimeoutMs/], [{ shards: 1, bootTimeoutMs: 3_600_001 }, /bootTimeoutMs/],
    [{ shards: 1, bootTimeoutMs: 1.5 }, /bootTimeoutMs/],
    [{ shards: 1, maxRestarts: -1 }, /maxRestarts/], [{ shards: 1, maxRestarts: 1001 }, /maxRestarts/],
    [{ shards: 1, maxRestarts: '5' }, /maxRestarts/],
    [{ shards: 1, restartWindowMs: 0 }, /restartWindowMs/], [{ shards: 1, restartWindowMs: Infinity }, /restartWindowMs/],
    [{ shards: 1, config: { f() {} } }, /config.*structured-cloneable/], [{ shards: 1, config: Symbol('x') }, /config/],
    [null, /Engine\.start options/], [[], /Engine\.start options/], [42, /Engine\.start options/], ['x', /Engine\.start options/],
  ]
  for (const [opts, msg] of cases) await bad(() => Engine.start(opts as never), 'ERR_SS_BAD_OPTION', msg)
})

test('Engine.start: a tasks module that does not exist and bad blocking options are refused at start', async () => {
  await bad(() => Engine.start({ shards: 1, tasks: new URL('./tasks.js', import.meta.url) }), 'ERR_SS_BAD_OPTION', /"tasks".*no module/)
  await bad(() => Engine.start({ shards: 1, blocking: { maxThreads: 0 } }), 'ERR_SS_BAD_OPTION', /blocking\.maxThreads/)
  await bad(() => Engine.start({ shards: 1, blocking: { threads: 1 } } as never), 'ERR_SS_BAD_OPTION', /"threads".*blocking/)
})

test('Engine.start: bootTimeoutMs, maxRestarts, restartWindowMs and config are accepted, with defaults; config is a snapshot', async () => {
  assert.is(engine.options.bootTimeoutMs, 10_000)
  assert.is(engine.options.maxRestarts, 5)
  assert.is(engine.options.restartWindowMs, 60_000)
  assert.is(engine.options.restartShards, true)
  assert.is(engine.options.config, undefined)
  const config = { backends: [{ host: '127.0.0.1', port: 1 }], big: 2n ** 70n, when: new Date(0), tags: new Map([['a', 1]]) }
  const e2 = await Engine.start({
    shards: 1, bootTimeoutMs: 5000, maxRestarts: 0, restartWindowMs: 1000, restartShards: false, config,
  })
  try {
    assert.is(e2.options.bootTimeoutMs, 5000)
    assert.is(e2.options.maxRestarts, 0)
    assert.is(e2.options.restartWindowMs, 1000)
    assert.is(e2.options.restartShards, false)
    assert.equal(e2.options.config, config)
    assert.ok(e2.options.config !== config, 'a structured clone: later changes by the caller are not seen')
  } finally { await e2.stop({ graceMs: 200 }) }
})

// ---------------- listen / connect ----------------

test('listen: unknown keys, bad values and incomplete tls are refused; nothing is opened', async () => {
  const before = engine.stats().listeners
  await bad(() => engine.listen({ port: 0, protocol: 'echo', reuse: true } as never), 'ERR_SS_BAD_OPTION', /"reuse".*listen/)
  await bad(() => engine.listen({ port: 0, protocol: 'echo', tls: {} } as never), 'ERR_SS_BAD_OPTION', /tls/)
  await bad(() => engine.listen(null as never))
  await bad(() => engine.listen('8080' as never))
  await bad(() => engine.listen({ port: '8080', protocol: 'echo' } as never), 'ERR_SS_BAD_OPTION', /port/)
  await bad(() => engine.listen({ port: 0, host: '', protocol: 'echo' }), 'ERR_SS_BAD_OPTION', /host/)
  await bad(() => engine.listen({ port: 0, protocol: 5 } as never), 'ERR_SS_BAD_OPTION', /protocol/)
  await bad(() => engine.listen({ port: 0, protocol: 'echo', backlog: 0 }), 'ERR_SS_BAD_OPTION', /backlog/)
  await bad(() => engine.listen({ port: 0, protocol: 'nope' }), 'ERR_SS_BAD_OPTION', /nope/)
  assert.is(engine.stats().listeners, before)
})

test("engine.connect: unknown keys, retry: 'x', a cap below its base, bad liveness, count and shard are refused; no connection is made", async () => {
  const base = { host: '127.0.0.1', port: echo.port, protocol: 'echo' }
  const before = engine.stats().serverConns
  const cases: [unknown, RegExp, ErrorCode?][] = [
    [{ ...base, retries: 3 }, /"retries".*engine\.connect/],
    [{ ...base, retry: 'x' }, /retry/], [{ ...base, retry: null }, /retry/], [{ ...base, retry: [] }, /retry/],
    [{ ...base, retry: { baseMs: 100, cap: 50 } }, /"cap".*retry/],
    [{ ...base, retry: { baseMs: 500, capMs: 100 } }, /retry\.capMs/],
    [{ ...base, retry: { jitter: 'none' } }, /retry\.jitter/],
    [{ ...base, retry: { maxAttempts: 0 } }, /retry\.maxAttempts/],
    [{ ...base, liveness: 'x' }, /liveness/],
    [{ ...base, liveness: { intervalMs: 100, timeoutMs: 50, probe: 'ping' } }, /"probe".*liveness/],
    [{ ...base, liveness: { intervalMs: 100 } }, /liveness\.timeoutMs/],
    [{ ...base, count: 0 }, /count/], [{ ...base, count: 1.5 }, /count/], [{ ...base, count: '2' }, /count/],
    [{ ...base, shard: 2 }, /shard/], [{ ...base, shard: '0' }, /shard/],
    [{ ...base, port: 0 }, /port/], [{ ...base, host: 7 }, /host/], [{ ...base, connectTimeoutMs: -1 }, /connectTimeoutMs/],
    [{ ...base, tls: { servername: '' } }, /tls\.servername/], [{ ...base, tls: { sni: 'x' } }, /"sni".*tls/],
    [null, /engine\.connect/], ['x', /engine\.connect/],
  ]
  for (const [opts, msg, code] of cases) await bad(() => engine.connect(opts as never), code ?? 'ERR_SS_BAD_OPTION', msg)
  // a protocol only the shards know fails on every shard: nothing is left running either
  await bad(() => engine.connect({ ...base, protocol: 'nope', count: 2 }), 'ERR_SS_BAD_OPTION', /protocol/)
  assert.is(engine.stats().serverConns, before)
})

test('a known key set to undefined means its default (only unknown keys are refused)', async () => {
  const l = await engine.listen({ port: 0, protocol: 'echo', host: undefined, backlog: undefined, tls: undefined } as never)
  await l.close()
  const ids = await engine.connect({
    host: '127.0.0.1', port: echo.port, protocol: 'echo', count: undefined, shard: undefined, retry: undefined,
    liveness: undefined, tls: undefined, connectTimeoutMs: undefined,
  } as never)
  assert.is(ids.length, 1)
  assert.is(engine.close(ids[0], 'abort'), 'ok')
  await waitFor(() => engine.stats().serverConns === 0, 3000, 'closed')
})

// ---------------- stop ----------------

test('stop(42), stop(null), stop("x"), stop({ grace }) reject with ERR_SS_BAD_OPTION and do not stop the engine', async () => {
  for (const v of [42, null, 'x', [], true, { grace: 100 }, { graceMs: -1 }, { graceMs: 'x' }, { graceMs: 1.5 }]) {
    await bad(() => engine.stop(v as never), 'ERR_SS_BAD_OPTION')
  }
  assert.is(engine.stopping, false)
  await stillEchoes()
})

// ---------------- one close signature ----------------

test("engine.close(id, 'abort') and engine.close(id, { mode: 'abort' }) both abort: the client sees a reset, not a FIN", async () => {
  for (const mode of ['abort', { mode: 'abort' }] as const) {
    const c = await client()
    const id = await idOf(c)
    const end = endOf(c)
    assert.is(engine.close(id, mode), 'ok')
    assert.is(await end, 'reset', `engine.close(id, ${JSON.stringify(mode)})`)
  }
})

test("engine.close(id), (id, 'graceful'), (id, {}) and (id, { mode: 'graceful' }) close gracefully: FIN", async () => {
  for (const mode of [undefined, 'graceful', {}, { mode: 'graceful' }] as const) {
    const c = await client()
    const id = await idOf(c)
    const end = endOf(c)
    assert.is(engine.close(id, mode), 'ok')
    assert.is(await end, 'fin', `engine.close(id, ${JSON.stringify(mode)})`)
  }
})

test('engine.close with any other second argument throws ERR_SS_BAD_OPTION and closes nothing', async () => {
  const c = await client()
  const id = await idOf(c)
  for (const m of ['later', 'ABORT', { mode: 'later' }, { mode: 'abort', now: true }, { how: 'abort' }, 42, null, [], true]) {
    await bad(() => engine.close(id, m as never), 'ERR_SS_BAD_OPTION')
  }
  assert.is(await idOf(c), id, 'the socket is still open and its hooks still run')
  await bad(() => engine.close('1' as never))
  await bad(() => engine.close(Number.NaN))
  await bad(() => engine.close(-1))
  await bad(() => engine.unlink('1' as never))
})

test("ctx.close(id, m) and sock.close(m) take the same forms: 'abort' and { mode: 'abort' } reset, the rest FIN", async () => {
  const cases: [string, unknown[], 'reset' | 'fin'][] = [
    ['ctx.close', [SELF_ID, 'abort'], 'reset'], ['ctx.close', [SELF_ID, { mode: 'abort' }], 'reset'],
    ['ctx.close', [SELF_ID], 'fin'], ['ctx.close', [SELF_ID, { mode: 'graceful' }], 'fin'],
    ['sock.close', ['abort'], 'reset'], ['sock.close', [{ mode: 'abort' }], 'reset'],
    ['sock.close', [], 'fin'], ['sock.close', [{}], 'fin'], ['sock.close', ['graceful'], 'fin'],
  ]
  for (const [op, args, want] of cases) {
    const c = await client()
    const end = endOf(c)
    const r = await probe.call(c, op, args)
    assert.ok(r.ok, `${op}: ${r.message}`)
    assert.is(await end, want, `${op}(${JSON.stringify(args)})`)
  }
})

test('ctx.close and sock.close with a bad mode throw ERR_SS_BAD_OPTION inside the hook and close nothing', async () => {
  const c = await client()
  const id = await idOf(c)
  for (const m of ['later', { mode: 'x' }, { mode: 'abort', extra: 1 }, 42, null, [], 1n]) {
    await badInHook(c, 'ctx.close', [SELF_ID, m])
    await badInHook(c, 'sock.close', [m])
  }
  await badInHook(c, 'ctx.close', ['1', 'abort'])
  await badInHook(c, 'ctx.close', [Number.NaN])
  assert.is(await idOf(c), id, 'still open')
})

// ---------------- hooks-side services ----------------

test('ctx.timer: a negative, NaN, string, infinite or >= 2^31 ms delay, a non-function or a non-socket is ERR_SS_BAD_OPTION (and never fires)', async () => {
  const c = await client()
  const fn = () => {}
  const refused: number[] = []
  for (const ms of [-1, Number.NaN, '10', 2 ** 31, 1e12, Infinity, -Infinity, null, undefined, 10n, {}]) {
    const r = await probe.call(c, 'ctx.timer', [SELF, ms, fn])
    assert.is(r.ok, false, `ctx.timer(sock, ${String(ms)}) must be refused`)
    assert.is(r.code, 'ERR_SS_BAD_OPTION', `${String(ms)}: ${r.message}`)
    refused.push(r.cmd)
  }
  for (const f of ['fn', null, undefined, 42, {}]) await badInHook(c, 'ctx.timer', [SELF, 10, f])
  for (const s of [SELF_ID, {}, null, 'sock']) await badInHook(c, 'ctx.timer', [s, 10, fn])
  // the edges are accepted: 0 and 2^31-1 (the latter is cancelled with the socket)
  const zero = await probe.call(c, 'ctx.timer', [SELF, 0, fn])
  const max = await probe.call(c, 'ctx.timer', [SELF, 2 ** 31 - 1, fn])
  assert.ok(zero.ok && max.ok, `${zero.message} ${max.message}`)
  await waitFor(() => probe.fired.has(zero.cmd), 2000, 'the 0 ms timer fires')
  await sleep(50) // 1e12 ms used to fire after 1 ms
  assert.ok(refused.every((n) => !probe.fired.has(n)), 'no refused timer fired')
  assert.ok(!probe.fired.has(max.cmd))
})

test('ctx.send / sock.send: a non-binary payload or a bad id is ERR_SS_BAD_OPTION; bytes to a good id are sent', async () => {
  const c = await client()
  for (const b of ['text', 42, null, undefined, [1, 2], { length: 1 }]) {
    await badInHook(c, 'ctx.send', [SELF_ID, b])
    await badInHook(c, 'sock.send', [b])
  }
  for (const id of ['1', Number.NaN, -1, 1.5, null, 2 ** 53]) await badInHook(c, 'ctx.send', [id, Buffer.from('x')])
  const got = new Promise<string>((resolve) => c.once('data', (d) => resolve(d.toString())))
  const r = await probe.call(c, 'ctx.send', [SELF_ID, Buffer.from('hi')])
  assert.equal([r.ok, r.value], [true, 'ok'])
  assert.is(await got, 'hi')
  const id = await idOf(c)
  await bad(() => engine.send(id, 'text' as never))
})

test('ctx.connect makes one shard-local connection: count, shard, unknown keys and bad retry are refused', async () => {
  const c = await client()
  const base = { host: '127.0.0.1', port: echo.port, protocol: 'echo' }
  await badInHook(c, 'ctx.connect', [{ ...base, count: 2 }])
  await badInHook(c, 'ctx.connect', [{ ...base, count: 1 }])
  await badInHook(c, 'ctx.connect', [{ ...base, shard: 0 }])
  await badInHook(c, 'ctx.connect', [{ ...base, retries: 1 }])
  await badInHook(c, 'ctx.connect', [{ ...base, retry: 'x' }])
  await badInHook(c, 'ctx.connect', [{ ...base, retry: { baseMs: 200, capMs: 100 } }])
  await badInHook(c, 'ctx.connect', [{ ...base, protocol: 'nope' }])
  await badInHook(c, 'ctx.connect', [{ ...base, tls: { ca: '/no/such/ca.pem' } }]) // a shard reads no files: PEM only
  await badInHook(c, 'ctx.connect', [null])
  const ok = await probe.call(c, 'ctx.connect', [base]) // the fixture aborts it at once
  assert.ok(ok.ok && Number.isInteger(Number(ok.value)), ok.message)
  await waitFor(() => engine.stats().serverConns === 0, 3000, 'the probe connection is gone')
})

// ---------------- backoffDelay ----------------

test('backoffDelay: a partial or empty retry object gets the documented defaults; bad input is ERR_SS_BAD_OPTION, never NaN', async () => {
  assert.is(backoffDelay({}, 1, 0, () => 1), 100, 'baseMs 100')
  assert.is(backoffDelay(undefined, 1, 0, () => 1), 100)
  assert.is(backoffDelay({}, 20, 0, () => 1), 1000, 'capMs 1000')
  assert.is(backoffDelay({ baseMs: 10 }, 2, 0, () => 1), 20, 'full jitter')
  assert.is(backoffDelay({ jitter: 'decorrelated' }, 3, 200, () => 1), 600)
  const d = backoffDelay({}, 1, 0)
  assert.ok(Number.isInteger(d) && d >= 0 && d <= 100, `${d}`)
  await bad(() => backoffDelay({ baseMs: 500, capMs: 100 }, 1, 0), 'ERR_SS_BAD_OPTION', /capMs/)
  await bad(() => backoffDelay({ base: 100 } as never, 1, 0), 'ERR_SS_BAD_OPTION', /"base"/)
  await bad(() => backoffDelay('x' as never, 1, 0), 'ERR_SS_BAD_OPTION', /retry/)
  await bad(() => backoffDelay(null as never, 1, 0), 'ERR_SS_BAD_OPTION', /retry/)
  await bad(() => backoffDelay({ jitter: 'half' } as never, 1, 0), 'ERR_SS_BAD_OPTION', /jitter/)
  for (const attempt of [0, -1, 1.5, Number.NaN, Infinity, '1']) {
    await bad(() => backoffDelay({}, attempt as never, 0), 'ERR_SS_BAD_OPTION', /attempt/)
  }
  for (const prev of [-1, Number.NaN, Infinity, '0']) await bad(() => backoffDelay({}, 1, prev as never), 'ERR_SS_BAD_OPTION', /prev/)
  for (const rand of [() => Number.NaN, () => 2, () => -0.5, () => '0.5', 42]) {
    await bad(() => backoffDelay({}, 1, 0, rand as never), 'ERR_SS_BAD_OPTION', /rand/)
  }
})

// ---------------- bug 6: engine.connect is all or nothing ----------------

test('a partly failed engine.connect leaves nothing running: serverConns equals the ids the caller holds (bug 6)', async () => {
  // ../shared/repro/connect-partial.ts: two slots per shard; the second call's shard 0 is full
  const e = await Engine.start({ shards: 2, maxSocketsPerShard: 2 })
  try {
    const backend = await e.listen({ port: 0, protocol: 'echo' })
    const known = await e.connect({ host: '127.0.0.1', port: backend.port, protocol: 'echo', count: 3 }) // 2 + 1
    assert.is(known.length, 3)
    let code: string | undefined
    try { known.push(...await e.connect({ host: '127.0.0.1', port: backend.port, protocol: 'echo', count: 2 })) } catch (err) {
      code = (err as SyncsockError).code
    }
    assert.is(code, 'ERR_SS_SLOTS_EXHAUSTED', 'one shard refused, so the call rejects')
    assert.is(e.stats().serverConns, known.length, 'the connection the other shard made was taken back')
    await sleep(300)
    assert.is(e.stats().serverConns, known.length, 'and it does not come back')
  } finally { await e.stop({ graceMs: 200 }) }
})

// ---------------- and afterwards ----------------

test('after all of it: no shard died, the engine echoes, stop() leaves no handle', async () => {
  assert.equal(shardExits, [])
  await stillEchoes()
  for (const c of clients) c.destroy()
  await engine.stop({ graceMs: 1000 })
  probe.close()
  await waitFor(() => leakedHandles().length === 0, 2000).catch(() => {})
  assert.equal(leakedHandles(), [])
})

test.run()
