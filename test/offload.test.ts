// ctx.offload (issue #9): a task of the Engine.start({ tasks }) module runs on the blocking pool
// (piscina, main thread); `done` runs in the owning shard under the socket's lock only while that
// incarnation is still linked — after a close, an unlink (local or foreign), a drop or a reconnect
// the result is discarded and counted, never delivered to a released socket or a later
// incarnation. Offloads in flight per shard are bounded (ERR_SS_BUSY at the call). A task that
// throws delivers the error. stop() closes the pool and leaves no handle.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import net from 'node:net'
import { Engine, SyncsockError } from '../src/index.ts'
import { recordEvents, waitFor, sleep, connect, leakedHandles, type HookEvent } from './net-helpers.ts'

const HOOKS = new URL('./fixtures/tls-hooks.ts', import.meta.url).pathname
const TASKS = new URL('./fixtures/tasks.ts', import.meta.url)
type Ev = HookEvent & { status?: string; statuses?: string[]; tag?: string; result?: unknown; error?: string; code?: string; name?: string; hook?: string }
const rec = recordEvents(`ss-offload-${process.pid}`)
const events = rec.events as Ev[]
const of = (ev: string, pred: (e: Ev) => boolean = () => true) => events.filter((e) => e.ev === ev && pred(e))

async function withEngine(fn: (e: Engine) => Promise<void>, opts: Record<string, unknown> = {}): Promise<Engine> {
  const engine = await Engine.start({ shards: 2, hooks: HOOKS, tasks: TASKS, ...opts })
  try { await fn(engine) } finally { await engine.stop({ graceMs: 500 }) }
  assert.is(engine.stats().active, 0)
  return engine
}

/** A client of the `offloader` protocol and its socket's life (one incarnation). */
async function client(port: number): Promise<{ c: net.Socket; life: string; id: number }> {
  const before = of('new').length
  const c = await connect(port)
  c.on('error', () => {})
  await waitFor(() => of('new').length > before, 3000, 'connectionNew')
  const e = of('new')[before]
  return { c, life: e.life!, id: e.id }
}
/** Send one command and wait for the event it causes. */
async function cmd(c: net.Socket, life: string, text: string, ev = 'offload'): Promise<Ev> {
  const before = of(ev, (e) => e.life === life).length
  c.write(text)
  await waitFor(() => of(ev, (e) => e.life === life).length > before, 3000, `${ev} after ${text}`)
  return of(ev, (e) => e.life === life)[before]
}

test('the result is delivered to the linked incarnation; a task that throws, or a missing task, delivers the error', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'offloader' })
    const { c, life } = await client(l.port)
    assert.is((await cmd(c, life, 'OFF echo {"a":[1,2]}')).status, 'ok')
    await waitFor(() => of('done', (e) => e.life === life).length === 1, 5000, 'done')
    assert.equal(of('done', (e) => e.life === life)[0].result, { a: [1, 2] })
    await cmd(c, life, 'OFF fail')
    await waitFor(() => of('done', (e) => e.life === life).length === 2, 5000, 'done with the error')
    const failed = of('done', (e) => e.life === life)[1]
    assert.is(failed.error, 'task failed on purpose')
    assert.is(failed.code, 'E_TASK', 'the task error keeps its code across the threads')
    await cmd(c, life, 'OFF nosuch')
    await waitFor(() => of('done', (e) => e.life === life).length === 3, 5000, 'done with the missing task')
    assert.is(of('done', (e) => e.life === life)[2].code, 'ERR_SS_BAD_OPTION')
    const st = engine.stats()
    assert.is(st.offloads, 3)
    assert.is(st.offloadsDelivered, 3)
    assert.is(st.offloadErrors, 2)
    assert.is(st.offloadsDiscarded, 0)
    assert.is(st.offloadsInFlight, 0)
    c.destroy()
  })
})

test('discarded and counted, never delivered, after a local close, a local unlink, a peer drop or a foreign unlink', async () => {
  await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'offloader' })
    const lives: string[] = []
    { const { c, life } = await client(l.port); lives.push(life); await cmd(c, life, 'OFFCLOSE'); c.destroy() }
    { const { c, life } = await client(l.port); lives.push(life); await cmd(c, life, 'OFFUNLINK'); await sleep(20); c.destroy() }
    { const { c, life } = await client(l.port); lives.push(life); await cmd(c, life, 'OFFSLOW 200'); c.destroy() }
    {
      const { c, life, id } = await client(l.port); lives.push(life)
      await cmd(c, life, 'OFFSLOW 200')
      assert.is(engine.unlink(id), 'ok')
      await waitFor(() => of('close', (e) => e.life === life && e.cause === 'unlink').length === 1, 3000, 'unlinked')
      await sleep(400) // the socket stays open (unlinked): the result arrives and finds it unlinked
      c.destroy()
    }
    await waitFor(() => engine.stats().offloadsDiscarded === 4, 3000, 'four results discarded')
    assert.equal(of('done', (e) => lives.includes(e.life!)), [], 'no result reached a released incarnation')
    assert.is(engine.stats().offloadsDelivered, 0)
  })
})

