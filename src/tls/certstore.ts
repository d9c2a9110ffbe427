// CertStore (main thread, DESIGN §7): the certificate material of every TLS listener and TLS server
// connection, kept current without ever blocking an I/O thread (skupper-router #1572).
//
//   file change (fs.watch on the directory, so an atomic rename is seen; plus a periodic stat)
//     └─ debounce ─▶ pool task: read + validate (src/tls/material.ts) ──invalid──▶ keep the old,
//                         │                                                       report it
//                         └─ valid and changed ─▶ broadcast the PEM to every shard once ─▶ each
//                            shard builds one context and swaps it (new connections only)
//
// One "set" per listener (cert, key, ca?) or per engine.connect with tls (ca?, cert?, key?). A
// set's updates are serialized (one chain), so shards never see them out of order. The spec
// objects handed out (TlsServerSpec / TlsClientSpec) are updated in place: a shard started later
// (a restart) gets the current material. Listener sets also own their session-ticket keys: the
// same 48 bytes on every shard, rotated together every ticketRotateMs.

import { watch, type FSWatcher } from 'node:fs'
import { stat } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { C } from '../ss/layout.ts'
import type { CounterBlock } from '../ss/counters.ts'
import { SyncsockError } from '../ss/errors.ts'
import type { BlockingPool } from '../workers/blocking.ts'
import type { MaterialInput, MaterialResult } from './material.ts'
import type {
  ClientTlsOptions, Pem, ServerTlsOptions, Source, TlsClientSpec, TlsServerSpec,
} from './options.ts'

/** Quiet time after the last file event before the material is read (a write is usually several events). */
export const DEBOUNCE_MS = 100
/** The stat fallback (a file system where fs.watch misses events, e.g. some network mounts). */
export const POLL_MS = 1000

export interface CertHost {
  readonly pool: BlockingPool
  readonly materialTask: string
  /** main's counter block */
  readonly counters: CounterBlock
  /** send one set's update to every running shard; resolves once each swapped, rejects with why not */
  broadcast(spec: TlsServerSpec | TlsClientSpec): Promise<void>
  report(type: string, detail: Record<string, unknown>): void
}

interface Entry {
  spec: TlsServerSpec | TlsClientSpec
  sources: { cert: Source | null; key: Source | null; ca: Source | null }
  paths: string[]
  fingerprint: string
  /** serializes this set's validations and broadcasts */
  chain: Promise<void>
  debounce: NodeJS.Timeout | null
  rotate: NodeJS.Timeout | null
  /** path → last stat signature (the poll fallback) */
  seen: Map<string, string>
}

export class CertStore {
  private readonly host: CertHost
  private readonly sets = new Map<number, Entry>()
  /** directory → its watcher and the sets watching files in it */
  private readonly dirs = new Map<string, { w: FSWatcher; files: Map<string, Set<number>> }>()
  private poll: NodeJS.Timeout | null = null
  private nextSet = 1
  private closed = false

  constructor(host: CertHost) { this.host = host }

  /** A listener's material: validated first (rejects with ERR_SS_TLS_MATERIAL), then watched. */
  async addServer(o: ServerTlsOptions): Promise<TlsServerSpec> {
    const sources = { cert: o.cert, key: o.key, ca: o.ca }
    const seen = await signatures(sources) // before reading: a change while we validate is not missed
    const r = await this.validate(sources)
    if (!r.ok) throw this.materialError(r)
    const spec: TlsServerSpec = {
      set: this.nextSet++, version: 1, pem: r.pem, requestCert: o.requestCert,
      rejectUnauthorized: o.rejectUnauthorized, handshakeTimeoutMs: o.handshakeTimeoutMs, ticketKeys: randomBytes(48),
    }
    const e = this.track(spec, sources, r.fingerprint, seen)
    e.rotate = setInterval(() => this.rotateTickets(e), o.ticketRotateMs)
    return spec
  }

  /** A server connection's material (engine.connect): validated first, then watched. */
  async addClient(o: ClientTlsOptions): Promise<TlsClientSpec> {
    const sources = { cert: o.cert, key: o.key, ca: o.ca }
    const seen = await signatures(sources)
    const r = await this.validate(sources)
    if (!r.ok) throw this.materialError(r)
    const spec: TlsClientSpec = {
      set: this.nextSet++, version: 1, pem: r.pem, servername: o.servername,
      rejectUnauthorized: o.rejectUnauthorized, handshakeTimeoutMs: o.handshakeTimeoutMs,
    }
    this.track(spec, sources, r.fingerprint, seen)
    return spec
  }

  /** The set is no longer used (its listener closed): stop watching it. */
  remove(set: number): void {
    const e = this.sets.get(set)
    if (!e) return
    this.sets.delete(set)
    if (e.debounce) clearTimeout(e.debounce)
    if (e.rotate) clearInterval(e.rotate)
    for (const p of e.paths) {
      const d = this.dirs.get(dirname(p))
      const f = d?.files.get(basename(p))
      f?.delete(set)
      if (d && f && f.size === 0) d.files.delete(basename(p))
      if (d && d.files.size === 0) { d.w.close(); this.dirs.delete(dirname(p)) }
    }
    if (this.sets.size === 0 && this.poll) { clearInterval(this.poll); this.poll = null }
  }

  /**
   * engine.reloadCerts(): re-read and re-validate every set now, and broadcast each (even if
   * unchanged). Resolves when every shard swapped; rejects with the first reason (the sets whose
   * material is broken keep their old material).
   */
  async reloadAll(): Promise<void> {
    const results = await Promise.allSettled([...this.sets.values()].map((e) => this.reload(e, true)))
    const bad = results.find((r) => r.status === 'rejected')
    if (bad) throw (bad as PromiseRejectedResult).reason
  }

