// Smoke test of `syncsock proxy` as an operator runs it (the thorough end-to-end tests are
// test/proxy*.test.ts): the first stdout line is JSON with the listening address, clients reach
// both backends (round robin) and get their bytes back, a client's FIN is forwarded while the
// answer still flows back, SIGTERM drains and exits 0, and a bad flag is one line and exit 2.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import net from 'node:net'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { closed, connect, roundTrip } from './net-helpers.ts'

const BIN = new URL('../bin/syncsock.ts', import.meta.url).pathname

/** A backend that answers each chunk with "<name>:<chunk>" and ends after the client's FIN. */
function taggedBackend(name: string): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
    s.on('data', (d) => s.write(`${name}:${d}`))
    s.on('end', () => s.end(`${name}:bye`))
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => { server.close(() => r()); for (const s of sockets) s.destroy() }),
  })))
}

/** Reject if `p` has not settled within ms (every wait here is bounded: a broken proxy fails, never hangs). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms) }),
  ])
}

function run(args: string[]): { child: ChildProcess; stderr: () => string; exited: Promise<number | null>; first: Promise<string> } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d) => { stderr += d })
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  const first = new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! })
    rl.once('line', (l) => { rl.close(); resolve(l) })
    child.once('exit', (code) => reject(new Error(`exited ${code} before its first line: ${stderr}`)))
  })
  first.catch(() => {})
  return { child, stderr: () => stderr, exited, first }
}

test('syncsock proxy: first line, round robin over two backends, half-close forwarded, SIGTERM exits 0', async () => {
  const a = await taggedBackend('A')
  const b = await taggedBackend('B')
  const p = run(['proxy', '--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${a.port}`, '--backend', `127.0.0.1:${b.port}`, '--shards', '2'])
  const kill = setTimeout(() => p.child.kill('SIGKILL'), 30_000)
  try {
    const info = JSON.parse(await within(p.first, 20_000, 'the first line')) as { listening: { host: string; port: number }; shards: number; pid: number; backends: { host: string; port: number }[] }
    assert.is(info.listening.host, '127.0.0.1')
    assert.ok(info.listening.port > 0)
    assert.is(info.shards, 2)
    assert.is(info.pid, p.child.pid)
    assert.equal(info.backends, [{ host: '127.0.0.1', port: a.port }, { host: '127.0.0.1', port: b.port }])

    // each shard rotates on its own, so a handful of clients reaches both backends
    const seen = new Set<string>()
    for (let i = 0; i < 8 && seen.size < 2; i++) {
      const c = await connect(info.listening.port)
      const reply = (await roundTrip(c, `hello${i}`, `X:hello${i}`.length)).toString()
      assert.match(reply, new RegExp(`^[AB]:hello${i}$`))
      seen.add(reply[0])
      c.destroy()
    }
    assert.equal([...seen].sort(), ['A', 'B'], 'both backends served clients')

    // half-close: our FIN reaches the backend, its answer and its FIN come back
    const c = net.connect({ port: info.listening.port, host: '127.0.0.1', allowHalfOpen: true })
    c.on('error', () => {})
    const parts: Buffer[] = []
    c.on('data', (d) => parts.push(d))
    const ended = new Promise<void>((r) => c.once('end', () => r()))
    c.end('last words')
    await within(ended, 5000, 'the backend\'s FIN through the proxy after ours')
    assert.match(Buffer.concat(parts).toString(), /^[AB]:last words[AB]:bye$/)
    c.destroy()

    // a client still open when SIGTERM arrives is closed by the drain; the process exits 0
    const open = await connect(info.listening.port)
    await roundTrip(open, 'still here', 'X:still here'.length)
    p.child.kill('SIGTERM')
    open.end() // the client finishes: the drain ends at once, well before --grace
    await closed(open, 10_000)
    assert.is(await within(p.exited, 15_000, 'exit after SIGTERM'), 0, `exit code (stderr: ${p.stderr()})`)
    assert.match(p.stderr(), 'SIGTERM: not accepting')
  } finally {
    clearTimeout(kill)
    if (p.child.exitCode === null) p.child.kill('SIGKILL')
    await a.close()
    await b.close()
  }
})

test('syncsock proxy: a bad flag value is one line naming it, exit 2', async () => {
  const p = run(['proxy', '--listen', '127.0.0.1:0', '--backend', '127.0.0.1:9', '--balance', 'random'])
  assert.is(await within(p.exited, 10_000, 'exit'), 2)
  const lines = p.stderr().trim().split('\n')
  assert.is(lines.length, 1, p.stderr())
  assert.match(lines[0], /^syncsock proxy: --balance: .*"random"/)
})

test.run()