test('a reconnect: the result of incarnation k is never delivered to k+1', async () => {
  let first = true
  const server = net.createServer((s) => {
    s.on('error', () => {})
    if (first) { first = false; setTimeout(() => s.destroy(), 50) } // drop the first incarnation early
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as net.AddressInfo).port
  await withEngine(async (engine) => {
    const [id] = await engine.connect({ host: '127.0.0.1', port, protocol: 'offconn' })
    const mine = (e: Ev) => e.id === id && e.protocol === 'offconn'
    await waitFor(() => of('new', mine).length >= 2, 5000, 'a second incarnation')
    const [k, k1] = of('new', mine).map((e) => e.life!)
    await waitFor(() => of('done', mine).length >= 1, 3000, "the second incarnation's result")
    await sleep(100)
    const done = of('done', mine)
    assert.equal(done.map((e) => e.life), [k1], 'only k+1 got a result, its own')
    assert.is(done[0].result, k1, 'the value it asked for')
    assert.not.ok(done.some((e) => e.life === k))
    assert.ok(engine.stats().offloadsDiscarded >= 1, "k's result was discarded and counted")
    engine.close(id)
  }, { shards: 1 })
  await new Promise((r) => server.close(r))
})

test('offloads in flight per shard are bounded: refused at the call (ERR_SS_BUSY); a non-cloneable input throws; a throwing done is a hook error', async () => {
  await withEngine(async (engine) => {
    const hookErrors: { hook?: string; message?: string }[] = []
    engine.on('hook-error', (d) => hookErrors.push(d))
    const l = await engine.listen({ port: 0, protocol: 'offloader' })
    const { c, life } = await client(l.port)
    const filled = await cmd(c, life, 'FILL 5', 'filled')
    assert.equal(filled.statuses, ['ok', 'ok', 'ok', 'ERR_SS_BUSY', 'ERR_SS_BUSY'])
    assert.is(engine.stats().offloadsRefused, 2)
    await waitFor(() => engine.stats().offloadsInFlight === 0, 3000, 'the three finished')
    assert.is((await cmd(c, life, 'BADINPUT', 'bad')).code, 'ERR_SS_BAD_OPTION')
    await cmd(c, life, 'OFFTHROW')
    await waitFor(() => of('close', (e) => e.life === life).length === 1, 3000, 'the incarnation ended')
    assert.is(of('close', (e) => e.life === life)[0].cause, 'hook-error')
    assert.ok(hookErrors.some((h) => h.hook === 'offload' && /done threw/.test(String(h.message))))
    c.destroy()
  }, { blocking: { maxOffloadsPerShard: 3 } })
})

test('without a tasks module ctx.offload throws ERR_SS_BAD_OPTION (a hook error); Engine.start checks tasks and blocking', async () => {
  const engine = await Engine.start({ shards: 1, hooks: HOOKS })
  try {
    const errs: { code?: string }[] = []
    engine.on('hook-error', (d) => errs.push(d))
    const l = await engine.listen({ port: 0, protocol: 'offloader' })
    const { c } = await client(l.port)
    c.write('OFF echo 1')
    await waitFor(() => errs.length === 1, 3000, 'the hook error')
    assert.is(errs[0].code, 'ERR_SS_BAD_OPTION')
    c.destroy()
  } finally { await engine.stop({ graceMs: 200 }) }
  const bad = async (o: Record<string, unknown>, re: RegExp) => {
    const e = await Engine.start({ shards: 1, ...o }).then((x) => { void x.stop(); return null }, (x) => x)
    assert.ok(SyncsockError.is(e, 'ERR_SS_BAD_OPTION'), String(e))
    assert.match((e as Error).message, re)
  }
  await bad({ tasks: new URL('./fixtures/no-such-tasks.ts', import.meta.url) }, /tasks/)
  await bad({ blocking: { maxThreads: 0 } }, /blocking\.maxThreads/)
  await bad({ blocking: { threads: 2 } }, /"threads"/)
  await bad({ blocking: null }, /blocking/)
})

test('stop() with offloads in flight: they are discarded, the pool is closed, no handle is left', async () => {
  const engine = await withEngine(async (engine) => {
    const l = await engine.listen({ port: 0, protocol: 'offloader' })
    const { c, life } = await client(l.port)
    await cmd(c, life, 'OFFSLOW 1500')
    c.destroy()
  })
  assert.is(engine.stats().offloadsInFlight, 0)
  rec.close()
  await sleep(50)
  assert.equal(leakedHandles(), [])
})

test.run()
