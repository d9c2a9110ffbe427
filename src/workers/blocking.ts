// The blocking pool (DESIGN §7): one small, long-lived piscina pool owned by the engine on the
// main thread, started on first use, closed by stop(). It runs what must never run on an I/O
// thread (S1, T1): the certificate work of the CertStore (src/tls/material.ts) and the tasks
// hooks hand to ctx.offload (src/workers/blocking-task.ts runs them from the Engine.start({ tasks })
// module). Shards never touch it: they post an offload to main over their MessagePort and get the
// result back the same way (engine.ts, shard.ts).

import { Piscina } from 'piscina'
import { SyncsockError } from '../ss/errors.ts'

const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
/** The pool-side runner of ctx.offload tasks. */
export const TASK_RUNNER = new URL(`./blocking-task${ext}`, import.meta.url).href
/** The certificate task (read, parse, validate; returns PEM). */
export const MATERIAL_TASK = new URL(`../tls/material${ext}`, import.meta.url).href

export interface BlockingConfig {
  /** pool threads (default 1: certificate work and offloads are rare and short) */
  maxThreads: number
  /** offloads in flight per shard; ctx.offload answers ERR_SS_BUSY beyond it (default 256) */
  maxOffloadsPerShard: number
}

export class BlockingPool {
  private pool: Piscina | null = null
  private closed = false
  private readonly maxThreads: number

  constructor(cfg: BlockingConfig) { this.maxThreads = cfg.maxThreads }

  /** Has it been started (a task ran)? */
  get started(): boolean { return this.pool !== null }

  /** Run `name` exported by module `filename` on the pool (started lazily). */
  run<T>(filename: string, name: string, input: unknown): Promise<T> {
    if (this.closed) return Promise.reject(new SyncsockError('ERR_SS_STOPPED', 'the blocking pool is closed (engine stopped)'))
    this.pool ??= new Piscina({ minThreads: 1, maxThreads: this.maxThreads, idleTimeout: 30_000, name: 'syncsock-blocking' })
    return this.pool.run(input, { filename, name }) as Promise<T>
  }

  /** stop(): every pool thread ends; tasks still queued are rejected (their results are dropped). */
  async close(): Promise<void> {
    this.closed = true
    const p = this.pool
    this.pool = null
    if (p) await p.destroy()
  }
}
