// Test side of fixtures/api-probe.ts: send one command to a probe socket and await the hook's
// report over the BroadcastChannel (bounded: a missing report is a hang, and fails the test).
import { BroadcastChannel } from 'node:worker_threads'
import type net from 'node:net'
import { encode, type ProbeReport } from './fixtures/probe-codec.ts'

export const PROBE = new URL('./fixtures/api-probe.ts', import.meta.url).pathname
export { SELF, SELF_ID, type ProbeReport } from './fixtures/probe-codec.ts'

/** Listen to probe reports. Call before Engine.start (shards read the channel name at spawn). */
export function probeChannel(channel: string) {
  process.env.SS_PROBE_CHANNEL = channel
  const bc = new BroadcastChannel(channel)
  const reports = new Map<number, ProbeReport>()
  const waiters = new Map<number, (r: ProbeReport) => void>()
  const fired = new Set<number>()
  bc.onmessage = (m: unknown) => {
    const d = (m as { data: ProbeReport & { ev?: string } }).data
    if (d.ev === 'fired') { fired.add(d.n); return }
    reports.set(d.n, d)
    waiters.get(d.n)?.(d)
  }
  let next = 1
  return {
    /** numbers of the commands whose function argument was called */
    fired,
    /** Run `op(...args)` inside the probe socket's hook; resolves with its report. */
    call(c: net.Socket, op: string, args: unknown[] = [], timeoutMs = 3000): Promise<ProbeReport & { cmd: number }> {
      const n = next++
      // JSON, with everything above ASCII escaped so the hook may decode bytes as latin1
      const line = JSON.stringify({ n, op, args: args.map((a) => encode(a)) })
        .replace(/[\u007f-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)
      c.write(`${line}\n`)
      return new Promise((resolve, reject) => {
        const done = (r: ProbeReport) => { clearTimeout(t); waiters.delete(n); resolve({ ...r, cmd: n }) }
        const t = setTimeout(() => {
          waiters.delete(n)
          reject(new Error(`probe ${op} #${n}: no report in ${timeoutMs} ms (hung or lost)`))
        }, timeoutMs)
        const have = reports.get(n)
        if (have) done(have)
        else waiters.set(n, done)
      })
    },
    close: () => bc.close(),
  }
}

/** How the peer ended a client socket: 'reset' (RST → ECONNRESET) or 'fin' (end, then close). */
export function endOf(c: net.Socket, timeoutMs = 3000): Promise<'reset' | 'fin' | 'error'> {
  return new Promise((resolve, reject) => {
    let how: 'reset' | 'fin' | 'error' | null = null
    const t = setTimeout(() => reject(new Error('socket did not end')), timeoutMs)
    c.on('error', (e: NodeJS.ErrnoException) => { how ??= e.code === 'ECONNRESET' ? 'reset' : 'error' })
    c.on('end', () => { how ??= 'fin'; c.end() })
    c.on('close', () => { clearTimeout(t); resolve(how ?? 'fin') })
    c.resume()
  })
}
