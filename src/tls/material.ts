// The certificate task: runs on the blocking pool (piscina), never on a shard and never on the
// main thread's loop (T1, skupper-router #1572). It reads the files, parses and validates the
// material — every PEM block parses (a half-written file does not), the key matches the
// certificate, the certificate is valid now, the chain leads to the CA when one is given, and
// OpenSSL accepts the whole as a context — and returns the PEM bytes the shards build their
// contexts from, or why not (a typed reason the CertStore reports; the old material keeps serving).

import { readFile } from 'node:fs/promises'
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto'
import { createSecureContext } from 'node:tls'

type SourceIn = { path: string } | { pem: Uint8Array }

export interface MaterialInput {
  cert?: SourceIn | null
  key?: SourceIn | null
  ca?: SourceIn | null
  /** for tests: the clock the validity check uses (ms since the epoch) */
  now?: number
}

/** Why material was refused (the `reason` of a 'cert-rejected' event). */
export type RejectReason = 'unreadable' | 'not-pem' | 'key-mismatch' | 'expired' | 'not-yet-valid' | 'untrusted' | 'refused-by-openssl'

export type MaterialResult =
  | { ok: true; pem: { cert?: Uint8Array; key?: Uint8Array; ca?: Uint8Array }; fingerprint: string; subject?: string; validTo?: string }
  | { ok: false; reason: RejectReason; message: string; file?: string }

class Refused extends Error {
  readonly reason: RejectReason
  readonly file: string | undefined
  constructor(reason: RejectReason, message: string, file?: string) { super(message); this.reason = reason; this.file = file }
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

async function read(what: string, s: SourceIn): Promise<{ bytes: Buffer; file?: string }> {
  if ('pem' in s) return { bytes: Buffer.from(s.pem) }
  try {
    return { bytes: await readFile(s.path), file: s.path }
  } catch (e) {
    throw new Refused('unreadable', `${what} ${s.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, s.path)
  }
}

/** Every certificate block of a PEM file; a truncated or garbled one is refused. */
function certsOf(what: string, bytes: Buffer, file?: string): X509Certificate[] {
  const text = bytes.toString('latin1')
  const blocks = text.match(CERT_BLOCK) ?? []
  const rest = text.replace(CERT_BLOCK, '')
  if (blocks.length === 0) throw new Refused('not-pem', `${what}${file ? ` ${file}` : ''}: no complete PEM certificate`, file)
  if (rest.includes('-----BEGIN') || rest.includes('-----END')) {
    throw new Refused('not-pem', `${what}${file ? ` ${file}` : ''}: a truncated or garbled PEM block (half-written file?)`, file)
  }
  return blocks.map((b, i) => {
    try { return new X509Certificate(b) } catch (e) {
      throw new Refused('not-pem', `${what}${file ? ` ${file}` : ''}: certificate #${i + 1} does not parse: ${(e as Error).message}`, file)
    }
  })
}

function issuedBy(c: X509Certificate, by: X509Certificate): boolean {
  try { return c.checkIssued(by) && c.verify(by.publicKey) } catch { return false }
}

export async function loadMaterial(input: MaterialInput): Promise<MaterialResult> {
  try {
    const now = input.now ?? Date.now()
    const cert = input.cert ? await read('cert', input.cert) : null
    const key = input.key ? await read('key', input.key) : null
    const ca = input.ca ? await read('ca', input.ca) : null
    const chain = cert ? certsOf('cert', cert.bytes, cert.file) : []
    const cas = ca ? certsOf('ca', ca.bytes, ca.file) : []
    const leaf = chain[0] as X509Certificate | undefined
    if (leaf && key) {
      let k
      try { k = createPrivateKey(key.bytes) } catch (e) {
        throw new Refused('not-pem', `key${key.file ? ` ${key.file}` : ''}: not a private key: ${(e as Error).message}`, key.file)
      }
      if (!leaf.checkPrivateKey(k)) {
        throw new Refused('key-mismatch', `key${key.file ? ` ${key.file}` : ''} does not match certificate ${leaf.subject.replace(/\n/g, ', ')}`, key.file ?? cert?.file)
      }
    }
    if (leaf) {
      const from = Date.parse(leaf.validFrom), to = Date.parse(leaf.validTo)
      if (now > to) throw new Refused('expired', `certificate ${leaf.subject.replace(/\n/g, ', ')} expired ${leaf.validTo}`, cert?.file)
      if (now < from) throw new Refused('not-yet-valid', `certificate ${leaf.subject.replace(/\n/g, ', ')} is valid only from ${leaf.validFrom}`, cert?.file)
    }
    if (leaf && cas.length > 0) {
      // The chain (leaf, then the intermediates of the cert file) must lead to a CA of the bundle.
      let cur = leaf
      let trusted = false
      const rest = chain.slice(1)
      for (let depth = 0; depth < 10 && !trusted; depth++) {
        if (cas.some((c) => issuedBy(cur, c) || cur.fingerprint256 === c.fingerprint256)) { trusted = true; break }
        const next = rest.find((c) => issuedBy(cur, c))
        if (!next) break
        cur = next
      }
      if (!trusted) throw new Refused('untrusted', `certificate ${leaf.subject.replace(/\n/g, ', ')} is not issued by the given CA`, cert?.file)
    }
    try {
      createSecureContext({ cert: cert?.bytes, key: key?.bytes, ca: ca?.bytes })
    } catch (e) {
      throw new Refused('refused-by-openssl', `OpenSSL refused the material: ${(e as Error).message}`, cert?.file)
    }
    const h = createHash('sha256')
    for (const b of [cert?.bytes, key?.bytes, ca?.bytes]) { h.update(b ?? Buffer.alloc(0)); h.update('\0') }
    const u8 = (b: Buffer | undefined) => (b ? new Uint8Array(b) : undefined)
    return {
      ok: true,
      pem: { cert: u8(cert?.bytes), key: u8(key?.bytes), ca: u8(ca?.bytes) },
      fingerprint: h.digest('hex'),
      subject: leaf?.subject.replace(/\n/g, ', '),
      validTo: leaf?.validTo,
    }
  } catch (e) {
    if (e instanceof Refused) return { ok: false, reason: e.reason, message: e.message, file: e.file }
    return { ok: false, reason: 'not-pem', message: (e as Error)?.message ?? String(e) }
  }
}
