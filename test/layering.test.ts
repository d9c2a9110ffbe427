// The layering rules of DESIGN §2 and the hardening issue, checked on the source: the socket
// layer (src/ss) defines the upcall contract and never imports the hooks layer or the workers;
// the CLI imports only the public API (src/index.ts), as an application would.
import { test } from 'uvu'
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

test('the CLI imports only the public API', () => {
  const local = importsOf('bin/syncsock.ts').filter((s) => s.startsWith('.'))
  assert.equal(local, ['../src/index.ts'])
})

test.run()
