// Random values at every public entry point (fast-check, fixed seed, bounded runs): numbers
// (NaN, ±Infinity, -0, huge), strings, null, undefined, arrays, objects with random or almost-right
// keys, functions, symbols, BigInt. Every outcome is a SyncsockError with a known code or a
// documented status — never a plain TypeError, a hang, a dead shard or an unhandled rejection —
// and afterwards the engine still echoes and stop() leaves no handle. The hooks-side entry points
// (ctx.timer/close/send/unlink/connect, sock.send/close) are called from inside a hook by
// fixtures/api-probe.ts with the same random values, carried over a TCP line.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import fc from 'fast-check'
import type net from 'node:net'
import { Engine, SyncsockError, backoffDelay, defineProtocols, errorCodes } from '../src/index.ts'
import { connect, roundTrip, waitFor, leakedHandles, closed } from './net-helpers.ts'
import { PROBE, SELF, SELF_ID, probeChannel } from './probe-helpers.ts'

const unhandled: unknown[] = []
process.on('unhandledRejection', (e) => { unhandled.push(e) })
const probe = probeChannel('fuzz-api-test')
const engine = await Engine.start({ shards: 2, hooks: PROBE })
const incidents: unknown[] = []
for (const ev of ['shard-exit', 'shard-error', 'hook-error']) engine.on(ev, (d) => incidents.push({ ev, d }))
const probes = await engine.listen({ port: 0, protocol: 'probe' })
const echo = await engine.listen({ port: 0, protocol: 'echo' })

const SEED = 20240611
const RUN_TIMEOUT_MS = 8000 // a run that takes longer is a hang

// ---------------- what counts as a good outcome ----------------

/** A typed refusal: SyncsockError with one of our codes (never a plain TypeError & co). */
function typed(e: unknown): boolean {
  return SyncsockError.is(e) && (e as Error).name === 'SyncsockError'
}
/** A documented status answer (send/close/unlink never throw for a well-formed id). */
const STATUS = new Set<string>(['ok', 'high-water', ...Object.keys(errorCodes)])

function describeErr(e: unknown): string {
  return `${(e as Error)?.name}: ${(e as Error)?.message} (${String((e as { code?: unknown })?.code)})`
}

// ---------------- arbitraries ----------------

const KNOWN_KEYS = [
  'shards', 'hooks', 'config', 'tasks', 'blocking', 'maxSocketsPerShard', 'ringBytes', 'highWater', 'maxQueue',
  'sendTimeoutMs', 'closeTimeoutMs', 'drainBudget', 'maxConnectsInFlight', 'restartShards', 'bootTimeoutMs',
  'maxRestarts', 'restartWindowMs', 'port', 'host', 'protocol', 'backlog', 'tls', 'count', 'shard', 'retry',
  'liveness', 'connectTimeoutMs', 'readyTimeoutMs', 'baseMs', 'capMs', 'maxAttempts', 'jitter', 'resetAfterMs',
  'intervalMs', 'timeoutMs', 'misses', 'graceMs', 'mode', 'maxSocketPerShard', '__proto__', 'constructor',
]
const weird = fc.constantFrom<unknown>(
  Number.NaN, Infinity, -Infinity, -0, 0, 1, -1, 0.5, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1e12, Number.MAX_SAFE_INTEGER,
  Number.MAX_VALUE, Number.MIN_VALUE, 65535, 65536, '', 'graceful', 'abort', 'auto', 'echo', 'probe', 'full',
  'decorrelated', '127.0.0.1', 'x', '0', '1e3', null, undefined, true, false, Symbol('s'), 10n, -1n,
  () => 1, Buffer.from('x'), new Uint8Array(0),
)
const scalar = fc.oneof(weird, weird, fc.integer(), fc.double(), fc.string({ maxLength: 8 }), fc.bigInt(), fc.boolean())
const key = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom(...KNOWN_KEYS))
const { value } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof({ maxDepth: 3 }, scalar, scalar, scalar,
    fc.array(tie('value'), { maxLength: 3 }), fc.dictionary(key, tie('value'), { maxKeys: 4 })),
}))
/** `good` most of the time, anything now and then. */
const mostly = <T>(good: fc.Arbitrary<T>) => fc.oneof({ weight: 12, arbitrary: good }, { weight: 1, arbitrary: value })
/** Usually absent (undefined), now and then anything: for options that must be left out. */
const rarely = fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: value })
/** Records of known keys with half-right values, sometimes with one more random key. */
function almost(model: Record<string, fc.Arbitrary<unknown>>, requiredKeys: string[] = []): fc.Arbitrary<unknown> {
  const rec = fc.record(model, { requiredKeys })
  return fc.oneof(
    { weight: 1, arbitrary: value },
    { weight: 8, arbitrary: rec },
    { weight: 1, arbitrary: fc.tuple(rec, key, value).map(([r, k, v]) => ({ ...(r as object), [k]: v })) },
  )
}
const retryArb = almost({
  baseMs: mostly(fc.integer({ min: 1, max: 500 })), capMs: mostly(fc.integer({ min: 1, max: 2000 })),
  maxAttempts: mostly(fc.integer({ min: 1, max: 5 })), jitter: mostly(fc.constantFrom('full', 'decorrelated')),
  resetAfterMs: mostly(fc.integer({ min: 0, max: 5000 })),
})
const livenessArb = almost({
  intervalMs: mostly(fc.integer({ min: 10, max: 5000 })), timeoutMs: mostly(fc.integer({ min: 1, max: 5000 })),
  misses: mostly(fc.integer({ min: 1, max: 5 })),
})
const modeArb = fc.oneof(fc.constantFrom('graceful', 'abort'), almost({ mode: mostly(fc.constantFrom('graceful', 'abort')) }), value)
const bytesArb = mostly(fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)))

