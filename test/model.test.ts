// Model check of the slot protocol (test/model/protocol.ts): every interleaving of the owner, the
// foreign producers and the environment in small scenarios, explored completely, with L1, L2, F1,
// F2, Q1 and "a stale id never reaches a new incarnation" checked on every step and every
// quiescent end. Then each deliberately broken variant must be caught: proof the checks can fail.
// Budget: the CI scenarios below, explored completely (a few hundred thousand states, well under
// 30 s on 2 cores). `npm run soak` explores larger scenarios and random walks.
import { test } from './uvu-timeout.ts'
import * as assert from 'uvu/assert'
import { explore, replay, BUGS, type ExploreResult } from './model/protocol.ts'
import { CI, BROKEN, byName } from './model/scenarios.ts'

const line = (r: ExploreResult) =>
  `${r.scenario.padEnd(18)} ${String(r.states).padStart(7)} states ${String(r.transitions).padStart(8)} steps ` +
  `${String(r.terminals).padStart(6)} quiescent ends  depth ${String(r.maxDepth).padStart(2)}  ${r.ms} ms`

const show = (r: ExploreResult) => r.violation ? `${r.violation.message}\n  schedule: ${r.violation.trace.join(' ')}` : ''

let states = 0
let ms = 0
for (const sc of CI) {
  test(`correct protocol, scenario ${sc.name}: no violation on any schedule`, () => {
    const r = explore(sc)
    console.log(line(r))
    states += r.states
    ms += r.ms
    assert.is(r.violation, null, show(r))
    assert.is(r.cut, 0, 'explored completely (no schedule cut by a bound)')
    assert.ok(r.terminals > 0, 'reached quiescent ends')
  })
}

test('totals', () => {
  console.log(`correct protocol: ${states} states in ${CI.length} scenarios, ${ms} ms`)
  assert.ok(states > 100_000, 'the CI budget explores a meaningful space')
})

for (const bug of BUGS) {
  test(`broken variant ${bug}: the explorer finds the violation`, () => {
    const want = BROKEN[bug]
    const sc = { ...byName(want.in), bug }
    const r = explore(sc, { maxStates: 300_000 })
    assert.ok(r.violation, `${bug}: no violation found in ${r.states} states of ${want.in}`)
    assert.is(r.violation!.rule, want.rule, show(r))
    console.log(`${bug.padEnd(22)} found after ${String(r.states).padStart(6)} states: ${r.violation!.message}`)
    // the counterexample replays: the same schedule fails the same way
    let replayed: unknown = null
    try { replay(sc, r.violation!.trace) } catch (e) { replayed = e }
    assert.ok(replayed instanceof Error && replayed.message === r.violation!.message, 'the schedule replays to the same violation')
  })
}

test('every broken variant has a scenario', () => {
  assert.equal(Object.keys(BROKEN).sort(), [...BUGS].sort())
})

test.run()
