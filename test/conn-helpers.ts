// Helpers for the server-connection tests (server, liveness, faults): backends the test controls,
// a listener that never accepts, free ports, and readers over the hook events that
// fixtures/server-hooks.ts posts.
import net from 'node:net'
import { spawn, type ChildProcess } from 'node:child_process'
import { Engine } from '../src/index.ts'
import * as assert from 'uvu/assert'
import { recordEvents, waitFor, checkReleasedOnce, type HookEvent } from './net-helpers.ts'

export const HOOKS = new URL('./fixtures/server-hooks.ts', import.meta.url).pathname

/** A hook event from server-hooks.ts (net-helpers' HookEvent plus what that fixture adds). */
export type Ev = HookEvent & { inc?: string; localPort?: number; code?: string; error?: string }

/** A plain TCP backend the test controls: echo (or silent), counts accepts, drops on demand. */
export interface Backend {
  readonly server: net.Server
  readonly port: number
  accepts: number
  readonly sockets: Set<net.Socket>
  /** end every accepted socket: 'fin' (destroy after end) or 'rst' (resetAndDestroy) */
  dropAll(how?: 'fin' | 'rst'): void
  /** the accepted socket whose peer port is `port` (the engine socket's localPort) */
  byPeerPort(port: number): net.Socket | undefined
  close(): Promise<void>
}

export function backend(opts: { port?: number; host?: string; echo?: boolean; onSocket?: (s: net.Socket) => void } = {}): Promise<Backend> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ noDelay: true })
  const b = {
    server, port: 0, accepts: 0, sockets,
    dropAll(how: 'fin' | 'rst' = 'fin') {
      for (const s of [...sockets]) { if (how === 'rst') s.resetAndDestroy(); else s.destroy() }
    },
    byPeerPort(port: number) { for (const s of sockets) if (s.remotePort === port) return s; return undefined },
    close() {
      const done = new Promise<void>((r) => server.close(() => r()))
      for (const s of [...sockets]) s.destroy()
      return done
    },
  }
  server.on('connection', (s) => {
    b.accepts++
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
    if (opts.echo !== false) s.on('data', (d) => { if (!s.destroyed) s.write(d) })
    else s.on('data', () => {})
    opts.onSocket?.(s)
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1' }, () => {
      server.off('error', reject)
      b.port = (server.address() as net.AddressInfo).port
      resolve(b)
    })
  })
}

/** A loopback port nobody listens on (connects are refused). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

/**
 * A listener that completes at most backlog+1 handshakes and never accepts: a child process
 * listens with backlog 1 and then blocks its own loop. Connects beyond the accept queue are
 * dropped at SYN (they stay connecting); the ones in the queue look established to the client
 * but never get an answer. Resolves once it listens; kill() it (its pid is ours) to end it.
 */
export function blockedListener(port: number): Promise<ChildProcess> {
  const code = `require('net').createServer().listen({ port: ${port}, host: '127.0.0.1', backlog: 1 }, () => {
    process.stdout.write('ready\\n'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000); process.exit(0) })`
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('blocked listener did not start')) }, 10_000)
    child.once('error', (e) => { clearTimeout(t); reject(e) })
    child.stdout!.once('data', () => { clearTimeout(t); resolve(child) })
  })
}

/** Kill a child we started and wait until it is gone (bounded). */
export function killChild(child: ChildProcess | null | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(resolve, 3000)
    child.once('exit', () => { clearTimeout(t); resolve() })
    child.kill('SIGKILL')
  })
}

let channels = 0
/** Start an engine on the server-hooks fixture with its own event channel. */
export async function startEngine(env: Record<string, string> = {}, opts: { shards?: number; maxConnectsInFlight?: number } = {}) {
  const rec = recordEvents(`ss-conn-${process.pid}-${++channels}`)
  const saved: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(env)) { saved[k] = process.env[k]; process.env[k] = v }
  try {
    const engine = await Engine.start({ shards: opts.shards ?? 2, hooks: HOOKS, maxConnectsInFlight: opts.maxConnectsInFlight })
    return { engine, rec, events: rec.events as Ev[] }
  } catch (e) {
    rec.close()
    throw e
  } finally {
    for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v }
  }
}

/** Events of one connection id, optionally of one kind. */
export const evs = (events: Ev[], id: number, ev?: string) => events.filter((e) => e.id === id && (!ev || e.ev === ev))
/** Tokens of a connection's incarnations, in order. */
export const incarnations = (events: Ev[], id: number) => evs(events, id, 'new').map((e) => e.token!)

/** Reject after ms: wrap a promise that must settle (never hang a test on it). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`${what} did not settle in ${ms} ms`)), ms) }),
  ])
}

/** After engine.stop(): nothing left, no reconnect, every linked token released exactly once. */
export async function assertStoppedClean(engine: Engine, events: Ev[]): Promise<void> {
  const st = engine.stats()
  assert.is(st.reconnectsAfterStop, 0, 'reconnectsAfterStop')
  assert.is(st.active, 0, 'sockets still open in a shard after stop')
  assert.is(st.connectsInFlight, 0, 'connects still in flight after stop')
  assert.is(st.serverConns, 0, 'server connections not freed after stop')
  // Hook events cross threads asynchronously: wait for them to settle, then check.
  await waitFor(() => checkReleasedOnce(events).length === 0, 2000).catch(() => {})
  assert.equal(checkReleasedOnce(events), [], 'every linked token released exactly once')
}

export async function stopClean(engine: Engine, events: Ev[]): Promise<void> {
  await engine.stop()
  await assertStoppedClean(engine, events)
}

/** The connection's newest incarnation has received bytes (its hello/ping was answered). */
export const answered = (events: Ev[], id: number): boolean => {
  const t = incarnations(events, id).at(-1)
  return t !== undefined && events.some((e) => e.ev === 'recv' && e.token === t)
}