/** Keep a valid-by-chance option cheap (no 255 shards, no GiB tables, no privileged or busy ports). */
function tame(o: unknown, fix: Record<string, (v: unknown) => unknown>): unknown {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return o
  const out: Record<string, unknown> = { ...(o as Record<string, unknown>) }
  for (const [k, f] of Object.entries(fix)) if (k in out) out[k] = f(out[k])
  return out
}
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v)
const SAFE_HOSTS = ['127.0.0.1', 'localhost']
const safeHost = (v: unknown) => (typeof v === 'string' && v.length > 0 && !SAFE_HOSTS.includes(v) ? '127.0.0.1' : v)

// ---------------- main-thread entry points ----------------

test('Engine.start(random): a typed error, or an engine that stops cleanly', async () => {
  const opts = fc.oneof(
    { weight: 1, arbitrary: value },
    { weight: 4, arbitrary: almost({
      shards: mostly(fc.constantFrom(1, 2, 'auto')), hooks: fc.oneof(fc.constant(undefined), fc.constantFrom(PROBE, 'nope.ts'), value),
      config: mostly(fc.jsonValue({ maxDepth: 2 })), tasks: rarely, blocking: rarely,
      maxSocketsPerShard: mostly(fc.integer({ min: 1, max: 1024 })),
      ringBytes: mostly(fc.constantFrom(16384, 65536)), highWater: mostly(fc.integer({ min: 1024, max: 1 << 20 })),
      maxQueue: mostly(fc.integer({ min: 1 << 20, max: 1 << 24 })), sendTimeoutMs: mostly(fc.integer({ min: 10, max: 60_000 })),
      closeTimeoutMs: mostly(fc.integer({ min: 10, max: 60_000 })), drainBudget: mostly(fc.integer({ min: 1, max: 4096 })),
      maxConnectsInFlight: mostly(fc.integer({ min: 1, max: 1024 })), restartShards: mostly(fc.boolean()),
      bootTimeoutMs: mostly(fc.integer({ min: 1000, max: 20_000 })), maxRestarts: mostly(fc.integer({ min: 0, max: 10 })),
      restartWindowMs: mostly(fc.integer({ min: 1, max: 100_000 })),
    }).map((o) => tame(o, {
      shards: (v) => (isInt(v) && v > 2 ? 2 : v),
      maxSocketsPerShard: (v) => (isInt(v) && v > 4096 ? 1024 : v),
      ringBytes: (v) => (isInt(v) && v > 1 << 17 ? 16384 : v),
      maxQueue: (v) => (isInt(v) && v > 1 << 26 ? 1 << 24 : v),
      hooks: (v) => (typeof v === 'string' && v !== PROBE ? `./no-such-hooks-${v.replace(/[^\w]/g, '_')}.ts` : v),
    })) },
  )
  let started = 0
  await fc.assert(fc.asyncProperty(opts, async (o) => {
    let e: Engine | null = null
    try { e = await Engine.start(o as never) } catch (err) {
      if (!typed(err)) throw new Error(`Engine.start(${fc.stringify(o)}) threw ${describeErr(err)}`)
      return
    }
    started++
    await e.stop({ graceMs: 100 })
  }), { seed: SEED, numRuns: 60, endOnFailure: true, timeout: RUN_TIMEOUT_MS })
  console.log(`  Engine.start: ${started}/60 random option objects were valid`)
})

