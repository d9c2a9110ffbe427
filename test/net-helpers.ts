// Shared test helpers: event collection from shard hooks (via BroadcastChannel, see
// fixtures/recorder.ts), bounded waiting, and small real-socket clients.
import { BroadcastChannel } from 'node:worker_threads'
import net from 'node:net'

export const RECORDER = new URL('./fixtures/recorder.ts', import.meta.url).pathname

export interface HookEvent {
  ev: string; id: number; kind: string; protocol: string; shard: number
  token?: string; reason?: string; cause?: string; len?: number; attempt?: number
  /** short chunks only (recorder.ts): the bytes as text */
  text?: string
  /**
   * The socket incarnation the hook ran for, posted on every event whether data is linked or not
   * (recorder.ts, server-hooks.ts: one key per SsSocket object). A release hook that runs on data
   * already handed back has no token, but it still has a life (L2).
   */
  life?: string
}

/** Listen to hook events of every shard. Call before Engine.start. */
export function recordEvents(channel = 'syncsock-test') {
  process.env.SS_TEST_CHANNEL = channel
  const events: HookEvent[] = []
  const bc = new BroadcastChannel(channel)
  bc.onmessage = (m: unknown) => { events.push((m as { data: HookEvent }).data) }
  return {
    events,
    of: (ev: string) => events.filter((e) => e.ev === ev),
    close: () => bc.close(),
  }
}

/** Poll until cond() is true; throws after timeoutMs (bounded, never hangs). */
export async function waitFor(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export function connect(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host, noDelay: true }, () => { s.off('error', reject); resolve(s) })
    s.once('error', reject)
  })
}

/** Write `msg` and resolve with exactly `expect` bytes read back. */
export function roundTrip(s: net.Socket, msg: Buffer | string, expect = Buffer.byteLength(msg), timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let got = 0
    const t = setTimeout(() => { s.off('data', on); reject(new Error(`roundTrip: got ${got}/${expect} bytes`)) }, timeoutMs)
    const on = (d: Buffer) => {
      parts.push(d); got += d.length
      if (got >= expect) { clearTimeout(t); s.off('data', on); resolve(Buffer.concat(parts)) }
    }
    s.on('data', on)
    s.write(msg)
  })
}

/** Resolve when the socket is closed (bounded). */
export function closed(s: net.Socket, timeoutMs = 5000): Promise<void> {
  if (s.destroyed && s.closed) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('socket did not close')), timeoutMs)
    s.once('close', () => { clearTimeout(t); resolve() })
  })
}

/** Handles other than the ones every process has (stdio). */
export function leakedHandles(): string[] {
  return process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap' && r !== 'PipeWrap')
}

/** Release events: the hooks that hand linked data back (L2), and a local unlink's return. */
const RELEASES = new Set(['drop', 'close', 'unlinked'])
/** Connection-level hooks of a server connection: they run after the incarnation's release by design. */
const AFTER_RELEASE_OK = new Set(['failover', 'retry'])

/**
 * Exactly-once check (L2), two ways:
 * - by token: every token linked was released exactly once, and no hook used it after;
 * - by incarnation (`life`, posted with or without linked data): no incarnation releases twice,
 *   one that linked data (a `new` event) releases exactly once, and no hook of it runs after its
 *   release — so a release hook that fires on data already handed back (no token left) is caught.
 */
export function checkReleasedOnce(events: HookEvent[]): string[] {
  const problems: string[] = []
  const released = new Map<string, number>()
  const order = new Map<string, number>()
  const lifeReleases = new Map<string, number>()
  const linkedLives = new Set<string>()
  events.forEach((e, i) => {
    if (e.life !== undefined) {
      if (e.ev === 'new') linkedLives.add(e.life)
      if (RELEASES.has(e.ev)) {
        const n = (lifeReleases.get(e.life) ?? 0) + 1
        lifeReleases.set(e.life, n)
        if (n > 1) problems.push(`${e.ev}${e.cause ? `(${e.cause})` : ''} on incarnation ${e.life} of ${e.id} after its release: release #${n}`)
      } else if (lifeReleases.has(e.life) && !AFTER_RELEASE_OK.has(e.ev)) {
        problems.push(`${e.ev} on incarnation ${e.life} of ${e.id} after its release`)
      }
    }
    if (!e.token) return
    if (RELEASES.has(e.ev)) {
      released.set(e.token, (released.get(e.token) ?? 0) + 1)
      order.set(e.token, i)
    } else if (order.has(e.token)) {
      problems.push(`${e.ev} on ${e.token} after its release`)
    }
  })
  for (const e of events) {
    if (e.ev === 'new' && e.token) {
      const n = released.get(e.token) ?? 0
      if (n !== 1) problems.push(`token ${e.token} released ${n} times`)
    }
  }
  for (const life of linkedLives) {
    if (!lifeReleases.has(life)) problems.push(`incarnation ${life} linked data and never released it`)
  }
  return problems
}
