// The proxy's hooks, loaded in every shard (Engine.start({ hooks })). Three kinds of sockets:
//
//   proxy-client    a client accepted by this shard's listener
//   proxy-upstream  its one-shot connection to a backend, opened from the same shard (ctx.open):
//                   share nothing, both ends of a proxied connection live on one thread
//   health-<slot>   the health connection of the backend in table slot <slot> (engine.connect,
//                   made by main; one protocol per slot, so a hook knows its backend even in
//                   `retry`, where no data is linked)
//
// One proxied connection, the client's side and the upstream's side sharing one `Pair`:
//
//   client accepted ─▶ pick a backend ─▶ ctx.open ──connected──▶ flush pending ─▶ forwarding
//        │ bytes → pending (bounded;        │                                     both ways,
//        │ pause the client past it)        └─connect-failed─▶ pick the next       backpressure,
//        │                                     backend, replay pending (up to       FIN each way,
//        │                                     --retries), or close the client      RST → RST
//        └─ client gone while connecting ─▶ close the upstream
//
// Release (L2): each socket's data (the Pair) is handed back once, by its own connectionDrop or
// connectionClose; those hooks end the other side: RST → abort it, anything else → close it
// gracefully (its queue flushes first). Never does blocking work; everything here runs under the
// current socket's lock, and operations on the other socket of the pair (send, pause, resume,
// shutdown, close) are the ones docs/hooks.md allows on another socket of the same shard.

import { defineProtocols, type Protocol, type ShardContext, type SsSocket } from '../index.ts'
import { BackendTable, DOWN, MAX_BACKENDS, UP, type Member, type Snapshot } from './table.ts'
import { BC, ProxyStats, SC } from './stats.ts'
import { CLIENT_PROTOCOL, UPSTREAM_PROTOCOL, healthProtocol, type ProxyShardConfig } from './contract.ts'

/** Failed connects that say something about the backend (not about us, e.g. EADDRNOTAVAIL). */
const BACKEND_FAULTS = new Set(['ECONNREFUSED', 'ERR_SS_TIMEOUT', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'EHOSTDOWN'])

// ---------------- this shard's state ----------------

interface ShardState {
  shard: number
  cfg: ProxyShardConfig
  table: BackendTable
  stats: ProxyStats
  snap: Snapshot
  /** roundrobin position (and leastconn's tie-breaker), per shard: no shared counter */
  rr: number
  /** per slot: when its health connection last connected (its failover picks the next check) */
  checkedAt: Float64Array
}

let shardState: ShardState | null = null

/**
 * This shard's state, built by the first hook that runs in this module instance. A shard that
 * replaces a crashed one starts here too: the dead thread's gauges are undone first (its sockets
 * are gone, nobody will release them), so leastconn's shared counts do not drift.
 */
function state(ctx: ShardContext): ShardState {
  if (shardState) return shardState
  const cfg = ctx.config as ProxyShardConfig
  const table = new BackendTable(cfg.table)
  const stats = new ProxyStats(cfg.stats, cfg.shards, MAX_BACKENDS)
  const shard = ctx.shard
  for (let slot = 0; slot < MAX_BACKENDS; slot++) {
    const leftover = stats.getBackend(shard, slot, BC.active)
    if (leftover !== 0) table.addActive(slot, -leftover)
    stats.setBackend(shard, slot, BC.active, 0)
  }
  stats.set(shard, SC.clientsActive, 0)
  stats.set(shard, SC.upstreamsActive, 0)
  const snap = table.snapshot(null) ?? { version: -1, members: [], balance: 'roundrobin', retries: 0, connectTimeoutMs: 3000, healthIntervalMs: 2000 }
  shardState = { shard, cfg, table, stats, snap, rr: shard, checkedAt: new Float64Array(MAX_BACKENDS) }
  return shardState
}

function fresh(s: ShardState): Snapshot {
  s.snap = s.table.snapshot(s.snap) ?? s.snap
  return s.snap
}

// ---------------- one proxied connection ----------------

