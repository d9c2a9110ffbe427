#!/usr/bin/env bash
# Pack smoke test: "a user's first import". Packs this repo (prepack builds dist), installs the
# tarball into a fresh temporary project, and from there — through the package name only —
#   a. smoke.mjs (plain JavaScript) starts, uses and stops an engine;
#   b. smoke.ts does the same with the package's types, type-checked by tsc first;
#   c. the installed bin runs (`echo`, and `proxy` in front of an echo backend), echoes, and stops on SIGTERM with exit 0.
# Everything stays on 127.0.0.1 and every wait is bounded. Prints `pack-smoke: ok: ...` per check.
# Usage: bash scripts/pack-smoke.sh   (needs `npm install` done in the repo; works offline)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE="$REPO/node_modules/.bin/node"
TSC="$REPO/node_modules/.bin/tsc"
# npm itself (a `#!/usr/bin/env node` script) and any bin shebang run on the pinned Node too.
export PATH="$REPO/node_modules/.bin:$PATH"

ok() { echo "pack-smoke: ok: $*"; }
fail() { echo "pack-smoke: FAIL: $*" >&2; exit 1; }

[ -x "$NODE" ] || fail "pinned node missing at $NODE (run npm install in $REPO)"
[ -x "$TSC" ] || fail "tsc missing at $TSC (run npm install in $REPO)"
[ -d "$REPO/node_modules/@types/node" ] || fail "@types/node missing in $REPO/node_modules"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/syncsock-pack-smoke.XXXXXX")"
cleanup() { [ -n "${PACK_SMOKE_KEEP:-}" ] && echo "pack-smoke: kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- pack
mkdir "$WORK/pack"
if ! (cd "$REPO" && timeout 300 npm pack --pack-destination "$WORK/pack" >"$WORK/pack.log" 2>&1); then
  cat "$WORK/pack.log" >&2
  fail "npm pack (with prepack build) failed"
fi
shopt -s nullglob
tarballs=("$WORK"/pack/*.tgz)
shopt -u nullglob
[ "${#tarballs[@]}" = 1 ] || { cat "$WORK/pack.log" >&2; fail "expected one tarball, got ${#tarballs[@]}"; }
TARBALL="${tarballs[0]}"
ok "npm pack -> $(basename "$TARBALL")"

tar -tvzf "$TARBALL" >"$WORK/contents.txt"
for f in package/package.json package/LICENSE package/README.md package/dist/src/index.js \
  package/dist/src/index.d.ts package/dist/src/workers/engine.js package/dist/src/workers/shard.js \
  package/dist/bin/syncsock.js; do
  awk '{print $NF}' "$WORK/contents.txt" | grep -qx "$f" || { cat "$WORK/contents.txt" >&2; fail "tarball lacks $f"; }
done
if awk '{print $NF}' "$WORK/contents.txt" | grep -E '^package/(src|test|bench|bin|repro|scripts)/' >&2; then
  fail "tarball ships sources/tests (above); only dist, docs, README.md, LICENSE belong in it"
fi
grep -E ' package/dist/bin/syncsock\.js$' "$WORK/contents.txt" | grep -q '^-rwx' \
  || fail "dist/bin/syncsock.js has no exec bit in the tarball: $(grep 'dist/bin/syncsock.js' "$WORK/contents.txt")"
ok "tarball has dist (src + bin, exec bit on the bin), LICENSE, README.md; no sources or tests"

# ---------------------------------------------------------------- fresh project
APP="$WORK/app"
mkdir "$APP"
cat >"$APP/package.json" <<'EOF'
{ "name": "syncsock-pack-smoke-app", "version": "0.0.0", "private": true, "type": "module" }
EOF
if ! (cd "$APP" && timeout 180 npm install --no-audit --no-fund "$TARBALL" >"$WORK/install.log" 2>&1); then
  cat "$WORK/install.log" >&2
  fail "npm install of the tarball failed"
fi
PKG="$APP/node_modules/syncsock"
[ -f "$PKG/dist/src/index.js" ] || fail "installed package lacks dist/src/index.js"
deps="$("$NODE" -e 'const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(Object.keys(p.dependencies ?? {}).join(" "))' "$PKG/package.json")"
for d in $deps; do
  # every declared runtime dependency is imported by the built package (piscina: the blocking pool)
  grep -rqE "from ['\"]$d['\"]" "$PKG/dist" --include='*.js' || fail "the package declares a runtime dependency nothing imports: $d"
  [ -d "$APP/node_modules/$d" ] || fail "runtime dependency $d was not installed with the package"
done
ok "installed the tarball into a fresh project (syncsock $("$NODE" -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).version' "$PKG/package.json"), runtime dependencies: ${deps:-none}, each imported)"
if grep -rnE "(from|import)[[:space:]]*\(?[[:space:]]*['\"]\.\.?/[^'\"]*\.[mc]?ts['\"]" "$PKG/dist" --include='*.js' --include='*.d.ts' \
  | grep -vE "\.d\.[mc]?ts['\"]" >&2; then
  fail "the installed dist names .ts files (above): consumers have only .js and .d.ts"
fi
ok "the installed .js and .d.ts import only .js specifiers"

# ---------------------------------------------------------------- a. plain JavaScript
cat >"$APP/smoke.mjs" <<'EOF'
import { Engine, defineProtocols, SyncsockError } from 'syncsock'
import net from 'node:net'
import { randomBytes } from 'node:crypto'

const TAG = 'pack-smoke (js)'
const fail = (msg) => { console.error(`${TAG}: FAIL: ${msg}`); process.exit(1) }
setTimeout(() => fail('timed out after 30 s'), 30_000).unref()
process.on('unhandledRejection', (e) => fail(`unhandled rejection: ${e?.stack ?? e}`))
const within = (ms, what, p) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no result in ${ms} ms`)), ms).unref())])

if (typeof defineProtocols !== 'function') fail('defineProtocols is not exported as a function')
if (typeof SyncsockError !== 'function') fail('SyncsockError is not exported as a class')

const engine = await within(15_000, 'Engine.start', Engine.start({ shards: 2 }))
if (engine.shardCount !== 2) fail(`shardCount ${engine.shardCount}, expected 2`)
const l = await within(10_000, 'engine.listen', engine.listen({ port: 0, host: '127.0.0.1', protocol: 'echo' }))
if (!(l.port > 0) || l.host !== '127.0.0.1') fail(`listener ${JSON.stringify({ host: l.host, port: l.port })}`)

// echo round trip, byte for byte: every byte value, then random bytes
const payload = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(64 * 1024)])
const echoed = await within(10_000, 'echo round trip', new Promise((resolve, reject) => {
  const chunks = []
  let n = 0
  const sock = net.connect({ host: '127.0.0.1', port: l.port }, () => sock.write(payload))
  sock.on('error', reject)
  sock.on('data', (d) => {
    chunks.push(d); n += d.length
    if (n >= payload.length) sock.end()
  })
  sock.on('close', () => resolve(Buffer.concat(chunks)))
}))
if (!echoed.equals(payload)) fail(`echo mismatch: sent ${payload.length} bytes, got ${echoed.length}`)
console.log(`${TAG}: echo round trip of ${payload.length} bytes`)

const s = engine.stats()
if (!(s.accepted >= 1)) fail(`stats().accepted is ${s.accepted}, expected >= 1`)
console.log(`${TAG}: stats().accepted ${s.accepted}`)

// bad options: a SyncsockError with a stable code, both before start and on a running engine
for (const [what, attempt] of [
  ['Engine.start({ shards: 0 })', () => Engine.start({ shards: 0 })],
  ['engine.listen({ port: -1 })', () => engine.listen({ port: -1, protocol: 'echo' })],
]) {
  let err
  try { await within(10_000, what, attempt()) } catch (e) { err = e }
  if (!(err instanceof SyncsockError)) fail(`${what}: expected a SyncsockError, got ${err?.stack ?? err}`)
  if (err.code !== 'ERR_SS_BAD_OPTION') fail(`${what}: code ${err.code}, expected ERR_SS_BAD_OPTION`)
  if (!SyncsockError.is(err, 'ERR_SS_BAD_OPTION')) fail(`${what}: SyncsockError.is(err, 'ERR_SS_BAD_OPTION') is false`)
}
console.log(`${TAG}: bad options give SyncsockError ERR_SS_BAD_OPTION`)

await within(15_000, 'engine.stop', engine.stop({ graceMs: 1000 }))

// nothing of ours may be left: no sockets, servers, workers, message ports (bounded wait for closes)
const BENIGN = new Set(['Timeout', 'Immediate', 'TTYWrap', 'PipeWrap', 'FSReqCallback', 'FSReqPromise'])
let left = []
for (const t0 = Date.now(); Date.now() - t0 < 2000; await new Promise((r) => setTimeout(r, 50))) {
  left = process.getActiveResourcesInfo().filter((r) => !BENIGN.has(r))
  if (left.length === 0) break
}
if (left.length > 0) fail(`handles left after engine.stop(): ${JSON.stringify(left)} (all: ${JSON.stringify(process.getActiveResourcesInfo())})`)
console.log(`${TAG}: engine stopped, no handles left`)
EOF

run_smoke() { # <label> <file>: run with the pinned node inside the app, bounded
  local label="$1" file="$2" rc=0
  (cd "$APP" && timeout 60 "$NODE" "$file") >"$WORK/$label.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    cat "$WORK/$label.log" >&2
    [ "$rc" = 124 ] && fail "$file did not exit within 60 s (something keeps the process alive?)"
    fail "$file exited $rc"
  fi
  sed -n 's/^pack-smoke (\(js\|ts\)): /pack-smoke: ok: \1: /p' "$WORK/$label.log"
}
run_smoke js smoke.mjs

# ---------------------------------------------------------------- b. TypeScript
cat >"$APP/smoke.ts" <<'EOF'
import { Engine, SyncsockError, defineProtocols, builtinProtocols } from 'syncsock'
import type { EngineOptions, EngineStats, ErrorCode, Listener, ListenOptions, Protocol } from 'syncsock'
import net from 'node:net'
import { randomBytes } from 'node:crypto'

const TAG = 'pack-smoke (ts)'
const fail = (msg: string): never => { console.error(`${TAG}: FAIL: ${msg}`); process.exit(1) }
setTimeout(() => fail('timed out after 30 s'), 30_000).unref()
process.on('unhandledRejection', (e: unknown) => fail(`unhandled rejection: ${e instanceof Error ? e.stack : String(e)}`))
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  return Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`${what}: no result in ${ms} ms`)), ms).unref())])
}

// The exported types are real types, not `any`: these must be rejected by tsc.
// @ts-expect-error shards is number | 'auto'
const wrongShards: EngineOptions = { shards: 'many' }
// @ts-expect-error protocol is required
const noProtocol: ListenOptions = { port: 0 }
// @ts-expect-error codes are a closed union
const wrongCode: ErrorCode = 'ERR_NOPE'
void wrongShards; void noProtocol; void wrongCode

const echoProto: Protocol | undefined = builtinProtocols.echo
if (echoProto === undefined) fail('builtinProtocols.echo is missing')
const protos = defineProtocols({ mine: { connectionRecv(sock, chunk) { void sock; void chunk } } })
void protos

const opts: EngineOptions = { shards: 2 }
const engine: Engine = await within(15_000, 'Engine.start', Engine.start(opts))
if (engine.shardCount !== 2) fail(`shardCount ${engine.shardCount}, expected 2`)
const lopts: ListenOptions = { port: 0, host: '127.0.0.1', protocol: 'echo' }
const l: Listener = await within(10_000, 'engine.listen', engine.listen(lopts))

const payload: Buffer = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(64 * 1024)])
const echoed = await within(10_000, 'echo round trip', new Promise<Buffer>((resolve, reject) => {
  const chunks: Buffer[] = []
  let n = 0
  const sock = net.connect({ host: '127.0.0.1', port: l.port }, () => sock.write(payload))
  sock.on('error', reject)
  sock.on('data', (d: Buffer) => {
    chunks.push(d); n += d.length
    if (n >= payload.length) sock.end()
  })
  sock.on('close', () => resolve(Buffer.concat(chunks)))
}))
if (!echoed.equals(payload)) fail(`echo mismatch: sent ${payload.length} bytes, got ${echoed.length}`)
console.log(`${TAG}: echo round trip of ${payload.length} bytes`)

const s: EngineStats = engine.stats()
const accepted: number = s.accepted
if (!(accepted >= 1)) fail(`stats().accepted is ${accepted}, expected >= 1`)
console.log(`${TAG}: stats().accepted ${accepted} (${s.shards.length} shards)`)

let err: unknown
try { await within(10_000, 'Engine.start({ shards: 0 })', Engine.start({ shards: 0 })) } catch (e) { err = e }
if (!(err instanceof SyncsockError)) fail(`expected a SyncsockError, got ${String(err)}`)
else {
  const code: ErrorCode = err.code
  if (code !== 'ERR_SS_BAD_OPTION') fail(`code ${code}, expected ERR_SS_BAD_OPTION`)
}
console.log(`${TAG}: bad option gives SyncsockError ERR_SS_BAD_OPTION`)

await within(15_000, 'engine.stop', engine.stop({ graceMs: 1000 }))
const BENIGN = new Set(['Timeout', 'Immediate', 'TTYWrap', 'PipeWrap', 'FSReqCallback', 'FSReqPromise'])
let left: string[] = []
for (const t0 = Date.now(); Date.now() - t0 < 2000; await new Promise((r) => setTimeout(r, 50))) {
  left = process.getActiveResourcesInfo().filter((r) => !BENIGN.has(r))
  if (left.length === 0) break
}
if (left.length > 0) fail(`handles left after engine.stop(): ${JSON.stringify(left)} (all: ${JSON.stringify(process.getActiveResourcesInfo())})`)
console.log(`${TAG}: engine stopped, no handles left`)
EOF

cat >"$APP/tsconfig.json" <<EOF
{
  "compilerOptions": {
    "target": "ES2023",
    "lib": ["ES2023"],
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "strict": true,
    "noEmit": true,
    "verbatimModuleSyntax": true,
    "erasableSyntaxOnly": true,
    "skipLibCheck": false,
    "types": ["node"],
    "typeRoots": ["$REPO/node_modules/@types"]
  },
  "files": ["smoke.ts"]
}
EOF
if ! (cd "$APP" && timeout 120 "$NODE" "$TSC" -p tsconfig.json --listFiles >"$WORK/tsc.log" 2>&1); then
  cat "$WORK/tsc.log" >&2
  fail "tsc rejected smoke.ts against the installed package's types"
fi
grep -qx "$PKG/dist/src/index.d.ts" "$WORK/tsc.log" || grep -qx "$(realpath "$PKG")/dist/src/index.d.ts" "$WORK/tsc.log" \
  || { cat "$WORK/tsc.log" >&2; fail "tsc did not resolve 'syncsock' to the installed dist/src/index.d.ts"; }
if grep -E '/node_modules/syncsock/.*\.ts$' "$WORK/tsc.log" | grep -v '\.d\.ts$' >&2; then
  fail "tsc pulled TypeScript sources (above) out of the installed package"
fi
ok "ts: tsc --noEmit (strict, NodeNext, skipLibCheck false) resolves 'syncsock' to dist/src/index.d.ts"
run_smoke ts smoke.ts

# ---------------------------------------------------------------- c. the installed bin
BIN_REL=node_modules/syncsock/dist/bin/syncsock.js
head -n1 "$APP/$BIN_REL" | grep -qx '#!/usr/bin/env node' || fail "$BIN_REL has no '#!/usr/bin/env node' shebang"
[ -x "$APP/$BIN_REL" ] || fail "$BIN_REL is not executable"
[ "$(realpath "$APP/node_modules/.bin/syncsock")" = "$(realpath "$APP/$BIN_REL")" ] \
  || fail "node_modules/.bin/syncsock does not link to $BIN_REL"
rc=0; (cd "$APP" && timeout 30 node_modules/.bin/syncsock no-such-command) >/dev/null 2>"$WORK/usage.log" || rc=$?
[ "$rc" = 2 ] && grep -q '^usage:' "$WORK/usage.log" \
  || { cat "$WORK/usage.log" >&2; fail "node_modules/.bin/syncsock no-such-command: exit $rc, expected 2 with usage"; }
ok "bin: shebang, exec bit, node_modules/.bin/syncsock link runs (usage, exit 2)"

cat >"$APP/bin-smoke.mjs" <<'EOF'
// Runs the installed bin as a user would, reads its first JSON line, echoes once, SIGTERMs it.
import { spawn } from 'node:child_process'
import net from 'node:net'
import { createInterface } from 'node:readline'

const TAG = 'pack-smoke (bin)'
let child
const fail = (msg) => { console.error(`${TAG}: FAIL: ${msg}`); child?.kill('SIGKILL'); process.exit(1) }
setTimeout(() => fail('timed out after 30 s'), 30_000).unref()
const within = (ms, what, p) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no result in ${ms} ms`)), ms).unref())])

// MODE echo: `syncsock echo`; MODE proxy: `syncsock proxy` in front of an echo backend made here.
const MODE = process.argv[2] ?? 'echo'
let backend
if (MODE === 'proxy') {
  backend = net.createServer((s) => { s.on('error', () => {}); s.pipe(s) })
  await new Promise((r) => backend.listen(0, '127.0.0.1', r))
  backend.unref()
}
const args = MODE === 'proxy'
  ? ['node_modules/syncsock/dist/bin/syncsock.js', 'proxy', '--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${backend.address().port}`, '--shards', '2']
  : ['node_modules/syncsock/dist/bin/syncsock.js', 'echo', '--port', '0', '--quiet']
child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
let stderr = ''
child.stderr.on('data', (d) => { stderr += d })
const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
try {
  const first = await within(15_000, 'first line of the bin', new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve)
    exited.then(({ code, signal }) => reject(new Error(`bin exited (${code ?? signal}) before printing; stderr: ${stderr}`)))
  }))
  let info
  try { info = JSON.parse(first) } catch { fail(`first line is not JSON: ${first}`) }
  const port = info?.listening?.port
  if (!(port > 0) || info.listening.host !== '127.0.0.1') fail(`first line lacks listening host/port: ${first}`)
  console.log(`${TAG}: node ${args.join(' ')} -> ${first}`)

  const payload = Buffer.from('syncsock pack smoke \u2713\n')
  const echoed = await within(10_000, 'echo round trip', new Promise((resolve, reject) => {
    const chunks = []
    const sock = net.connect({ host: '127.0.0.1', port }, () => sock.write(payload))
    sock.on('error', reject)
    sock.on('data', (d) => { chunks.push(d); if (Buffer.concat(chunks).length >= payload.length) sock.end() })
    sock.on('close', () => resolve(Buffer.concat(chunks)))
  }))
  if (!echoed.equals(payload)) fail(`echo mismatch: ${JSON.stringify(echoed.toString())}`)
  console.log(`${TAG}: echo round trip through the bin (${MODE})`)
} catch (e) { fail(e?.message ?? String(e)) }

child.kill('SIGTERM')
const { code, signal } = await within(15_000, 'bin exit after SIGTERM', exited).catch((e) => fail(e.message))
if (code !== 0) fail(`bin exited with ${code ?? signal} after SIGTERM, expected 0; stderr: ${stderr}`)
console.log(`${TAG}: ${MODE}: SIGTERM -> exit 0`)
EOF
for mode in echo proxy; do
  rc=0; (cd "$APP" && timeout 60 "$NODE" bin-smoke.mjs "$mode") >"$WORK/bin.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    cat "$WORK/bin.log" >&2
    fail "bin smoke ($mode) exited $rc"
  fi
  sed -n 's/^pack-smoke (bin): /pack-smoke: ok: bin: /p' "$WORK/bin.log"
done

echo "pack-smoke: ok: all checks passed"
