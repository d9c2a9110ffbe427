// A small TCP fault proxy on loopback for the server-connection tests: it sits between the
// engine and a backend, and the test flips its mode at any time.
//
//   pass      forward both ways (the healthy network)
//   rst       accept, then reset at once (socket.resetAndDestroy): the client saw the handshake
//   silence   accept, never connect upstream, never answer (bytes are read and thrown away)
//   stop      live connections stop forwarding both ways (a listener that stops answering);
//             new connections are accepted and silent, as in `silence`
//   delay     hold every chunk `delayMs` before forwarding it (order kept)
//
// The mode is read per accept and per chunk, so a flip takes effect on live connections too.
// close() ends every socket and timer it made: a test that closes its proxy leaves no handle.
import net from 'node:net'

export type FaultMode = 'pass' | 'rst' | 'silence' | 'stop' | 'delay'

export class FaultProxy {
  mode: FaultMode = 'pass'
  delayMs = 0
  /** connections accepted so far (every mode) */
  accepts = 0
  /** bytes forwarded upstream (client → backend) */
  forwarded = 0
  readonly port: number
  readonly host: string
  private readonly server: net.Server
  private readonly target: { host: string; port: number }
  private readonly sockets = new Set<net.Socket>()
  private readonly clients = new Set<net.Socket>()
  private readonly timers = new Set<NodeJS.Timeout>()

  private constructor(server: net.Server, host: string, port: number, target: { host: string; port: number }) {
    this.server = server
    this.host = host
    this.port = port
    this.target = target
  }

  static start(target: { host?: string; port: number }, opts: { host?: string; port?: number; mode?: FaultMode } = {}): Promise<FaultProxy> {
    const host = opts.host ?? '127.0.0.1'
    const t = { host: target.host ?? '127.0.0.1', port: target.port }
    const server = net.createServer({ allowHalfOpen: false, noDelay: true })
    return new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen({ port: opts.port ?? 0, host }, () => {
        server.off('error', reject)
        const p = new FaultProxy(server, host, (server.address() as net.AddressInfo).port, t)
        if (opts.mode) p.mode = opts.mode
        server.on('connection', (c) => p.onConnection(c))
        resolve(p)
      })
    })
  }

  setMode(mode: FaultMode, delayMs = this.delayMs): void {
    this.mode = mode
    this.delayMs = delayMs
  }

  /** Live client-side connections (each pairs with at most one upstream socket). */
  get live(): number { return this.clients.size }

  /** Reset every live connection (both sides), as a crashing middlebox would. */
  resetAll(): void {
    for (const s of [...this.sockets]) { if (!s.destroyed) s.resetAndDestroy() }
  }

  private track(s: net.Socket): void {
    this.sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => this.sockets.delete(s))
  }

  private onConnection(c: net.Socket): void {
    this.accepts++
    this.track(c)
    this.clients.add(c)
    c.once('close', () => this.clients.delete(c))
    if (this.mode === 'rst') { c.resetAndDestroy(); return }
    if (this.mode === 'silence' || this.mode === 'stop') { c.on('data', () => {}); return }
    const u = net.connect({ host: this.target.host, port: this.target.port, noDelay: true })
    this.track(u)
    const forward = (from: net.Socket, to: net.Socket, up: boolean) => {
      from.on('data', (chunk: Buffer) => {
        if (this.mode === 'stop' || this.mode === 'silence') return // thrown away: nobody answers
        const write = () => { if (!to.destroyed) { to.write(chunk); if (up) this.forwarded += chunk.length } }
        if (this.mode === 'delay' && this.delayMs > 0) {
          const t = setTimeout(() => { this.timers.delete(t); write() }, this.delayMs)
          this.timers.add(t)
        } else write()
      })
      from.once('end', () => { if (!to.destroyed) to.end() })
      from.once('close', () => { if (!to.destroyed) to.destroy() })
    }
    forward(c, u, true)
    forward(u, c, false)
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    const done = new Promise<void>((r) => this.server.close(() => r()))
    for (const s of [...this.sockets]) s.destroy()
    await done
  }
}