  /** stop(): no watcher, no timer, no reload after this. */
  close(): void {
    this.closed = true
    for (const set of [...this.sets.keys()]) this.remove(set)
    for (const d of this.dirs.values()) d.w.close()
    this.dirs.clear()
    if (this.poll) { clearInterval(this.poll); this.poll = null }
  }

  // ---------------- internals ----------------

  private validate(sources: Entry['sources']): Promise<MaterialResult> {
    const input: MaterialInput = { cert: sources.cert, key: sources.key, ca: sources.ca }
    return this.host.pool.run<MaterialResult>(this.host.materialTask, 'loadMaterial', input)
  }

  private materialError(r: Extract<MaterialResult, { ok: false }>): SyncsockError {
    const e = new SyncsockError('ERR_SS_TLS_MATERIAL', `${r.reason}: ${r.message}`)
    Object.assign(e, { reason: r.reason, file: r.file })
    return e
  }

  private track(spec: TlsServerSpec | TlsClientSpec, sources: Entry['sources'], fingerprint: string, seen: Map<string, string>): Entry {
    const paths = pathsOf(sources)
    const e: Entry = { spec, sources, paths, fingerprint, chain: Promise.resolve(), debounce: null, rotate: null, seen }
    this.sets.set(spec.set, e)
    for (const p of paths) {
      const dir = dirname(p)
      let d = this.dirs.get(dir)
      if (!d) {
        // The directory, not the file: an atomic write (write a temp file, rename it over) replaces
        // the inode, and a watch on the old file would never fire again.
        const w = watch(dir, { persistent: true }, (_ev, name) => { if (name) this.changed(dir, name.toString()) })
        w.on('error', () => { /* the poll fallback keeps working */ })
        d = { w, files: new Map() }
        this.dirs.set(dir, d)
      }
      const f = d.files.get(basename(p)) ?? new Set<number>()
      f.add(spec.set)
      d.files.set(basename(p), f)
    }
    if (paths.length > 0 && !this.poll) this.poll = setInterval(() => { void this.pollAll() }, POLL_MS)
    return e
  }

  private changed(dir: string, name: string): void {
    const sets = this.dirs.get(dir)?.files.get(name)
    if (sets) for (const set of sets) { const e = this.sets.get(set); if (e) this.schedule(e) }
  }

  private async pollAll(): Promise<void> {
    for (const e of [...this.sets.values()]) {
      for (const p of e.paths) {
        const sig = await signature(p)
        if (e.seen.get(p) !== sig) { e.seen.set(p, sig); this.schedule(e) }
      }
    }
  }

  private schedule(e: Entry): void {
    if (this.closed || this.sets.get(e.spec.set) !== e) return
    if (e.debounce) clearTimeout(e.debounce)
    e.debounce = setTimeout(() => {
      e.debounce = null
      // A watched change that is broken is reported (event + counter) by reload; nobody awaits it.
      this.reload(e, false).catch(() => {})
    }, DEBOUNCE_MS)
  }

  /** Validate on the pool; broadcast if valid and changed (or forced). Serialized per set. */
  private reload(e: Entry, force: boolean): Promise<void> {
    const run = e.chain.then(async () => {
      if (this.closed) return
      for (const p of e.paths) e.seen.set(p, await signature(p))
      const r = await this.validate(e.sources)
      if (this.closed) return
      if (!r.ok) {
        this.host.counters.add(C.certReloadsRejected)
        const err = this.materialError(r)
        this.host.report('cert-rejected', { set: e.spec.set, code: err.code, reason: r.reason, message: err.message, file: r.file })
        throw err
      }
      if (!force && r.fingerprint === e.fingerprint) return // touched, not changed
      const prev = { pem: e.spec.pem, version: e.spec.version, fingerprint: e.fingerprint }
      e.spec.pem = r.pem as Pem
      e.spec.version++
      e.fingerprint = r.fingerprint
      try {
        await this.host.broadcast(e.spec)
      } catch (err) {
        // A shard could not swap: the spec keeps the new material (shards that swapped serve it).
        this.host.report('cert-reload-failed', { set: e.spec.set, message: (err as Error).message, previous: prev.fingerprint })
        throw err
      }
      this.host.counters.add(C.certReloads)
      this.host.report('cert-reload', { set: e.spec.set, version: e.spec.version, subject: r.subject, validTo: r.validTo, files: e.paths })
    })
    e.chain = run.catch(() => {})
    return run
  }

  private rotateTickets(e: Entry): void {
    const spec = e.spec as TlsServerSpec
    e.chain = e.chain.then(async () => {
      if (this.closed) return
      spec.ticketKeys = randomBytes(48)
      spec.version++
      await this.host.broadcast(spec)
      this.host.counters.add(C.ticketRotations)
    }).catch((err) => this.host.report('cert-reload-failed', { set: spec.set, message: `ticket key rotation: ${(err as Error).message}` }))
  }
}

function pathsOf(sources: Entry['sources']): string[] {
  return [sources.cert, sources.key, sources.ca].flatMap((s) => (s && 'path' in s ? [s.path] : []))
}

async function signatures(sources: Entry['sources']): Promise<Map<string, string>> {
  const m = new Map<string, string>()
  for (const p of pathsOf(sources)) m.set(p, await signature(p))
  return m
}

/** What the poll compares: a rename (new inode), a rewrite (size, mtime) or a removal all change it. */
async function signature(p: string): Promise<string> {
  try {
    const s = await stat(p)
    return `${s.ino}:${s.size}:${s.mtimeMs}`
  } catch (e) {
    return `missing:${(e as NodeJS.ErrnoException).code ?? ''}`
  }
}
