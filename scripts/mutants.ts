// The mutant suite: tests with teeth (test/mutants/README.md). Each test/mutants/*.patch is one
// deliberate single-site bug in src/ that breaks one promise of the mission; its header names the
// promise, the test files that must catch it, and optionally the tests by name:
//
//   # L1: runnable() ignores the pending request bits in the slot
//   # tests: invariants.test.ts
//   # only: L1: a foreign unlink recorded while
//   diff --git a/src/ss/socket.ts b/src/ss/socket.ts
//   ...
//
// For each patch, in order: copy the repo (without .git, dist; node_modules is a symlink) to a
// scratch directory, `git apply` the patch there, run the named test files one process each
// (SS_TEST_ONLY selects the `# only:` tests: test/uvu-timeout.ts), stop at the first failure, and
// record the outcome:
//   killed    a test failed (or the mutant's time bound ran out): the tests catch this bug
//   survived  every test passed: a promise is unguarded — the suite fails
//   broken    the patch no longer applies (src/ moved on): the suite itself needs fixing — fails
// First the same tests run on the unmutated copy (the baseline): a kill only means something if
// they pass without the bug. The last line is `mutants: K killed, S survived, …` (not the
// `N passed, N failed` line CI reads from the test runner).
//
// Usage: node scripts/mutants.ts [name substring ...]   (npm run mutants)
// Env: SS_MUTANT_TIMEOUT_MS (per mutant, default 180 s), SS_MUTANT_KEEP=1 keeps scratch copies,
// SS_MUTANT_BASELINE=0 skips the baseline (while writing a mutant; never in CI), SS_MUTANT_SOURCE=head
// tests HEAD (git archive) instead of the working tree.
// Sequential by design: the tests use real threads and sockets, and CI has 2 cores.
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'

const root = new URL('..', import.meta.url).pathname.replace(/\/$/, '')
const dir = join(root, 'test', 'mutants')
const filters = process.argv.slice(2)
const TIMEOUT_MS = Number(process.env.SS_MUTANT_TIMEOUT_MS ?? 180_000)
const KEEP = process.env.SS_MUTANT_KEEP === '1'
/** copied into each scratch repo: everything but these */
const SKIP = new Set(['.git', 'node_modules', 'dist', 'bench/results'])

interface Mutant { name: string; file: string; promise: string; tests: string[]; only: string[] }
type Outcome = 'killed' | 'survived' | 'broken' | 'timeout'