test('engine.listen(random): a typed error, or a listener that closes', async () => {
  const opts = almost({
    port: mostly(fc.constant(0)), host: fc.oneof(fc.constantFrom(...SAFE_HOSTS), value),
    protocol: mostly(fc.constantFrom('echo', 'probe', 'echo', 'probe', 'nope', '')), backlog: mostly(fc.integer({ min: 1, max: 1024 })),
    tls: rarely,
  }, ['port', 'protocol']).map((o) => tame(o, { port: (v) => (isInt(v) && v >= 0 && v <= 65535 ? 0 : v), host: safeHost }))
  const before = engine.stats().listeners
  let opened = 0
  await fc.assert(fc.asyncProperty(opts, async (o) => {
    try {
      const l = await engine.listen(o as never)
      opened++
      await l.close()
    } catch (err) {
      if (!typed(err)) throw new Error(`listen(${fc.stringify(o)}) threw ${describeErr(err)}`)
    }
  }), { seed: SEED, numRuns: 100, endOnFailure: true, timeout: RUN_TIMEOUT_MS })
  console.log(`  engine.listen: ${opened}/100 listeners opened and closed`)
  await waitFor(() => engine.stats().listeners === before, 3000, 'listeners back to the two of this file')
})

test('engine.connect(random): typed error with no connection left, or ids that close', async () => {
  const opts = almost({
    host: fc.oneof(fc.constantFrom(...SAFE_HOSTS), value), port: mostly(fc.constant(echo.port)),
    protocol: mostly(fc.constantFrom('echo', 'probe', 'nope')), count: mostly(fc.integer({ min: 1, max: 4 })),
    shard: mostly(fc.constantFrom(0, 1)), retry: retryArb, liveness: livenessArb,
    connectTimeoutMs: mostly(fc.integer({ min: 1, max: 5000 })), readyTimeoutMs: mostly(fc.integer({ min: 0, max: 5000 })),
    tls: rarely,
  }, ['host', 'port', 'protocol']).map((o) => tame(o, {
    host: safeHost,
    port: (v) => (isInt(v) && v >= 1 && v <= 65535 ? echo.port : v),
    count: (v) => (isInt(v) && v > 4 ? 2 : v),
  }))
  let made = 0
  await fc.assert(fc.asyncProperty(opts, async (o) => {
    const before = engine.stats().serverConns
    let ids: number[]
    try { ids = await engine.connect(o as never) } catch (err) {
      if (!typed(err)) throw new Error(`connect(${fc.stringify(o)}) threw ${describeErr(err)}`)
      // all or nothing: a refused connect leaves no connection behind
      if (engine.stats().serverConns !== before) throw new Error(`connect(${fc.stringify(o)}) was refused but left connections`)
      return
    }
    made += ids.length
    for (const id of ids) assert.is(engine.close(id, 'abort'), 'ok')
    await waitFor(() => engine.stats().serverConns === before, 3000, 'connections closed')
  }), { seed: SEED, numRuns: 120, endOnFailure: true, timeout: RUN_TIMEOUT_MS })
  console.log(`  engine.connect: ${made} connections made by chance, all closed`)
})

