// Runs every test/*.test.ts in its own process (so leaked handles or workers of one file cannot
// hide in another's), streams its output, sums uvu's counts, and ends with the plain line
// `N passed, N failed` that CI reads. Exit 1 if anything failed or a file crashed.
// Usage: node scripts/run-tests.ts [substring filter...]
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

const dir = new URL('../test/', import.meta.url).pathname
const filters = process.argv.slice(2)
const files = readdirSync(dir).filter((f) => f.endsWith('.test.ts'))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort()
const FILE_TIMEOUT_MS = Number(process.env.SS_TEST_FILE_TIMEOUT_MS ?? 240_000)

let passed = 0, failed = 0, skipped = 0
const crashed: string[] = []
const t0 = Date.now()
for (const f of files) {
  const started = Date.now()
  const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
    const child = spawn(process.execPath, [join(dir, f)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let text = ''
    const onData = (d: Buffer) => { text += d; process.stdout.write(d) }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    const timer = setTimeout(() => { text += `\n[run-tests] ${f} timed out after ${FILE_TIMEOUT_MS} ms\n`; child.kill('SIGKILL') }, FILE_TIMEOUT_MS)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, text }) })
  })
  const clean = out.text.replace(/\x1b\[[0-9;]*m/g, '')
  const total = Number(/Total:\s+(\d+)/.exec(clean)?.[1] ?? NaN)
  const ok = Number(/Passed:\s+(\d+)/.exec(clean)?.[1] ?? NaN)
  const sk = Number(/Skipped:\s+(\d+)/.exec(clean)?.[1] ?? 0)
  if (Number.isNaN(total) || Number.isNaN(ok)) {
    crashed.push(f); failed++
  } else {
    // uvu's Total counts the tests it ran: skipped ones (test.skip, or not selected by .only) are
    // not in it, so failures are Total - Passed (subtracting Skipped too went negative).
    passed += ok; skipped += sk; failed += total - ok
    if (out.code !== 0 && total - ok === 0) { crashed.push(f); failed++ }
  }
  console.log(`[run-tests] ${f}: exit ${out.code} in ${((Date.now() - started) / 1000).toFixed(1)} s`)
}
if (crashed.length) console.log(`[run-tests] files that crashed or exited non-zero: ${crashed.join(', ')}`)
console.log(`[run-tests] ${files.length} files in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed > 0 || files.length === 0 ? 1 : 0)
