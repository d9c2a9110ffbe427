// Shared plumbing for benches: argument parsing (--quick), the machine line every result must
// carry, a plain-text table, number formatting, results as bench/results/NAME.json, and a
// bounded "start a worker and wait for its message". Generic on purpose: nothing here knows
// what a ring or a lock is. Benches print the comparison (ours, baseline, ratio, machine), not
// just our number (STYLE.md).

import { availableParallelism, cpus, arch, platform, release, totalmem, loadavg } from 'node:os'
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Worker, type WorkerOptions } from 'node:worker_threads'

export interface BenchArgs {
  /** --quick: the whole bench under a minute, same comparison, fewer/shorter runs */
  quick: boolean
  /** every --name value / --name=value / bare --flag (true), for bench-specific options */
  flags: Record<string, string | true>
}

export function parseBenchArgs(argv = process.argv.slice(2)): BenchArgs {
  const flags: Record<string, string | true> = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) continue
    const eq = a.indexOf('=')
    if (eq > 0) flags[a.slice(2, eq)] = a.slice(eq + 1)
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) flags[a.slice(2)] = argv[++i]
    else flags[a.slice(2)] = true
  }
  return { quick: flags.quick === true || flags.quick === 'true', flags }
}

export interface Machine {
  cpu: string
  nproc: number
  node: string
  v8: string
  platform: string
  arch: string
  kernel: string
  memGiB: number
  loadavg1: number
}

export function machine(): Machine {
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    nproc: availableParallelism(),
    node: process.version,
    v8: process.versions.v8,
    platform: platform(),
    arch: arch(),
    kernel: release(),
    memGiB: Math.round(totalmem() / 2 ** 30),
    loadavg1: Math.round(loadavg()[0] * 100) / 100,
  }
}

export function machineLine(m = machine()): string {
  return `${m.cpu}, ${m.nproc} CPUs, ${m.platform}/${m.arch} ${m.kernel}, node ${m.node}, load ${m.loadavg1}`
}

/** A right-aligned text table (first column left-aligned), with a dashed rule under the header. */
export function table(columns: string[], rows: (string | number)[][]): string {
  const cells = [columns, ...rows.map((r) => r.map(String))]
  const width = columns.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? '').length)))
  const line = (r: string[]) => r.map((v, c) => (c === 0 ? v.padEnd(width[c]) : v.padStart(width[c]))).join('  ').trimEnd()
  return [line(cells[0]), width.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n')
}

/** 12345678 -> "12,345,678"; fractional numbers keep `digits` decimals. */
export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** Ratio as "12.3x". */
export function ratio(a: number, b: number): string {
  return b > 0 ? `${(a / b).toFixed(a / b >= 100 ? 0 : a / b >= 10 ? 1 : 2)}x` : 'n/a'
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Write bench/results/NAME.json (git-ignored) with the machine attached; returns its path. */
export function writeResults(name: string, data: Record<string, unknown>, args?: BenchArgs): string {
  const dir = fileURLToPath(new URL('./results/', import.meta.url))
  mkdirSync(dir, { recursive: true })
  const path = `${dir}${name}.json`
  const out = { bench: name, date: new Date().toISOString(), quick: args?.quick ?? false, argv: process.argv.slice(2), machine: machine(), ...data }
  writeFileSync(path, JSON.stringify(out, null, 2) + '\n')
  return path
}

/**
 * A worker whose `{ type }` messages can be awaited in order, each wait bounded. A message
 * `{ type: 'fatal', error }` or a worker error rejects the pending wait.
 */
export class BenchWorker {
  readonly worker: Worker
  private readonly queue: { type?: string }[] = []
  private waiter: { type: string; resolve: (m: unknown) => void; reject: (e: Error) => void } | null = null
  private failure: Error | null = null

  constructor(file: URL | string, options: WorkerOptions) {
    this.worker = new Worker(file, options)
    this.worker.on('message', (m: { type?: string; error?: string }) => {
      if (m?.type === 'fatal') this.fail(new Error(m.error))
      else { this.queue.push(m); this.pump() }
    })
    this.worker.on('error', (e) => this.fail(e))
    this.worker.on('exit', (code) => this.fail(new Error(`worker exited (${code})`)))
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
    const i = this.queue.findIndex((m) => m?.type === w.type)
    if (i < 0) return
    const [m] = this.queue.splice(i, 1)
    this.waiter = null
    w.resolve(m)
  }

  next<T = Record<string, unknown>>(type: string, timeoutMs = 120_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = null; reject(new Error(`no "${type}" from worker within ${timeoutMs} ms`)) }, timeoutMs)
      this.waiter = {
        type,
        resolve: (m) => { clearTimeout(timer); resolve(m as T) },
        reject: (e) => { clearTimeout(timer); reject(e) },
      }
      if (this.queue.some((m) => m?.type === type)) this.pump()
      else if (this.failure) this.fail(this.failure)
    })
  }

  post(m: unknown): void { this.worker.postMessage(m) }

  async terminate(): Promise<void> { await this.worker.terminate() }
}

/** Release threads parked on a start word (Atomics.wait) at once: the timed section begins here. */
export function startGate(): { sab: SharedArrayBuffer; open: () => void } {
  const sab = new SharedArrayBuffer(4)
  const i32 = new Int32Array(sab)
  return { sab, open: () => { Atomics.store(i32, 0, 1); Atomics.notify(i32, 0) } }
}

/** Worker side of startGate: park until opened (bounded). */
export function waitGate(sab: SharedArrayBuffer, timeoutMs = 60_000): void {
  const i32 = new Int32Array(sab)
  const deadline = Date.now() + timeoutMs
  while (Atomics.load(i32, 0) === 0) {
    const left = deadline - Date.now()
    if (left <= 0) throw new Error('start gate never opened')
    Atomics.wait(i32, 0, 0, Math.min(left, 100))
  }
}
