// The layering rules of DESIGN §2 and the hardening issue, checked on the source: the socket
// layer (src/ss) defines the upcall contract and never imports the hooks layer or the workers;
// the proxy (src/proxy) is built on the public API only (src/index.ts, its own files, node:
// builtins), as an application would be; the CLI imports only the public API and the proxy.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const root = new URL('../', import.meta.url).pathname
const importsOf = (file: string) => [...readFileSync(join(root, file), 'utf8').matchAll(/^\s*(?:import|export)[^'"]*from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1])

test('src/ss imports nothing from src/hooks or src/workers', () => {
  const bad: string[] = []
  for (const f of readdirSync(join(root, 'src/ss'))) {
    if (!f.endsWith('.ts')) continue
    for (const spec of importsOf(`src/ss/${f}`)) if (spec.startsWith('..')) bad.push(`src/ss/${f} imports ${spec}`)
  }
  assert.equal(bad, [])
})

test('the CLI imports only the public API and the proxy', () => {
  const bad = importsOf('bin/syncsock.ts')
    .filter((s) => !s.startsWith('node:'))
    .filter((s) => s !== '../src/index.ts' && !/^\.\.\/src\/proxy\/[\w-]+\.ts$/.test(s))
  assert.equal(bad, [])
  assert.ok(importsOf('bin/syncsock.ts').includes('../src/index.ts'))
})

test('src/proxy imports only the public API (../index.ts), its own files and node: builtins', () => {
  const bad: string[] = []
  const files = readdirSync(join(root, 'src/proxy')).filter((f) => f.endsWith('.ts'))
  assert.ok(files.length > 0)
  for (const f of files) {
    const text = readFileSync(join(root, 'src/proxy', f), 'utf8')
    if (/\bimport\s*\(/.test(text)) bad.push(`src/proxy/${f} has a dynamic import()`)
    for (const spec of importsOf(`src/proxy/${f}`)) {
      if (spec === '../index.ts' || spec.startsWith('node:') || /^\.\/[\w-]+\.ts$/.test(spec)) continue
      bad.push(`src/proxy/${f} imports ${spec}`)
    }
  }
  assert.equal(bad, [])
})

test.run()
