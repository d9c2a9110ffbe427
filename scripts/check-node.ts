// Fail loudly if the tests would run on a Node without reusePort / type stripping (e.g. the
// machine's Node 20 slipped in because install scripts were skipped). The pinned runtime is the
// `node` dev dependency, which npm puts first on PATH for every script.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 12)) {
  console.error(`syncsock needs Node >= 22.12 (reusePort); this is ${process.version} at ${process.execPath}.`)
  console.error('Run `npm install` (with install scripts enabled) so the pinned node dev dependency is used.')
  process.exit(1)
}
console.log(`node ${process.version} (${process.execPath})`)