function parse(file: string): Mutant {
  const text = readFileSync(join(dir, file), 'utf8')
  const header = text.split('\n').filter((l, i, a) => l.startsWith('#') && a.slice(0, i).every((x) => x.startsWith('#')))
  const promise = header[0]?.replace(/^#\s*/, '') ?? ''
  const tests = (header.find((l) => /^#\s*tests:/.test(l)) ?? '').replace(/^#\s*tests:\s*/, '').split(/\s+/).filter(Boolean)
  if (!promise || tests.length === 0) throw new Error(`${file}: needs a first line "# <promise>" and a line "# tests: <files>"`)
  for (const t of tests) {
    if (!t.endsWith('.test.ts')) throw new Error(`${file}: tests must name test files (*.test.ts), got ${t}`)
    if (!existsSync(join(root, 'test', t))) throw new Error(`${file}: no test file test/${t}`)
  }
  const only = header.filter((l) => /^#\s*only:/.test(l)).map((l) => l.replace(/^#\s*only:\s*/, '').trim()).filter(Boolean)
  return { name: file.replace(/\.patch$/, ''), file, promise, tests, only }
}

/** A scratch copy of the repo (the working tree, or HEAD with SS_MUTANT_SOURCE=head); node_modules linked, not copied. */
function scratch(tag: string): string {
  const at = mkdtempSync(join(tmpdir(), `syncsock-mutant-${tag}-`))
  if (process.env.SS_MUTANT_SOURCE === 'head') {
    const r = spawnSync('sh', ['-c', `git -C '${root}' archive HEAD | tar -x -C '${at}'`], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`git archive HEAD failed: ${r.stderr}`)
  } else {
    cpSync(root, at, {
      recursive: true,
      filter: (src) => { const r = relative(root, src); return !SKIP.has(r) && !r.endsWith('.log') },
    })
  }
  symlinkSync(join(root, 'node_modules'), join(at, 'node_modules'))
  return at
}

/**
 * Run test files in `cwd`, one process each (as scripts/run-tests.ts does), stopping at the first
 * that fails: killed; all pass: survived; past the bound: timeout (a hang is caught too).
 */
async function runTests(cwd: string, tests: string[], only: string[] = []): Promise<{ outcome: Outcome; out: string }> {
  const deadline = Date.now() + TIMEOUT_MS
  let out = ''
  for (const t of tests) {
    const code = await new Promise<number | 'timeout'>((resolve) => {
      const child = spawn(join(cwd, 'node_modules/.bin/node'), [join('test', t)], {
        cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
        // a hung test fails by its name well inside the mutant's bound (test/uvu-timeout.ts)
        env: { ...process.env, SS_TEST_TIMEOUT_MS: process.env.SS_TEST_TIMEOUT_MS ?? '30000', SS_TEST_ONLY: only.length ? JSON.stringify(only) : '' },
      })
      child.stdout.on('data', (d) => { out += d })
      child.stderr.on('data', (d) => { out += d })
      const timer = setTimeout(() => {
        out += `\n[mutants] ${t} timed out: the mutant's ${TIMEOUT_MS} ms are up\n`
        try { process.kill(-child.pid!, 'SIGKILL') } catch { /* gone */ }
        resolve('timeout')
      }, Math.max(0, deadline - Date.now()))
      child.on('close', (c) => { clearTimeout(timer); resolve(c ?? 1) })
    })
    if (code === 'timeout') return { outcome: 'timeout', out }
    if (code !== 0) return { outcome: 'killed', out: out + `\n[mutants] ${t} failed (exit ${code})\n` }
  }
  return { outcome: 'survived', out }
}

const tail = (s: string, n: number) => s.replace(/\x1b\[[0-9;]*m/g, '').trimEnd().split('\n').slice(-n).join('\n')
const secs = (ms: number) => (ms / 1000).toFixed(1)

const mutants = readdirSync(dir).filter((f) => f.endsWith('.patch')).sort().map(parse)
  .filter((m) => filters.length === 0 || filters.some((f) => m.name.includes(f)))
if (mutants.length === 0) { console.error(`no mutants in ${relative(root, dir)} match ${filters.join(' ')}`); process.exit(1) }

/** The tests that failed, by name (uvu's FAIL lines; a per-test timeout names its test too). */
function failedTests(out: string): string[] {
  const clean = out.replace(/\x1b\[[0-9;]*m/g, '')
  const names = [...clean.matchAll(/FAIL\s+(?:\S+\s+)?"(.*)"/g)].map((x) => x[1])
  for (const x of clean.matchAll(/\[mutants\] (\S+) timed out:/g)) names.push(`${x[1]} (timed out as a whole)`)
  if (names.length === 0) for (const x of clean.matchAll(/\[mutants\] (\S+) failed \(exit/g)) names.push(`${x[1]} (crashed)`)
  return [...new Set(names)]
}

const t0 = Date.now()
// Baseline: the same tests on the unmutated code must pass, or a "kill" means nothing. Mutants
// that select tests by name (# only:) are grouped by their selection.
const groups = new Map<string, Set<string>>()
for (const m of mutants) {
  const key = JSON.stringify([...m.only].sort())
  const g = groups.get(key) ?? new Set<string>()
  for (const t of m.tests) g.add(t)
  groups.set(key, g)
}
if (process.env.SS_MUTANT_BASELINE !== '0') {
  const at = scratch('baseline')
  const started = Date.now()
  let failed = ''
  for (const [key, files] of groups) {
    const only = JSON.parse(key) as string[]
    let r = await runTests(at, [...files].sort(), only)
    if (r.outcome !== 'survived') {
      // Once more before giving up: a test that fails only now and then (a busy machine) is
      // reported, but does not stop the suite; one that fails twice does.
      console.log(`[mutants] baseline failed once: ${failedTests(r.out).join('; ') || tail(r.out, 5)}; running it again`)
      r = await runTests(at, [...files].sort(), only)
    }
    if (r.outcome !== 'survived') { failed = tail(r.out, 40); break }
  }
  if (!KEEP) rmSync(at, { recursive: true, force: true })
  const n = new Set([...groups.values()].flatMap((g) => [...g])).size
  console.log(`[mutants] baseline (${n} files, unmutated): ${failed ? 'FAIL' : 'pass'} in ${secs(Date.now() - started)} s`)
  if (failed) {
    console.log(failed)
    console.log('[mutants] the tests fail without any mutant: fix them first')
    process.exit(1)
  }
}

const rows: { m: Mutant; outcome: Outcome; ms: number; by: string[] }[] = []
for (const m of mutants) {
  const started = Date.now()
  const at = scratch(m.name)
  let outcome: Outcome
  let out = ''
  const applied = spawnSync('git', ['apply', '--whitespace=nowarn', join(dir, m.file)], { cwd: at, encoding: 'utf8' })
  if (applied.status !== 0) {
    outcome = 'broken'
    out = applied.stderr
  } else {
    ;({ outcome, out } = await runTests(at, m.tests, m.only))
  }
  if (!KEEP) rmSync(at, { recursive: true, force: true })
  const ms = Date.now() - started
  const by = outcome === 'killed' || outcome === 'timeout' ? failedTests(out) : []
  rows.push({ m, outcome, ms, by })
  console.log(`[mutants] ${m.name}: ${outcome} in ${secs(ms)} s`)
  for (const t of by) console.log(`    caught by: ${t}`)
  if (outcome === 'survived' || outcome === 'broken') console.log(tail(out, outcome === 'broken' ? 10 : 15).replace(/^/gm, '    '))
}

const w = Math.max(...rows.map((r) => r.m.name.length))
console.log('\n' + ['mutant'.padEnd(w), 'result  ', '   s', 'promise / caught by'].join('  '))
for (const r of rows) {
  console.log([r.m.name.padEnd(w), r.outcome.padEnd(8), secs(r.ms).padStart(4), r.m.promise].join('  '))
  console.log([''.padEnd(w), ''.padEnd(8), ''.padStart(4), `  ${r.m.tests.join(' ')}${r.by.length ? `: ${r.by.length} test(s) failed` : ''}`].join('  '))
}
const killed = rows.filter((r) => r.outcome === 'killed' || r.outcome === 'timeout').length
const survived = rows.filter((r) => r.outcome === 'survived').length
const broken = rows.filter((r) => r.outcome === 'broken').length
console.log(`\nmutants: ${killed} killed, ${survived} survived, ${broken} did not apply, of ${rows.length}` +
  ` (kill rate ${((100 * killed) / rows.length).toFixed(0)}%) in ${secs(Date.now() - t0)} s`)
process.exit(survived > 0 || broken > 0 ? 1 : 0)
