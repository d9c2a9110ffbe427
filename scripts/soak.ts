// `npm run soak`: the model checks of test/model.test.ts and test/model-engine.test.ts with
// larger budgets, for a few minutes. Three phases, all derived from one seed (printed first, so a
// failure can be replayed with SS_SOAK_SEED=<seed>):
//   1. exhaustive exploration of the larger SOAK scenarios (test/model/scenarios.ts), each up to
//      SS_MODEL_STATES states (default 3,000,000) within its share of the time;
//   2. seeded random walks through the WALK scenario (far too large to explore), every check on
//      every step;
//   3. model-based runs of the real engine (test/model-engine.test.ts in a child process) with
//      fresh seeds, SS_MODEL_RUNS runs per property (default 30) of up to SS_MODEL_CMDS commands
//      (default 40), until the time is up.
// Env: SS_SOAK_SECONDS (default 300), SS_SOAK_SEED (default random), SS_MODEL_STATES,
// SS_MODEL_RUNS, SS_MODEL_CMDS, SS_SOAK_PHASES (e.g. "1,3"; default all).
// Exit 1 on the first violation or failure, with what is needed to replay it:
//   node scripts/soak.ts replay <scenario> '<schedule>'   a model schedule, step by step
//   node scripts/soak.ts walk <seed> <walks>               a random-walk run (the same seed, count)
//   SS_MODEL_SEED=<seed> … node test/model-engine.test.ts  an engine round
import { spawn } from 'node:child_process'
import { explore, walk, rng, replay, cloneState, type ExploreResult } from '../test/model/protocol.ts'
import { SOAK, WALK, byName } from '../test/model/scenarios.ts'

const [mode, a1, a2] = process.argv.slice(2)
if (mode === 'replay') {
  const sc = byName(a1)
  const trace = a2.trim().split(/\s+/)
  try {
    const states = replay(sc, trace)
    trace.forEach((mv, i) => { if (states[i]) console.log(mv.padEnd(16), JSON.stringify(cloneState(states[i]))) })
    console.log('no violation')
  } catch (e) {
    console.log(String((e as Error).message))
  }
  process.exit(0)
}
if (mode === 'walk') {
  const r = walk(WALK, Number(a1), { walks: Number(a2 ?? 200) })
  console.log(r.violation ? `${r.violation.message}\nschedule: ${r.violation.trace.join(' ')}` : `no violation in ${r.walks} walks`)
  process.exit(0)
}

const seconds = Number(process.env.SS_SOAK_SECONDS ?? 300)
const seed = Number(process.env.SS_SOAK_SEED ?? Math.floor(Math.random() * 2 ** 31))
const maxStates = Number(process.env.SS_MODEL_STATES ?? 3_000_000)
const runs = Number(process.env.SS_MODEL_RUNS ?? 30)
const cmds = Number(process.env.SS_MODEL_CMDS ?? 40)
const phases = new Set((process.env.SS_SOAK_PHASES ?? '1,2,3').split(',').map((x) => x.trim()))
const t0 = Date.now()
const end = t0 + seconds * 1000
const next = rng(seed)
const subSeed = () => Math.floor(next() * 2 ** 31)

console.log(`soak: seed ${seed} (replay with SS_SOAK_SEED=${seed}), ${seconds} s, phases ${[...phases].join(',')}`)

function failed(what: string, detail: string, replay: string): never {
  console.log(`\nsoak FAILED in ${what}\n${detail}\nreplay: ${replay}`)
  process.exit(1)
}

// ---- 1. exhaustive exploration of the larger scenarios
if (phases.has('1')) {
  const share = (end - Date.now()) * (phases.has('3') ? 0.45 : 0.8)
  const per = share / SOAK.length
  for (const sc of SOAK) {
    const r: ExploreResult = explore(sc, { maxStates, deadline: Date.now() + per })
    console.log(`model ${sc.name.padEnd(18)} ${String(r.states).padStart(8)} states ${String(r.transitions).padStart(9)} steps ` +
      `${String(r.terminals).padStart(7)} quiescent  depth ${r.maxDepth}  ${r.cut === 0 ? 'complete' : `bounded (${r.cut} steps cut)`}  ${(r.ms / 1000).toFixed(1)} s`)
    if (r.violation) {
      failed(`the model, scenario ${sc.name}`, `${r.violation.message}\nschedule: ${r.violation.trace.join(' ')}`,
        `node scripts/soak.ts replay ${sc.name} '${r.violation.trace.join(' ')}'`)
    }
  }
}

// ---- 2. random walks
if (phases.has('2')) {
  const until = phases.has('3') ? Date.now() + (end - Date.now()) * 0.2 : end
  let walks = 0, steps = 0, quiet = 0
  while (Date.now() < until) {
    const s = subSeed()
    const r = walk(WALK, s, { walks: 200, deadline: until })
    walks += r.walks; steps += r.steps; quiet += r.quiescent
    if (r.violation) {
      failed(`random walk (seed ${s}, walk ${r.violation.walk})`, `${r.violation.message}\nschedule: ${r.violation.trace.join(' ')}`,
        `node scripts/soak.ts walk ${s} ${r.violation.walk + 1}`)
    }
  }
  console.log(`walks: ${walks} random schedules, ${steps} steps, ${quiet} reached quiescence, no violation`)
}

// ---- 3. the real engine, model-based, with fresh seeds
if (phases.has('3')) {
  let rounds = 0
  while (Date.now() < end - 20_000 || rounds === 0) {
    const s = subSeed()
    rounds++
    // soak budgets run far longer than a CI test's 60 s bound (test/uvu-timeout.ts)
    const env = { ...process.env, SS_MODEL_SEED: String(s), SS_MODEL_RUNS: String(runs), SS_MODEL_CMDS: String(cmds), SS_TEST_TIMEOUT_MS: String(14 * 60_000) }
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, [new URL('../test/model-engine.test.ts', import.meta.url).pathname], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      const timer = setTimeout(() => { out += '\n[soak] killed after 15 min\n'; child.kill('SIGKILL') }, 15 * 60_000)
      child.stdout.on('data', (d) => { out += d })
      child.stderr.on('data', (d) => { out += d })
      child.on('close', (c) => {
        clearTimeout(timer)
        const summary = out.split('\n').filter((l) => /commands|Total|Passed/.test(l)).map((l) => l.replace(/^[•✘ ]+/, '')).join('\n  ')
        console.log(`engine round ${rounds} (seed ${s}): exit ${c}\n  ${summary}`)
        if (c !== 0) process.stdout.write(out)
        resolve(c)
      })
    })
    if (code !== 0) {
      failed(`the real engine (round ${rounds})`, `test/model-engine.test.ts failed with SS_MODEL_SEED=${s}`,
        `SS_MODEL_SEED=${s} SS_MODEL_RUNS=${runs} SS_MODEL_CMDS=${cmds} SS_TEST_TIMEOUT_MS=${14 * 60_000} node test/model-engine.test.ts`)
    }
  }
}

console.log(`\nsoak passed: seed ${seed}, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
