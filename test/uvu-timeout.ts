// uvu's `test` with a per-test time bound: a test that hangs fails by its own name
// (`test "<name>" timed out after N ms`) instead of the runner killing the whole file minutes
// later with no name (scripts/run-tests.ts FILE_TIMEOUT_MS). uvu has no timeout of its own.
//
// Test files import `test` from here instead of from 'uvu'; the API is uvu's, plus an optional
// third argument: test(name, fn, { timeoutMs }). The default is SS_TEST_TIMEOUT_MS or 60 s.
// SS_TEST_ONLY selects tests by name (below).
//
// A hung test's handles (a socket, a worker) may keep the process alive after uvu printed its
// totals; once any test timed out, the process exits (code 1) a moment after the suite ends.
import { test as uvuTest } from 'uvu'

export const DEFAULT_TEST_TIMEOUT_MS = Number(process.env.SS_TEST_TIMEOUT_MS ?? 60_000)

export interface TestOptions {
  /** fail this test if it has not settled in this many ms (default DEFAULT_TEST_TIMEOUT_MS) */
  timeoutMs?: number
}

type Handler = (ctx: Record<string, unknown>) => unknown
type UvuHandler = (ctx: Record<string, unknown>) => Promise<void>

let timedOut = 0
/** the test running now, for a hang that leaves nothing to wait for (below) */
let running: string | null = null

// A test stuck on a promise that nothing will ever settle (no handle left) does not hang: the
// process runs out of work and exits, and uvu only says "Exiting early". Name the test.
process.on('exit', () => {
  if (running !== null) console.error(`test "${running}" never settled: nothing was left to wait for`)
})

/** Run `fn`, rejecting with the test's name if it has not settled within `ms`. */
export function bounded(name: string, fn: Handler, ms: number): UvuHandler {
  return async (ctx) => {
    let timer: NodeJS.Timeout | undefined
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut++
        reject(new Error(`test "${name}" timed out after ${ms} ms`))
      }, ms)
      // Not a handle of the test's: it neither keeps the process alive nor shows in
      // process.getActiveResourcesInfo() (tests assert that no handle is left).
      timer.unref()
    })
    running = name
    try {
      await Promise.race([Promise.resolve().then(() => fn(ctx)), limit])
    } finally {
      running = null
      clearTimeout(timer)
    }
  }
}

interface BoundedTest {
  (name: string, fn: Handler, opts?: TestOptions): void
  only(name: string, fn: Handler, opts?: TestOptions): void
  skip(name?: string, fn?: Handler, opts?: TestOptions): void
  before: typeof uvuTest.before
  after: typeof uvuTest.after
  run(): void
}

const msOf = (opts: TestOptions | undefined) => opts?.timeoutMs ?? DEFAULT_TEST_TIMEOUT_MS

/**
 * SS_TEST_ONLY (a JSON array of substrings): run only the tests whose names contain one of them,
 * skip the rest. scripts/mutants.ts uses it to run just the tests that must catch a mutant.
 */
const ONLY: string[] = process.env.SS_TEST_ONLY ? JSON.parse(process.env.SS_TEST_ONLY) : []
const selected = (name: string) => ONLY.length === 0 || ONLY.some((x) => name.includes(x))

export const test: BoundedTest = Object.assign(
  (name: string, fn: Handler, opts?: TestOptions) => {
    if (!selected(name)) { (uvuTest.skip as (n?: string) => void)(name); return }
    uvuTest(name, bounded(name, fn, msOf(opts)))
  },
  {
    only: (name: string, fn: Handler, opts?: TestOptions) => uvuTest.only(name, bounded(name, fn, msOf(opts))),
    skip: (name?: string, fn?: Handler) => (uvuTest.skip as (n?: string, f?: Handler) => void)(name, fn),
    before: uvuTest.before,
    after: uvuTest.after,
    run: () => {
      // Runs after the last test; uvu prints its totals and sets the exit code right after. The
      // exit timer fires only if something still holds the loop open: what a hung test left
      // behind, or (with SS_TEST_ONLY) a file's shared engine whose stop was in a skipped test.
      uvuTest.after(() => {
        if (timedOut > 0) setTimeout(() => process.exit(1), 2000).unref()
        else if (ONLY.length > 0) setTimeout(() => process.exit(process.exitCode ?? 0), 2000).unref()
      })
      uvuTest.run()
    },
  },
)
