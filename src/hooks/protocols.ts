// defineProtocols: the default export of a hooks module (loaded in every shard), and the
// protocols every engine has built in. Validation happens here, once per shard at load time, so
// a typo in a hook name is an error at start, not a silent no-op under load.

import { SyncsockError } from '../ss/errors.ts'
import { HOOK_NAMES, type Protocol } from './types.ts'

const BRAND = Symbol.for('syncsock.protocols')

export type Protocols = Readonly<Record<string, Protocol>> & { readonly [BRAND]?: true }

export function defineProtocols<T extends Record<string, Protocol>>(protocols: T): T {
  if (protocols === null || typeof protocols !== 'object' || Array.isArray(protocols)) {
    throw new SyncsockError('ERR_SS_BAD_OPTION', 'defineProtocols takes an object of protocols')
  }
  for (const [name, proto] of Object.entries(protocols)) {
    if (!/^[A-Za-z][\w.-]*$/.test(name)) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', `protocol name ${JSON.stringify(name)} must be a plain identifier`)
    }
    if (proto === null || typeof proto !== 'object' || Array.isArray(proto)) {
      throw new SyncsockError('ERR_SS_BAD_OPTION', `protocol ${name} must be an object of hooks`)
    }
    for (const [k, v] of Object.entries(proto)) {
      if (!(HOOK_NAMES as readonly string[]).includes(k)) {
        throw new SyncsockError('ERR_SS_BAD_OPTION', `protocol ${name}: unknown hook ${k} (hooks: ${HOOK_NAMES.join(', ')})`)
      }
      if (typeof v !== 'function') throw new SyncsockError('ERR_SS_BAD_OPTION', `protocol ${name}: hook ${k} must be a function`)
    }
  }
  // An already frozen object (defined before, or frozen by its author) stays as it is.
  if (Object.isExtensible(protocols)) Object.defineProperty(protocols, BRAND, { value: true })
  return Object.freeze(protocols)
}

/** Built in: `echo` writes back what it reads (tests, benches, `syncsock echo`); `discard` eats. */
export const builtinProtocols: Record<string, Protocol> = {
  echo: {
    // Backpressure both ways: stop reading while our send queue is above high water, resume on
    // connectionWritable. A client that reads slowly then slows its own sending instead of
    // filling our queue to the hard cap (where sends would be refused and echo bytes lost).
    connectionRecv(sock, chunk) { if (sock.send(chunk) !== 'ok') sock.pause() },
    connectionWritable(sock) { sock.resume() },
  },
  discard: {},
}

/** Load a hooks module's protocols (default export or `protocols` export) over the built-ins. */
export async function loadProtocols(url: string | null): Promise<Record<string, Protocol>> {
  const out: Record<string, Protocol> = { ...builtinProtocols }
  if (!url) return out
  const mod = await import(url)
  const p = mod.default ?? mod.protocols
  if (p === null || typeof p !== 'object') {
    throw new SyncsockError('ERR_SS_BAD_OPTION', `hooks module ${url} must export default defineProtocols({...})`)
  }
  return Object.assign(out, defineProtocols({ ...p }))
}
