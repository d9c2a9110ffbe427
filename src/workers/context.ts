// The shard context hooks see (`sock.ctx`): shard services by socket id. One resolver maps an id
// to what it names on this shard (a live incarnation, an idle server connection, or nothing);
// ids of other shards go to ForeignOps, the same path engine.send/close/unlink take, so a caller
// gets the same answer whichever thread it calls from.

import { C, F_REQ_UNLINK, idShard } from '../ss/layout.ts'
import { SsSocket } from '../ss/socket.ts'
import { SyncsockError, badOption, checkNumber } from '../ss/errors.ts'
import { MAX_TIMER_MS, closeModeOf, type CloseModeArg } from '../ss/options.ts'
import type { ForeignOps } from '../ss/foreign.ts'
import type { SlotTable } from '../ss/slots.ts'
import type { CounterBlock } from '../ss/counters.ts'
import type { Dispatcher } from '../ss/upcall.ts'
import type { ConnManager, ServerConn } from '../hooks/server.ts'
import { normalizeConnect } from '../hooks/retry.ts'
import type {
  ConnectOptions, CtxSendStatus, OffloadDone, OffloadStatus, OpenOptions, Protocol, RequestStatus, ShardContext,
  SocketTimer, SsSocketApi,
} from '../hooks/types.ts'
import { parseOpenOptions, type OpenConfig } from './options.ts'

/** What the context needs from its shard. */
export interface ContextHost {
  readonly shard: number
  readonly shardCount: number
  readonly foreign: ForeignOps
  readonly slots: SlotTable
  readonly conns: ConnManager
  readonly dispatcher: Dispatcher
  readonly counters: CounterBlock
  readonly protocols: Record<string, Protocol>
  readonly isStopping: boolean
  readonly config: unknown
  socketFor(id: number): SsSocket | null
  open(cfg: OpenConfig): number
  connFor(id: number): ServerConn | null
  offload(s: SsSocket, task: string, input: unknown, done: OffloadDone): OffloadStatus
}

/**
 * The socket layer's SsSocket is what hooks get as `sock` (typed SsSocketApi for users; its ctx
 * is this module's ShardContext). Compile-time check that the two stay in step.
 */
export const SOCKET_CONFORMS: SsSocket extends Omit<SsSocketApi, 'ctx'> ? true : never = true

export function makeContext(host: ContextHost): ShardContext {
  const foreign: ForeignOps = host.foreign
  return {
    shard: host.shard,
    shards: host.shardCount,
    config: host.config,
    get stopping() { return host.isStopping },
    send(id: number, bytes: Uint8Array): CtxSendStatus {
      foreign.check(id)
      if (idShard(id) !== host.shard) return foreign.send(id, bytes)
      if (!(bytes instanceof Uint8Array)) throw new SyncsockError('ERR_SS_BAD_OPTION', 'send takes a Uint8Array or Buffer')
      const s = host.socketFor(id)
      if (!s) return host.slots.live(id) ? 'ERR_SS_NOT_CONNECTED' : 'ERR_SS_STALE'
      // The same answers as sock.send: accepted above high water is 'high-water' (the caller
      // should wait for connectionWritable), not 'ok' (issue #8: a local send by id lost it).
      const st = s.send(bytes)
      return st === 'ERR_SS_QUEUE_FULL' ? 'ERR_SS_BACKPRESSURE' : st
    },
    open(opts: OpenOptions): number {
      if (host.isStopping) throw new SyncsockError('ERR_SS_STOPPED', 'engine is stopping: no new connections')
      return host.open(parseOpenOptions(opts, (p) => p in host.protocols))
    },
    close(id: number, how?: CloseModeArg): RequestStatus {
      foreign.check(id)
      const mode = closeModeOf(how, 'ctx.close')
      if (idShard(id) !== host.shard) return foreign.close(id, mode)
      const s = host.socketFor(id)
      if (s) { if (s.final) return 'ERR_SS_CLOSED'; s.close(mode); return 'ok' }
      const conn = host.connFor(id)
      if (conn) { host.dispatcher.locked(conn, () => conn.closeIdle()); return 'ok' }
      return 'ERR_SS_STALE'
    },
    unlink(id: number): RequestStatus {
      foreign.check(id)
      if (idShard(id) !== host.shard) return foreign.unlink(id)
      const s = host.socketFor(id)
      if (!s) return 'ERR_SS_STALE'
      host.dispatcher.locked(s, () => s.applyRequests(F_REQ_UNLINK))
      return 'ok'
    },
    connect(opts: ConnectOptions): number {
      const cfg = normalizeConnect(opts, (p) => p in host.protocols, 'ctx.connect')
      return host.conns.create(host.protocols[cfg.protocol], cfg)
    },
    timer(sock: SsSocketApi, ms: number, fn: (sock: SsSocketApi) => void): SocketTimer {
      const s = sock as SsSocket
      if (!(s instanceof SsSocket) || s.shard !== host.shard) {
        throw new SyncsockError('ERR_SS_BAD_OPTION', 'ctx.timer takes a socket of this shard')
      }
      // setTimeout fires a delay above 2^31-1 ms (or a NaN one) after 1 ms: refuse it, loudly.
      checkNumber('ctx.timer ms', ms, 0, MAX_TIMER_MS)
      if (typeof fn !== 'function') badOption('ctx.timer fn', 'a function', fn)
      // An incarnation whose I/O already closed can never run one (its timers were cleared with
      // it): arming one anyway would only keep the shard's loop alive for up to 24 days.
      if (s.phase === 'closed') return { cancel() {} }
      const t = setTimeout(() => {
        s.timers?.delete(t)
        host.dispatcher.locked(s, () => {
          if (!s.runnable()) return
          try { fn(s as unknown as SsSocketApi) } catch (error) {
            // like any hook error (Dispatcher.call): counted, reported, the incarnation ends
            host.counters.add(C.hookErrors)
            s.hookError({ hook: 'timer', error })
          }
        })
      }, ms)
      ;(s.timers ??= new Set()).add(t)
      return { cancel() { clearTimeout(t); s.timers?.delete(t) } }
    },
    offload(sock: SsSocketApi, task: string, input: unknown, done: OffloadDone): OffloadStatus {
      const s = sock as SsSocket
      if (!(s instanceof SsSocket) || s.shard !== host.shard) {
        throw new SyncsockError('ERR_SS_BAD_OPTION', 'ctx.offload takes a socket of this shard')
      }
      if (typeof task !== 'string' || task.length === 0) badOption('ctx.offload task', 'the name of a function the tasks module exports', task)
      if (typeof done !== 'function') badOption('ctx.offload done', 'a function (sock, result, error)', done)
      return host.offload(s, task, input, done)
    },
  }
}
