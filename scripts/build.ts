// `npm run build` (and `prepack`): a clean dist/ that an installed package can use as is.
//   1. remove dist/ (tsc never deletes outputs of files that no longer exist);
//   2. tsc -p tsconfig.build.json  ->  dist/src/**.{js,d.ts}, dist/bin/syncsock.js;
//   3. declarations: tsc rewrites `./x.ts` to `./x.js` in the .js it emits
//      (rewriteRelativeImportExtensions) but not in the .d.ts (microsoft/TypeScript#61037).
//      Current tsc resolves either, but other tools and older TypeScript do not, so relative
//      `.ts` specifiers in dist/**/*.d.ts become `.js`, exactly like the JavaScript next to them;
//   4. the bin gets its exec bit, and the files the package needs at run time are checked.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const dist = join(root, 'dist')
const fail = (msg: string): never => { console.error(`build: ${msg}`); process.exit(1) }

rmSync(dist, { recursive: true, force: true })

const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root })
if (r.status !== 0) fail(`tsc -p tsconfig.build.json failed (${r.status ?? r.signal})`)

// `from './x.ts'`, `import('./x.ts')`, `import './x.ts'` with a relative specifier
const SPEC = /((?:\bfrom|\bimport)\s*\(?\s*)(['"])(\.\.?\/[^'"]*?)\.([mc]?)ts\2/g
function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)])
}
let rewritten = 0
for (const f of walk(dist).filter((x) => /\.d\.[mc]?ts$/.test(x))) {
  const text = readFileSync(f, 'utf8')
  const out = text.replace(SPEC, (m, head: string, q: string, path: string, m_c: string) =>
    path.endsWith('.d') ? m : `${head}${q}${path}.${m_c}js${q}`)
  if (out !== text) { writeFileSync(f, out); rewritten++ }
  const left = out.split('\n').filter((l) => /(['"])\.\.?\/[^'"]*\.[mc]?ts\1/.test(l) && !/\.d\.[mc]?ts['"]/.test(l))
  if (left.length > 0) fail(`${f} still names .ts files:\n${left.join('\n')}`)
}

const bin = join(dist, 'bin', 'syncsock.js')
for (const f of [join(dist, 'src', 'index.js'), join(dist, 'src', 'index.d.ts'),
  join(dist, 'src', 'workers', 'engine.js'), join(dist, 'src', 'workers', 'shard.js'), bin]) {
  if (!existsSync(f)) fail(`missing ${f}`)
}
if (!readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node\n')) fail(`${bin} lacks the #!/usr/bin/env node line`)
chmodSync(bin, 0o755)
console.log(`build: dist/ ready (${rewritten} declaration files had .ts specifiers rewritten to .js)`)
