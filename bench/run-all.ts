// `npm run bench`: run every bench/*.ts (except this file and lib.ts) one after another, each in
// its own process on this same node, passing the arguments through (e.g. `npm run bench -- --quick`).
// Exit 1 if any bench failed.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const dir = fileURLToPath(new URL('.', import.meta.url))
const benches = readdirSync(dir).filter((f) => f.endsWith('.ts') && f !== 'lib.ts' && f !== 'run-all.ts').sort()
const failed: string[] = []
for (const f of benches) {
  console.log(`\n=== bench/${f} ${process.argv.slice(2).join(' ')}`)
  const r = spawnSync(process.execPath, [dir + f, ...process.argv.slice(2)], { stdio: 'inherit' })
  if (r.status !== 0) failed.push(`${f} (${r.status ?? r.signal})`)
}
console.log(failed.length ? `\nfailed: ${failed.join(', ')}` : `\n${benches.length} benches ran`)
process.exit(failed.length ? 1 : 0)
