// The baselines of bench/reconnect-storm.ts: N persistent connections written the way plain Node
// code usually is, one process per run (forked with an IPC channel, same commands as
// storm-syncsock-client.ts):
//   naive    reconnect at once from the 'close' handler
//   backoff  reconnect after a per-connection setTimeout of full jitter,
//            uniform [0, min(capMs, baseMs * 2^(attempt-1))], attempt = failures in a row
//            (the drop itself is attempt 1; reset when a connect succeeds); 1 s / 30 s default
// `stop` is the usual destroy()-based shutdown: every socket destroyed, no stopping flag, so the
// 'close' handler reconnects (the Icinga #6517 / issue baseline: "destroy()-based shutdown
// caused 10,000 reconnects within 2 s"). No liveness: nothing but TCP would notice a silent peer.
import { connect, type Socket } from 'node:net'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'

const now = (): number => performance.timeOrigin + performance.now()

interface Endpoint { port: number; sock: Socket | null; up: boolean; attempt: number; timer: NodeJS.Timeout | null }

let mode: 'naive' | 'backoff' = 'naive'
let baseMs = 1000
let capMs = 30_000
let n = 0
const eps: Endpoint[] = []
let open = 0
const c = { attempts: 0, connects: 0, drops: 0, connectErrors: 0, dropErrors: 0 }
const errorsByCode: Record<string, number> = {}
let armed: { c: typeof c; errorsByCode: Record<string, number>; expectDrops: number; ru: NodeJS.ResourceUsage } | null = null
let allBackAt = 0
let readyResolve: (() => void) | null = null
// Lifetime and since-arm event-loop delay (the syncsock shards publish a lifetime max).
const eldLife = monitorEventLoopDelay({ resolution: 10 })
const eldArm = monitorEventLoopDelay({ resolution: 10 })
eldLife.enable()
eldArm.enable()

function dial(ep: Endpoint): void {
  ep.timer = null
  c.attempts++
  const s = connect({ port: ep.port, host: '127.0.0.1', noDelay: true })
  ep.sock = s
  s.on('connect', () => {
    ep.up = true
    ep.attempt = 0
    open++
    c.connects++
    if (readyResolve && open === n) { readyResolve(); readyResolve = null }
    if (armed && !allBackAt && c.drops - armed.c.drops >= armed.expectDrops && open === n) {
      allBackAt = now()
      process.send?.({ t: 'event', kind: 'allBack', at: allBackAt })
    }
  })
  s.on('data', () => {})
  s.on('error', (e: NodeJS.ErrnoException) => {
    // Connect failures are errors; an error on an established socket is one way a drop arrives.
    const code = `${ep.up ? 'drop' : 'connect'} ${e.code ?? 'unknown'}`
    errorsByCode[code] = (errorsByCode[code] ?? 0) + 1
    if (ep.up) c.dropErrors++
    else c.connectErrors++
  })
  s.on('close', () => {
    if (ep.sock !== s) return
    ep.sock = null
    if (ep.up) { ep.up = false; open--; c.drops++ }
    if (mode === 'naive') { dial(ep); return }
    ep.attempt++
    const delay = Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(ep.attempt - 1, 30))
    ep.timer = setTimeout(dial, delay, ep)
  })
}

function snapshot(): Record<string, unknown> {
  const d = (k: keyof typeof c): number => c[k] - (armed?.c[k] ?? 0)
  const errs: Record<string, number> = {}
  for (const [k, v] of Object.entries(errorsByCode)) {
    const x = v - (armed?.errorsByCode[k] ?? 0)
    if (x) errs[k] = x
  }
  return {
    open, total: { ...c }, attempts: d('attempts'), connects: d('connects'), drops: d('drops'),
    connectErrors: d('connectErrors'), dropErrors: d('dropErrors'), errorsByCode: errs, allBackAt,
    loopDelayMaxMs: eldArm.max / 1e6, loopDelayMaxLifetimeMs: eldLife.max / 1e6,
    cpu: armed ? cpuSince(armed.ru) : null,
  }
}

/** CPU the process used since arm, and how often the kernel preempted it (2 shared cores). */
function cpuSince(a: NodeJS.ResourceUsage): Record<string, number> {
  const b = process.resourceUsage()
  return {
    userMs: (b.userCPUTime - a.userCPUTime) / 1000, systemMs: (b.systemCPUTime - a.systemCPUTime) / 1000,
    involuntaryCtxSwitches: b.involuntaryContextSwitches - a.involuntaryContextSwitches,
  }
}

type Cmd = { t: string; req: number; [k: string]: unknown }

async function handle(m: Cmd): Promise<Record<string, unknown>> {
  switch (m.t) {
    case 'init': {
      mode = m.mode === 'backoff' ? 'backoff' : 'naive'
      baseMs = Number(m.baseMs ?? baseMs)
      capMs = Number(m.capMs ?? capMs)
      const ports = m.ports as number[]
      n = Number(m.n)
      const ready = new Promise<void>((r) => { readyResolve = r })
      for (let i = 0; i < n; i++) {
        const ep: Endpoint = { port: ports[i % ports.length], sock: null, up: false, attempt: 0, timer: null }
        eps.push(ep)
        dial(ep)
      }
      await ready
      return { open }
    }
    case 'arm':
      armed = { c: { ...c }, errorsByCode: { ...errorsByCode }, expectDrops: Number(m.expectDrops ?? 0), ru: process.resourceUsage() }
      allBackAt = 0
      eldArm.reset()
      return { at: now() }
    case 'report': return snapshot()
    case 'stop': {
      const at = now()
      for (const ep of eps) ep.sock?.destroy()
      return { at, resolvedAt: now() }
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
process.on('disconnect', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))