/** A socket id to aim at: a fresh live probe socket, one that is closed (stale), or any value. */
const VICTIM = Symbol('victim')
const STALE = Symbol('stale')
const idArb = fc.oneof(fc.constantFrom<unknown>(VICTIM, STALE), value, fc.integer({ min: 0, max: 2 ** 30 }))
let staleId = -1
async function aim(id: unknown): Promise<{ id: unknown; c: net.Socket | null }> {
  if (id === STALE) return { id: staleId, c: null }
  if (id !== VICTIM) return { id, c: null }
  const c = await connect(probes.port)
  c.on('error', () => {})
  const r = await probe.call(c, 'self')
  return { id: Number(r.value), c }
}

test('setup: a stale id', async () => {
  const c = await connect(probes.port)
  staleId = Number((await probe.call(c, 'self')).value)
  c.destroy()
  await waitFor(() => engine.send(staleId, Buffer.from('x')) === 'ERR_SS_STALE', 3000, 'the id goes stale')
})

for (const [name, call, runs] of [
  ['engine.send(id, bytes)', (id: unknown, x: unknown) => engine.send(id as never, x as never), 300],
  ['engine.close(id, mode)', (id: unknown, x: unknown) => engine.close(id as never, x as never), 150],
  ['engine.unlink(id)', (id: unknown) => engine.unlink(id as never), 80],
] as const) {
  test(`${name}(random): a status or a typed error, never anything else`, async () => {
    await fc.assert(fc.asyncProperty(idArb, name.startsWith('engine.send') ? bytesArb : modeArb, async (rawId, x) => {
      const { id, c } = await aim(rawId)
      try {
        let r: unknown
        try { r = call(id, x) } catch (err) {
          if (!typed(err)) throw new Error(`${name} with (${fc.stringify(id)}, ${fc.stringify(x)}) threw ${describeErr(err)}`)
          return
        }
        if (typeof r !== 'string' || !STATUS.has(r)) throw new Error(`${name} answered ${fc.stringify(r)}`)
        if (c && name.startsWith('engine.close') && r === 'ok') await closed(c, 3000) // it really closes
      } finally { c?.destroy() }
    }), { seed: SEED, numRuns: runs, endOnFailure: true, timeout: RUN_TIMEOUT_MS })
  })
}

test('engine.stop(random): a bad argument rejects typed and stops nothing; a good one stops', async () => {
  const arg = fc.oneof(value, almost({ graceMs: mostly(fc.integer({ min: 0, max: 100 })) }))
    .map((o) => tame(o, { graceMs: (v) => (isInt(v) && v > 200 ? 100 : v) }))
  let target = await Engine.start({ shards: 1 })
  let stopped = 0
  try {
    await fc.assert(fc.asyncProperty(arg, async (o) => {
      try { await target.stop(o as never) } catch (err) {
        if (!typed(err) || (err as SyncsockError).code !== 'ERR_SS_BAD_OPTION') throw new Error(`stop(${fc.stringify(o)}) rejected with ${describeErr(err)}`)
        if (target.stopping) throw new Error(`stop(${fc.stringify(o)}) was refused but stopped the engine`)
        return
      }
      stopped++
      target = await Engine.start({ shards: 1 })
    }), { seed: SEED, numRuns: 40, endOnFailure: true, timeout: RUN_TIMEOUT_MS })
  } finally { await target.stop({ graceMs: 100 }) }
  console.log(`  engine.stop: ${stopped}/40 arguments were valid`)
})

test('backoffDelay(random): an integer delay in [0, cap] or a typed error, never NaN', () => {
  const rand = fc.oneof(fc.constant(undefined), fc.func(mostly(fc.double({ min: 0, max: 1, noNaN: true }))), value)
  fc.assert(fc.property(retryArb, mostly(fc.integer({ min: 1, max: 100 })), mostly(fc.integer({ min: 0, max: 10_000 })), rand,
    (r, attempt, prev, rnd) => {
      let d: number
      try { d = backoffDelay(r as never, attempt as never, prev as never, rnd as never) } catch (err) {
        if (!typed(err)) throw new Error(`backoffDelay threw ${describeErr(err)}`)
        return
      }
      const cap = (r as { capMs?: number } | undefined)?.capMs ?? 1000
      if (!Number.isInteger(d) || d < 0 || d > cap) throw new Error(`backoffDelay answered ${d} (cap ${cap})`)
    }), { seed: SEED, numRuns: 1500 })
})

