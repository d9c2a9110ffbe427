// Test-side helpers for real worker threads (lock, ring, slots, layout tests): start a fixture,
// wait for a typed message with a bound, always terminate; plus a seeded PRNG and FNV-1a for
// fixtures. Not a test file itself (run-tests.ts only runs *.test.ts). Every wait here is
// bounded: a hung worker fails the test instead of hanging the run.

import { Worker } from 'node:worker_threads'

export type Msg = { type: string; [k: string]: unknown }

/** A fixture worker whose messages are queued so a test can `await next('done')` in order. */
export class TestWorker {
  readonly worker: Worker
  readonly name: string
  private readonly inbox: Msg[] = []
  private waiter: { type: string; resolve: (m: Msg) => void; reject: (e: Error) => void } | null = null
  private failure: Error | null = null
  private exited = false

  constructor(fixture: string, workerData: unknown, name = fixture) {
    this.name = name
    this.worker = new Worker(new URL(`./fixtures/${fixture}`, import.meta.url), { workerData })
    this.worker.on('message', (m: Msg) => {
      if (m && m.type === 'fatal') { this.fail(new Error(`${this.name}: ${String(m.error)}`)); return }
      this.inbox.push(m)
      this.pump()
    })
    this.worker.on('error', (e) => this.fail(e instanceof Error ? e : new Error(String(e))))
    this.worker.on('exit', (code) => {
      this.exited = true
      if (this.waiter) this.fail(new Error(`${this.name} exited (code ${code}) while a test waited for "${this.waiter.type}"`))
    })
  }

  private fail(e: Error): void {
    this.failure ??= e
    const w = this.waiter
    this.waiter = null
    w?.reject(this.failure)
  }

  private pump(): void {
    const w = this.waiter
    if (!w) return
    const i = this.inbox.findIndex((m) => m.type === w.type)
    if (i < 0) return
    const [m] = this.inbox.splice(i, 1)
    this.waiter = null
    w.resolve(m)
  }

  /** The next message of `type` (earlier ones of other types stay queued). Rejects on timeout or worker error. */
  next<T extends Msg = Msg>(type: string, timeoutMs = 30_000): Promise<T> {
    if (this.failure) return Promise.reject(this.failure)
    if (this.exited && !this.inbox.some((m) => m.type === type)) {
      return Promise.reject(new Error(`${this.name} already exited; no "${type}" message`))
    }
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null
        reject(new Error(`${this.name}: no "${type}" message within ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiter = {
        type,
        resolve: (m) => { clearTimeout(timer); resolve(m as T) },
        reject: (e) => { clearTimeout(timer); reject(e) },
      }
      this.pump()
    })
  }

  post(m: unknown): void { this.worker.postMessage(m) }

  async terminate(): Promise<void> {
    if (!this.exited) await this.worker.terminate()
  }
}

/** Terminate every worker, whatever happened. */
export async function terminateAll(ws: (TestWorker | undefined)[]): Promise<void> {
  await Promise.all(ws.map((w) => w?.terminate()))
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Deterministic PRNG (mulberry32) so a failing run can be replayed from its printed seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** FNV-1a 32-bit over u8[off, off+len). */
export function fnv1a(u8: Uint8Array, off: number, len: number): number {
  let h = 0x811c9dc5
  for (let i = off, end = off + len; i < end; i++) h = Math.imul(h ^ u8[i], 0x01000193)
  return h >>> 0
}
