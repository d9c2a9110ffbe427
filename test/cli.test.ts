// The CLI as an operator runs it: `syncsock echo` serves on every shard, prints its address as
// the first JSON line, and a SIGTERM stops it cleanly with exit code 0 (DESIGN §6b).
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { connect, roundTrip, closed } from './net-helpers.ts'

const BIN = new URL('../bin/syncsock.ts', import.meta.url).pathname

test('syncsock echo: first line says where it listens, it echoes, SIGTERM exits 0 and closes clients', async () => {
  const child = spawn(process.execPath, [BIN, 'echo', '--port', '0', '--shards', '2', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  const kill = setTimeout(() => child.kill('SIGKILL'), 20_000)
  try {
    const first = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout })
      rl.once('line', (l) => { rl.close(); resolve(l) })
      child.once('exit', () => reject(new Error(`exited before listening: ${stderr}`)))
    })
    const info = JSON.parse(first) as { listening: { host: string; port: number }; shards: number }
    assert.is(info.shards, 2)
    assert.is(info.listening.host, '127.0.0.1')
    const c = await connect(info.listening.port)
    assert.is((await roundTrip(c, 'hello cli')).toString(), 'hello cli')
    child.kill('SIGTERM')
    await closed(c, 10_000) // the stop sequence closes the client gracefully
    assert.is(await exited, 0, `exit code (stderr: ${stderr})`)
  } finally {
    clearTimeout(kill)
    if (child.exitCode === null) child.kill('SIGKILL')
  }
})

test('syncsock with an unknown command prints usage and exits 2', async () => {
  const child = spawn(process.execPath, [BIN, 'frobnicate'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr.on('data', (d) => { err += d })
  const code = await new Promise<number | null>((r) => child.once('exit', r))
  assert.is(code, 2)
  assert.match(err, 'usage:')
})

test('syncsock echo on a port in use fails with a typed error and exit 1, no hang', async () => {
  const net = await import('node:net')
  const blocker = net.createServer()
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
  const port = (blocker.address() as import('node:net').AddressInfo).port
  try {
    const child = spawn(process.execPath, [BIN, 'echo', '--port', String(port), '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err = ''
    child.stderr.on('data', (d) => { err += d })
    const kill = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const code = await new Promise<number | null>((r) => child.once('exit', r))
    clearTimeout(kill)
    assert.is(code, 1, err)
    assert.match(err, 'ERR_SS_LISTEN')
  } finally { blocker.close() }
})

test.run()
