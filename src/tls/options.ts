// TLS options at the door (strict, like every option object: DESIGN §3). Pure: no I/O. Each of
// cert/key/ca is a file path (read, validated and watched by the main thread's CertStore, never
// by a shard) or PEM bytes (a Buffer/Uint8Array, or a string holding "-----BEGIN"). What crosses
// to the shards is always PEM (TlsServerSpec / TlsClientSpec): a SecureContext cannot cross
// threads, so each shard builds its own once per update, never per connection.

import { isAbsolute, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SyncsockError, badOption, checkInt } from '../ss/errors.ts'
import { checkBool, optionsObject, rejectUnknownKeys } from '../ss/options.ts'

/** Where a piece of material comes from: a file (watched) or bytes given once. */
export type Source = { path: string } | { pem: Buffer }

/** PEM material as it crosses to the shards (Buffers arrive there as Uint8Arrays). */
export interface Pem { cert?: Uint8Array; key?: Uint8Array; ca?: Uint8Array }

/** listen({ tls }) normalized. */
export interface ServerTlsOptions {
  cert: Source
  key: Source
  ca: Source | null
  requestCert: boolean
  rejectUnauthorized: boolean
  handshakeTimeoutMs: number
  ticketRotateMs: number
}

/** connect({ tls }) normalized. */
export interface ClientTlsOptions {
  ca: Source | null
  cert: Source | null
  key: Source | null
  servername: string | undefined
  rejectUnauthorized: boolean
  handshakeTimeoutMs: number
}

/** A listener's TLS as a shard gets it: the current material of its set, and the shared ticket keys. */
export interface TlsServerSpec {
  set: number
  version: number
  pem: Pem
  requestCert: boolean
  rejectUnauthorized: boolean
  handshakeTimeoutMs: number
  /** 48 bytes, the same on every shard (resumption across shards), rotated together */
  ticketKeys: Uint8Array
}

/** A server connection's TLS as a shard gets it (set -1: PEM given by ctx.connect, not watched). */
export interface TlsClientSpec {
  set: number
  version: number
  pem: Pem
  servername: string | undefined
  rejectUnauthorized: boolean
  handshakeTimeoutMs: number
}

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
export const DEFAULT_TICKET_ROTATE_MS = 3_600_000

const SERVER_KEYS = ['cert', 'key', 'ca', 'requestCert', 'rejectUnauthorized', 'handshakeTimeoutMs', 'ticketRotateMs'] as const
const CLIENT_KEYS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized', 'handshakeTimeoutMs'] as const

/** A path, a file: URL, or PEM bytes. `pathsAllowed` false (a shard's ctx.connect): PEM only. */
export function sourceOf(name: string, v: unknown, pathsAllowed = true): Source {
  if (v instanceof Uint8Array) {
    if (v.length === 0) badOption(name, 'PEM bytes or a file path', 'empty bytes')
    return { pem: Buffer.from(v) }
  }
  if (typeof v === 'string' && v.includes('-----BEGIN')) return { pem: Buffer.from(v) }
  let path: string | null = null
  if (v instanceof URL && v.protocol === 'file:') path = fileURLToPath(v)
  else if (typeof v === 'string' && v.length > 0) path = isAbsolute(v) ? v : resolvePath(v)
  if (path === null) return badOption(name, 'a file path, a file: URL, or PEM bytes (a Buffer, or a string with -----BEGIN)', v)
  if (!pathsAllowed) {
    throw new SyncsockError('ERR_SS_BAD_OPTION',
      `option "${name}": a shard reads no files (ctx.connect takes PEM bytes; give paths to engine.connect, whose main thread watches them)`)
  }
  return { path }
}

const optSource = (name: string, v: unknown, paths = true) => (v === undefined ? null : sourceOf(name, v, paths))

export function parseServerTls(v: unknown, where = 'listen'): ServerTlsOptions {
  const o = optionsObject(v, `${where} option "tls"`)
  rejectUnknownKeys(o, SERVER_KEYS, `${where} tls options`)
  if (o.cert === undefined || o.key === undefined) {
    throw new SyncsockError('ERR_SS_BAD_OPTION', `${where} tls needs both "cert" and "key"`)
  }
  return {
    cert: sourceOf('tls.cert', o.cert),
    key: sourceOf('tls.key', o.key),
    ca: optSource('tls.ca', o.ca),
    requestCert: checkBool('tls.requestCert', o.requestCert, false),
    rejectUnauthorized: checkBool('tls.rejectUnauthorized', o.rejectUnauthorized, true),
    handshakeTimeoutMs: checkInt('tls.handshakeTimeoutMs', o.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, 1, 3_600_000),
    ticketRotateMs: checkInt('tls.ticketRotateMs', o.ticketRotateMs ?? DEFAULT_TICKET_ROTATE_MS, 1000, 7 * 86_400_000),
  }
}

export function parseClientTls(v: unknown, where: string, pathsAllowed = true): ClientTlsOptions {
  const o = optionsObject(v, `${where} option "tls"`)
  rejectUnknownKeys(o, CLIENT_KEYS, `${where} tls options`)
  if ((o.cert === undefined) !== (o.key === undefined)) {
    throw new SyncsockError('ERR_SS_BAD_OPTION', `${where} tls: "cert" and "key" go together (a client certificate needs its key)`)
  }
  if (o.servername !== undefined && (typeof o.servername !== 'string' || o.servername.length === 0)) {
    badOption('tls.servername', 'a non-empty string', o.servername)
  }
  return {
    ca: optSource('tls.ca', o.ca, pathsAllowed),
    cert: optSource('tls.cert', o.cert, pathsAllowed),
    key: optSource('tls.key', o.key, pathsAllowed),
    servername: o.servername as string | undefined,
    rejectUnauthorized: checkBool('tls.rejectUnauthorized', o.rejectUnauthorized, true),
    handshakeTimeoutMs: checkInt('tls.handshakeTimeoutMs', o.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, 1, 3_600_000),
  }
}

/** The PEM of sources that are all bytes (ctx.connect): no file, nothing to watch. */
export function inlinePem(o: { cert: Source | null; key: Source | null; ca: Source | null }): Pem {
  const pem: Pem = {}
  for (const k of ['cert', 'key', 'ca'] as const) {
    const s = o[k]
    if (s && 'pem' in s) pem[k] = s.pem
  }
  return pem
}