test('defineProtocols(random): the frozen protocols or a typed error', () => {
  const hooks = fc.dictionary(
    fc.oneof(fc.constantFrom('connectionNew', 'connectionRecv', 'connectionDrop', 'failover', 'retry'), key),
    fc.oneof(fc.constant(() => {}), value), { maxKeys: 3 })
  const protos = fc.oneof(value, fc.dictionary(fc.oneof(fc.constantFrom('a', 'up', 'x-1', '1a', ''), key), fc.oneof(hooks, value), { maxKeys: 3 }))
  fc.assert(fc.property(protos, (p) => {
    try {
      const out = defineProtocols(p as never)
      if (!Object.isFrozen(out)) throw new Error('not frozen')
    } catch (err) {
      if (!typed(err)) throw new Error(`defineProtocols(${fc.stringify(p)}) threw ${describeErr(err)}`)
    }
  }), { seed: SEED, numRuns: 400 })
})

// ---------------- hooks-side entry points, called from inside a hook ----------------

test('ctx.timer/close/send/unlink/connect and sock.send/close(random) inside a hook: a result or a typed error', async () => {
  const connectArb = almost({
    host: fc.oneof(fc.constantFrom(...SAFE_HOSTS), value), port: mostly(fc.constant(echo.port)),
    protocol: mostly(fc.constantFrom('echo', 'probe', 'nope')), count: rarely, shard: rarely, retry: retryArb,
    liveness: livenessArb, connectTimeoutMs: mostly(fc.integer({ min: 1, max: 5000 })), readyTimeoutMs: rarely, tls: rarely,
  }, ['host', 'port', 'protocol']).map((o) => tame(o, { host: safeHost, port: (v) => (isInt(v) && v >= 1 && v <= 65535 ? echo.port : v) }))
  const call = fc.oneof(
    fc.tuple(fc.constant('ctx.timer'), fc.tuple(mostly(fc.constant(SELF)), mostly(fc.integer({ min: 0, max: 50 })), mostly(fc.constant(() => {})))),
    fc.tuple(fc.constant('ctx.close'), fc.tuple(mostly(fc.constant(SELF_ID)), modeArb)),
    fc.tuple(fc.constant('ctx.send'), fc.tuple(mostly(fc.constant(SELF_ID)), bytesArb)),
    fc.tuple(fc.constant('ctx.unlink'), fc.tuple(mostly(fc.constant(SELF_ID)))),
    fc.tuple(fc.constant('ctx.connect'), fc.tuple(connectArb)),
    fc.tuple(fc.constant('sock.send'), fc.tuple(bytesArb)),
    fc.tuple(fc.constant('sock.close'), fc.tuple(modeArb)),
  ).chain(([op, args]) => fc.nat({ max: args.length }).map((n) => [op, (args as unknown[]).slice(0, args.length - (n === 0 ? 0 : n - 1))] as const))
  let typedRefusals = 0
  await fc.assert(fc.asyncProperty(call, async ([op, args]) => {
    const c = await connect(probes.port)
    c.on('error', () => {})
    try {
      const r = await probe.call(c, op, args) // rejects if no report comes: a hang
      if (!r.ok) {
        if (!r.typed) throw new Error(`${op}(${fc.stringify(args)}) threw ${r.name}: ${r.message}`)
        typedRefusals++
      }
    } finally { c.destroy() }
  }), { seed: SEED, numRuns: 300, endOnFailure: true, timeout: RUN_TIMEOUT_MS })
  console.log(`  hooks side: ${typedRefusals}/300 typed refusals, the rest answered`)
  await waitFor(() => engine.stats().serverConns === 0, 3000, 'connections made by chance in a hook are gone')
})

// ---------------- and afterwards ----------------

test('afterwards: no shard died, no hook error, no unhandled rejection; the engine echoes; stop() leaves no handle', async () => {
  assert.equal(incidents, [])
  assert.equal(unhandled.map(describeErr), [])
  const c = await connect(echo.port)
  assert.is((await roundTrip(c, 'still echoing')).toString(), 'still echoing')
  c.destroy()
  await engine.stop({ graceMs: 1000 })
  probe.close()
  await waitFor(() => leakedHandles().length === 0, 2000).catch(() => {})
  assert.equal(leakedHandles(), [])
})

test.run()
