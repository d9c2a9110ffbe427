// The far end of bench/reconnect-storm.ts: loopback listeners in their own process (`ulimit -n`
// is 20,000 per process here, so the N accepted sockets cannot share the client's budget).
// Forked with an IPC channel; every command answers {t:'ok', req, ...}:
//   listen {ports, backlog}  open `ports` listeners on fixed ports below the ephemeral range
//                           (32768+), so no outgoing connect can steal a port during a gap
//   mark                     forget accept timestamps; remember `target` open sockets
//   drop                     destroy every accepted socket at once (scenario A)
//   gap {ms}                 close every listener and destroy every socket, reopen the same ports
//                           after `ms` (scenario B); answers when the listeners are back
//   blackhole                existing sockets go silent without closing: paused, no echo (D)
//   stats {from?, to?}       open sockets, accepts (in the window), when `open` last reached target
// Accepted sockets echo what they read (the liveness ping of the syncsock client).
// The parent's 'disconnect' or SIGTERM ends the process: no orphan outlives the bench.
import { createServer, type Server, type Socket } from 'node:net'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'

const now = (): number => performance.timeOrigin + performance.now()

interface Conn { s: Socket; silent: boolean }
const open = new Set<Conn>()
const servers: Server[] = []
let ports: number[] = []
let backlog = 4096
let accepts: number[] = [] // accept times (epoch ms) since the last mark
let acceptsTotal = 0
let target = 0
let fullAt = 0 // the last time `open` reached `target`
const eld = monitorEventLoopDelay({ resolution: 10 })
eld.enable()

let ru = process.resourceUsage()
const cpuMs = (): number => { const b = process.resourceUsage(); return (b.userCPUTime - ru.userCPUTime + b.systemCPUTime - ru.systemCPUTime) / 1000 }

function onConnection(s: Socket): void {
  const c: Conn = { s, silent: false }
  open.add(c)
  acceptsTotal++
  accepts.push(now())
  if (open.size === target) fullAt = now()
  s.setNoDelay(true)
  s.on('data', (d) => { if (!c.silent) s.write(d) })
  s.on('error', () => {})
  s.on('close', () => open.delete(c))
}

function listenOne(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer({ noDelay: true }, onConnection)
    srv.once('error', reject)
    srv.listen({ port, host: '127.0.0.1', backlog }, () => { srv.off('error', reject); resolve(srv) })
  })
}

/** Open `count` listeners on free ports in [20000, 32000): below the ephemeral range. */
async function listenFresh(count: number): Promise<number[]> {
  const got: number[] = []
  for (let tries = 0; got.length < count && tries < 200; tries++) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    if (got.includes(port)) continue
    try { servers.push(await listenOne(port)); got.push(port) } catch { /* taken: try another */ }
  }
  if (got.length < count) throw new Error(`could only open ${got.length} of ${count} listeners`)
  return got
}

function closeListeners(): void {
  for (const srv of servers) srv.close()
  servers.length = 0
}

function destroyAll(): number {
  const n = open.size
  for (const c of open) c.s.destroy()
  return n
}

type Cmd = { t: string; req: number; [k: string]: unknown }

async function handle(m: Cmd): Promise<Record<string, unknown>> {
  switch (m.t) {
    case 'listen':
      backlog = Number(m.backlog ?? 4096)
      ports = await listenFresh(Number(m.ports ?? 1))
      return { ports }
    case 'mark':
      accepts = []
      target = Number(m.target ?? 0)
      fullAt = 0
      eld.reset()
      ru = process.resourceUsage()
      return { at: now(), open: open.size }
    case 'drop': {
      const at = now()
      const dropped = destroyAll()
      return { at, dropped }
    }
    case 'gap': {
      const at = now()
      closeListeners()
      const dropped = destroyAll()
      await new Promise((r) => setTimeout(r, Number(m.ms)))
      for (const p of ports) {
        // A bounded retry: the port may be briefly busy while the old listener finishes closing.
        for (let i = 0; ; i++) {
          try { servers.push(await listenOne(p)); break } catch (e) {
            if (i >= 50) throw e
            await new Promise((r) => setTimeout(r, 10))
          }
        }
      }
      return { at, dropped, reopenedAt: now() }
    }
    case 'blackhole': {
      const at = now()
      for (const c of open) { c.silent = true; c.s.pause() }
      return { at, silenced: open.size }
    }
    case 'stats': {
      const from = Number(m.from ?? 0), to = Number(m.to ?? Infinity)
      let inWindow = 0
      for (const t of accepts) if (t >= from && t <= to) inWindow++
      return {
        open: open.size, acceptsTotal, acceptsSinceMark: accepts.length, acceptsInWindow: inWindow,
        lastAcceptAt: accepts.length ? accepts[accepts.length - 1] : 0, fullAt,
        loopDelayMaxMs: eld.max / 1e6, cpuMs: cpuMs(),
      }
    }
    default: throw new Error(`unknown command ${m.t}`)
  }
}

process.on('message', (m: Cmd) => {
  handle(m).then(
    (v) => process.send?.({ t: 'ok', req: m.req, ...v }),
    (e: Error) => process.send?.({ t: 'err', req: m.req, message: e.message }),
  )
})
const bye = (): void => { closeListeners(); destroyAll(); process.exit(0) }
process.on('disconnect', bye)
process.on('SIGTERM', bye)
