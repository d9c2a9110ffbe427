// Scenarios for the protocol model (test/model/protocol.ts): small ones that CI explores
// completely (every interleaving, every quiescent end) in a few seconds, larger ones for
// `npm run soak`, and for each deliberately broken variant the scenario where its violation
// must be found.
import { scenario, type Bug, type Rule, type Scenario } from './protocol.ts'

/** Explored completely by test/model.test.ts (a few hundred thousand states in all). */
export const CI: Scenario[] = [
  // a client socket reused once; one foreign op of any kind by a possibly stale id; a hook that
  // closes or unlinks; the owner's acquire deferring behind a foreign holder
  scenario('client-requests', {
    clients: 2, ops: 1, opKinds: ['send', 'close', 'abort', 'unlink'], hookActions: ['close', 'unlink'], actions: 1, deferred: true,
  }),
  // two foreign ops in a row against a reused slot (stale sends, closes, unlinks)
  scenario('client-two-ops', { clients: 2, ops: 2, opKinds: ['send', 'close', 'unlink'] }),
  // Q1 across producers: one unlinks, the other sends and then closes the same socket
  scenario('q1-two-producers', { producers: 2, ops: [1, 2], opKinds: ['send', 'close', 'unlink'], chunks: 0 }),
  // three incarnations in one slot, two ops by ids the producer learned along the way
  scenario('reuse', { clients: 3, ops: 2, chunks: 0 }),
  // a server connection: failover after a drop, retry after a failed connect, a throwing timer
  // hook, one foreign op (send/close/unlink) at any point
  scenario('server', {
    clients: 0, servers: 1, ops: 1, drops: 1, connectFails: 1, hookActions: ['throw'], actions: 1, timers: 1, chunks: 0,
  }),
  // high water on a server incarnation, then a new incarnation
  scenario('server-hw', { clients: 0, servers: 1, ops: 1, opKinds: ['send'], drops: 1, highWater: 1, chunks: 0 }),
  // stop() against a client socket and a server connection that may be failing over
  scenario('stop', { slots: 2, clients: 1, servers: 1, ops: 1, opKinds: ['close', 'send'], drops: 1, stop: true, chunks: 0 }),
  // the shard dies (even inside a hook) and is restarted while a close/send is in flight
  scenario('death', { slots: 2, clients: 1, servers: 1, ops: 1, opKinds: ['close', 'send'], death: true, chunks: 0 }),
  // half-close protocol: peer FIN → connectionEnd → local close; unlinked sockets must still close
  scenario('half-open', { clients: 1, ops: 1, opKinds: ['unlink', 'close'], halfOpen: true, chunks: 1 }),
  // socket timers of a client and of server incarnations, behind a busy lock, across a failover
  scenario('timers', { clients: 1, servers: 1, ops: 1, opKinds: ['unlink', 'close'], timers: 2, drops: 1, deferred: true, chunks: 0 }),
]

/** Larger spaces for the soak (each explored up to SS_MODEL_STATES states). */
export const SOAK: Scenario[] = [
  scenario('soak-client', {
    clients: 2, ops: 2, opKinds: ['send', 'close', 'unlink'], hookActions: ['close', 'unlink'], actions: 1, deferred: true,
  }),
  scenario('soak-q1', { producers: 2, ops: 2, opKinds: ['send', 'abort', 'unlink'], chunks: 0 }),
  scenario('soak-reuse-2slots', { slots: 2, clients: 3, ops: 2, chunks: 0 }),
  scenario('soak-server', {
    clients: 0, servers: 1, ops: 2, drops: 1, connectFails: 1, hookActions: ['throw'], actions: 1, chunks: 1, deferred: true,
  }),
  scenario('soak-stop', {
    slots: 2, clients: 1, servers: 1, ops: 1, opKinds: ['close', 'send'], drops: 1, connectFails: 1, stop: true, chunks: 1,
  }),
  scenario('soak-death', { slots: 2, clients: 1, servers: 1, ops: 2, opKinds: ['close', 'send', 'unlink'], death: true, stop: true, chunks: 0 }),
  scenario('soak-timers', { clients: 2, servers: 1, ops: 2, opKinds: ['unlink', 'close', 'send'], timers: 2, drops: 1, deferred: true, chunks: 0 }),
]

/** For random walks (far too large to explore): everything on, bigger budgets. */
export const WALK: Scenario = scenario('walk', {
  slots: 3, clients: 6, servers: 2, producers: 3, ops: 6, opKinds: ['send', 'close', 'abort', 'unlink'], ringCap: 2,
  chunks: 2, hookActions: ['close', 'unlink', 'throw'], actions: 4, drops: 3, connectFails: 2, timers: 3, highWater: 2,
  deferred: true, stop: true, death: true,
})

/** Each broken variant, the CI scenario that must expose it, and the rule it breaks. */
export const BROKEN: Record<Bug, { in: string; rule: Rule }> = {
  'ignore-req-bits': { in: 'client-requests', rule: 'L1' },
  'deferred-no-gen': { in: 'client-requests', rule: 'LOST' },
  'release-with-backlog': { in: 'client-requests', rule: 'LOST' },
  'cas-no-gen': { in: 'client-requests', rule: 'STALE' },
  'double-release': { in: 'client-requests', rule: 'L2' },
  'no-barrier': { in: 'client-two-ops', rule: 'Q1' },
  'take-all-bits': { in: 'q1-two-producers', rule: 'Q1' },
  'throw-finalizes': { in: 'server', rule: 'F2' },
  'arm-no-final-check': { in: 'server', rule: 'F1' },
  'restart-window': { in: 'death', rule: 'LOST' },
  'narrow-gen': { in: 'reuse', rule: 'STALE' },
  'hw-not-reset': { in: 'server-hw', rule: 'HW' },
  'drain-no-gen': { in: 'client-two-ops', rule: 'STALE' },
  'half-unlinked-stuck': { in: 'half-open', rule: 'LIVE' },
}

export const byName = (name: string): Scenario => {
  const sc = [...CI, ...SOAK, WALK].find((s) => s.name === name)
  if (!sc) throw new Error(`no scenario ${name}`)
  return sc
}