interface Pair {
  /** the client socket; null once its side was released */
  client: SsSocket | null
  /** the upstream socket once connected; null before and once its side was released */
  up: SsSocket | null
  /** id of the upstream being connected or connected (0: none) */
  upId: number
  /** backend slot of that upstream */
  slot: number
  /** connects made for this client (the first plus redispatches) */
  attempts: number
  /** backend slots tried, in order */
  tried: number[]
  /** client bytes that arrived before the upstream was connected, replayed to each attempt; null once flushed */
  pending: Buffer[] | null
  pendingBytes: number
  /** the client sent its FIN (forwarded as the upstream's shutdown once it is connected) */
  clientEnded: boolean
  /** why the client is paused: too many pending bytes, or the upstream above high water */
  heldByPending: boolean
  heldByUpstream: boolean
  /** the upstream is paused because the client is above high water */
  upPaused: boolean
  /** source balancing: hash of the client's address (-1: not computed) */
  hash: number
}

function resumeClient(p: Pair): void {
  if (p.client && !p.heldByPending && !p.heldByUpstream) p.client.resume()
}

/** FNV-1a over the client address (an IPv4-mapped IPv6 address hashes as its IPv4 form). */
function addressHash(addr: string | undefined): number {
  const a = addr?.startsWith('::ffff:') ? addr.slice(7) : addr ?? ''
  let h = 0x811c9dc5
  for (let i = 0; i < a.length; i++) h = Math.imul(h ^ a.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/**
 * Pick a backend for `p`, or null. Three passes, each by the balancing policy: healthy, not
 * passively suspect, not tried yet; then suspects allowed; then (a retry with nothing new left)
 * any backend not down, so a single backend gets its retries too. Down backends never get one.
 */
function pick(s: ShardState, p: Pair, snap: Snapshot): Member | null {
  const now = Date.now()
  const { table } = s
  const open = (m: Member) => table.state(m.slot) !== DOWN
  const untried = (m: Member) => !p.tried.includes(m.slot)
  return choose(s, p, snap, (m) => open(m) && untried(m) && table.suspectUntil(m.slot) <= now)
    ?? choose(s, p, snap, (m) => open(m) && untried(m))
    ?? (p.attempts > 0 ? choose(s, p, snap, open) : null)
}

function choose(s: ShardState, p: Pair, snap: Snapshot, ok: (m: Member) => boolean): Member | null {
  const ms = snap.members
  const n = ms.length
  if (n === 0) return null
  if (snap.balance === 'leastconn') {
    // fewest upstreams over every shard; ties go round robin so equal backends share the load
    const start = s.rr++ % n
    let best: Member | null = null
    let bestActive = Infinity
    for (let i = 0; i < n; i++) {
      const m = ms[(start + i) % n]
      if (!ok(m)) continue
      const a = s.table.active(m.slot)
      if (a < bestActive) { best = m; bestActive = a }
    }
    return best
  }
  // roundrobin: this shard's own rotation; source: the address's hash over the whole list,
  // then forward past unusable ones (a backend going down moves only its own clients)
  let start: number
  if (snap.balance === 'source') {
    if (p.hash < 0) p.hash = addressHash(p.client?.remoteAddress)
    start = p.hash % n
  } else {
    start = s.rr % n
  }
  for (let i = 0; i < n; i++) {
    const idx = (start + i) % n
    if (!ok(ms[idx])) continue
    if (snap.balance === 'roundrobin') s.rr = idx + 1
    return ms[idx]
  }
  return null
}

/** Connect `p`'s client to the next backend (from its own shard), or give up. */
function dispatch(s: ShardState, p: Pair): void {
  const client = p.client
  if (!client) return
  const snap = fresh(s)
  while (p.attempts < 1 + snap.retries) {
    const m = pick(s, p, snap)
    if (!m) break
    p.tried.push(m.slot)
    p.attempts++
    if (p.attempts > 1) s.stats.add(s.shard, SC.redispatches)
    p.slot = m.slot
    upstreamCounted(s, m.slot, +1)
    try {
      p.upId = client.ctx.open({
        host: m.host, port: m.port, protocol: UPSTREAM_PROTOCOL, data: p,
        connectTimeoutMs: snap.connectTimeoutMs, highWater: s.cfg.highWater, lowWater: s.cfg.lowWater,
      })
      return
    } catch {
      // stopping, or no slot left on this shard: count it and try the next backend
      upstreamCounted(s, m.slot, -1)
      s.stats.add(s.shard, SC.connectFailures)
      s.stats.addBackend(s.shard, m.slot, BC.failures)
      if (client.ctx.stopping) break
    }
  }
  giveUp(s, p)
}

/** No backend answered: close the client cleanly (FIN after what is queued) and count it. */
function giveUp(s: ShardState, p: Pair): void {
  s.stats.add(s.shard, SC.clientsNoBackend)
  p.pending = null
  p.pendingBytes = 0
  p.client?.close('graceful')
}

/** An upstream socket starts or stops counting against its backend (leastconn, gauges). */
function upstreamCounted(s: ShardState, slot: number, delta: 1 | -1): void {
  s.table.addActive(slot, delta)
  s.stats.addBackend(s.shard, slot, BC.active, delta)
  s.stats.add(s.shard, SC.upstreamsActive, delta)
}

/** The client's side was released: end the upstream's too (an RST becomes an RST). */
function clientGone(s: ShardState, p: Pair, mode: 'graceful' | 'abort'): void {
  if (!p.client) return
  const client = p.client
  p.client = null
  p.pending = null
  s.stats.add(s.shard, SC.clientsActive, -1)
  if (mode === 'abort' && p.upId !== 0) s.stats.add(s.shard, SC.resetsForwarded)
  if (p.up) p.up.close(mode)
  else if (p.upId !== 0) client.ctx.close(p.upId, mode) // still connecting
}

/** The upstream's side was released: end the client's too (an RST becomes an RST). */
function upstreamGone(s: ShardState, p: Pair, mode: 'graceful' | 'abort'): void {
  upstreamCounted(s, p.slot, -1)
  p.up = null
  p.upId = 0
  if (!p.client) return
  if (mode === 'abort') s.stats.add(s.shard, SC.resetsForwarded)
  p.client.close(mode)
}

const client: Protocol = {
  connectionNew(sock) {
    const s = state(sock.ctx)
    s.stats.add(s.shard, SC.clientsAccepted)
    s.stats.add(s.shard, SC.clientsActive)
    const p: Pair = {
      client: sock, up: null, upId: 0, slot: 0, attempts: 0, tried: [], pending: [], pendingBytes: 0,
      clientEnded: false, heldByPending: false, heldByUpstream: false, upPaused: false, hash: -1,
    }
    sock.link(p)
    dispatch(s, p)
  },
  connectionRecv(sock, chunk) {
    const p = sock.data as Pair
    const s = shardState!
    s.stats.add(s.shard, SC.bytesFromClients, chunk.length)
    if (p.up) {
      // 'ERR_SS_CLOSED': the upstream is closing; its release closes this side
      if (p.up.send(chunk) === 'high-water') { p.heldByUpstream = true; sock.pause() }
    } else if (p.pending) {
      p.pending.push(chunk)
      p.pendingBytes += chunk.length
      if (p.pendingBytes >= s.cfg.pendingLimit && !p.heldByPending) { p.heldByPending = true; sock.pause() }
    }
  },
  connectionWritable(sock) {
    const p = sock.data as Pair
    if (p.upPaused) { p.upPaused = false; p.up?.resume() }
  },
  // Defining connectionEnd makes the client half-open: its FIN is forwarded, the other
  // direction keeps flowing.
  connectionEnd(sock) {
    const p = sock.data as Pair
    p.clientEnded = true
    p.up?.shutdown() // not connected yet: the upstream's connectionNew shuts it after the replay
  },
  connectionDrop(sock, reason) { clientGone(state(sock.ctx), sock.data as Pair, reason === 'reset' ? 'abort' : 'graceful') },
  connectionClose(sock, cause) { clientGone(state(sock.ctx), sock.data as Pair, cause === 'hook-error' ? 'abort' : 'graceful') },
}

const upstream: Protocol = {
  connectionNew(sock) {
    const p = sock.data as Pair
    const s = state(sock.ctx)
    s.stats.addBackend(s.shard, p.slot, BC.connections)
    if (!p.client) { sock.close('graceful'); return } // the client left meanwhile
    p.up = sock
    // replay what the client sent while we connected (the same bytes a failed attempt never sent)
    const pending = p.pending ?? []
    p.pending = null
    p.pendingBytes = 0
    for (const chunk of pending) {
      if (sock.send(chunk) === 'high-water') p.heldByUpstream = true
    }
    p.heldByPending = false
    if (p.clientEnded) sock.shutdown()
    resumeClient(p)
  },
  connectionRecv(sock, chunk) {
    const p = sock.data as Pair
    const s = shardState!
    s.stats.add(s.shard, SC.bytesToClients, chunk.length)
    if (p.client?.send(chunk) === 'high-water') { p.upPaused = true; sock.pause() }
  },
  connectionWritable(sock) {
    const p = sock.data as Pair
    if (p.heldByUpstream) { p.heldByUpstream = false; resumeClient(p) }
  },
  connectionEnd(sock) {
    (sock.data as Pair).client?.shutdown()
  },
  connectionDrop(sock, reason, error) {
    const s = state(sock.ctx)
    const p = sock.data as Pair
    if (reason !== 'connect-failed') { upstreamGone(s, p, reason === 'reset' ? 'abort' : 'graceful'); return }
    // A failed connect: count it, let new clients avoid the backend for a health interval
    // (passive health, nginx's max_fails=1), and redispatch the client with its pending bytes.
    upstreamCounted(s, p.slot, -1)
    p.upId = 0
    s.stats.add(s.shard, SC.connectFailures)
    s.stats.addBackend(s.shard, p.slot, BC.failures)
    const code = (error as { code?: string } | undefined)?.code
    if (code !== undefined && BACKEND_FAULTS.has(code)) s.table.markSuspect(p.slot, Date.now() + s.snap.healthIntervalMs)
    dispatch(s, p)
  },
  connectionClose(sock) { upstreamGone(state(sock.ctx), sock.data as Pair, 'graceful') },
}

/**
 * Health of the backend in `slot`: a persistent server connection (engine.connect, made by
 * main) whose incarnations are connect checks, HAProxy's default `check`. Connected → UP, then
 * our FIN (sock.shutdown); the backend closes its end, failover reconnects after the health
 * interval. A connect that fails (refused, unreachable, timeout) → DOWN, retried every interval
 * until one connects, so a down backend comes back by itself. We do not hold an idle connection
 * open: a backend that serves one client at a time (iperf3 -s, measured) would never serve a
 * real one, and idle connections take the backend's connection slots. A backend that keeps the
 * half-open connection is watched by it: its FIN or RST re-checks at once, and kernel keepalive
 * (liveness without a ping) covers a silent death.
 */
function health(slot: number): Protocol {
  return {
    connectionNew(sock) {
      const s = state(sock.ctx)
      s.checkedAt[slot] = Date.now()
      if (s.table.setState(slot, UP, sock.id)) s.stats.addBackend(s.shard, slot, BC.checksOk)
      sock.link(slot) // linked, so what the backend says is read (and ignored), not counted as discarded
      sock.shutdown()
    },
    connectionRecv() {}, // a banner, an "access denied": the connect was the check
    failover(sock) {
      const s = state(sock.ctx)
      const interval = fresh(s).healthIntervalMs
      // The backend closed the check connection right away (the usual case): next check in one
      // interval. It had kept it open for longer than that, so its end is news: check at once.
      const heldFor = Date.now() - s.checkedAt[slot]
      return { reconnect: true, delayMs: heldFor > interval ? 0 : jittered(interval) }
    },
    retry(sock) {
      const s = state(sock.ctx)
      if (s.table.setState(slot, DOWN, sock.id)) s.stats.addBackend(s.shard, slot, BC.checksFailed)
      return jittered(fresh(s).healthIntervalMs)
    },
  }
}

/** ±10%: checks of many proxies (or many backends) do not stay in step. */
function jittered(ms: number): number { return Math.max(1, Math.round(ms * (0.9 + Math.random() * 0.2))) }

const healthProtocols: Record<string, Protocol> = {}
for (let slot = 0; slot < MAX_BACKENDS; slot++) healthProtocols[healthProtocol(slot)] = health(slot)

export default defineProtocols({
  [CLIENT_PROTOCOL]: client,
  [UPSTREAM_PROTOCOL]: upstream,
  ...healthProtocols,
})
