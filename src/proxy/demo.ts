// `syncsock start` (what `npm start` runs): the proxy on built-in defaults that need nothing
// installed — two echo backends started in this process (node:net in the main thread, 127.0.0.1,
// ephemeral ports) and the proxy on 127.0.0.1:8080 in front of them.

import net from 'node:net'
import { DEFAULTS, type HostPort, type ProxyConfig } from './config.ts'

export const DEMO_LISTEN: HostPort = { host: '127.0.0.1', port: 8080 }

export interface EchoBackend { readonly at: HostPort; close(): Promise<void> }

/** A plain echo server; half-close aware: the client's FIN is answered after its bytes. */
export function echoBackend(host = '127.0.0.1'): Promise<EchoBackend> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
    s.pipe(s) // ends our side once the client's ends
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => {
      server.off('error', reject)
      const a = server.address() as net.AddressInfo
      resolve({
        at: { host, port: a.port },
        close: () => new Promise<void>((r) => {
          server.close(() => r())
          for (const s of sockets) s.destroy()
        }),
      })
    })
  })
}

/**
 * Is the demo's port free? The proxy listens with SO_REUSEPORT, so it would share a port with
 * another SO_REUSEPORT listener (say, a second demo) instead of failing: ask with a plain listen.
 */
export function portFree(at: HostPort): Promise<true | string> {
  return new Promise((resolve) => {
    const probe = net.createServer()
    probe.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
    probe.listen({ port: at.port, host: at.host, exclusive: true }, () => probe.close(() => resolve(true)))
  })
}

export function demoConfig(backends: HostPort[]): ProxyConfig {
  return {
    listen: DEMO_LISTEN, backends, balance: DEFAULTS.balance, shards: DEFAULTS.shards, retries: DEFAULTS.retries,
    connectTimeoutMs: DEFAULTS.connectTimeoutMs, healthIntervalMs: DEFAULTS.healthIntervalMs, graceMs: 2000,
    statsJson: false, metrics: null, configFile: null,
  }
}

export function demoBanner(listen: HostPort, backends: HostPort[], shards: number, cli: string): string {
  const b = backends.map((x) => `${x.host}:${x.port}`).join(' and ')
  return [
    `syncsock proxy demo: ${listen.host}:${listen.port} -> echo backends ${b} (in this process), ${shards} shards`,
    `  try it:         nc ${listen.host} ${listen.port}      (type a line; a backend echoes it back)`,
    `  real backends:  ${cli} proxy --listen 0.0.0.0:8080 --backend 10.0.0.5:80 --backend 10.0.0.6:80`,
    `                  (${cli} proxy --help for every flag)`,
    '  Ctrl-C drains and stops.',
  ].join('\n')
}
