// Fills a js-ipfs repository, offline and in-process, with COUNT small raw blocks, each pinned
// recursively: a daemon that already holds a large pinset, made in minutes rather than the hours
// COUNT `pin/add` calls through the HTTP API would take. Run it before the daemon starts on REPO
// (`launcher.mjs` then opens the repository as it finds it).
//
//   node fill.mjs <repo-dir> <seed> <count>
//
// Block i holds 16 bytes: SEED then i, both big-endian u64 (the `cluster-bench` fixture's CIDs:
// sha2-256, raw codec, CIDv1). Progress goes to stderr; the last stdout line is one JSON object
// {"pins": COUNT, "seconds": S}.

import './polyfill.mjs'

const [repo, seedArg, countArg] = process.argv.slice(2)
if (!repo || seedArg === undefined || countArg === undefined) {
  console.error('usage: node fill.mjs <repo-dir> <seed> <count>')
  process.exit(2)
}
let seed, count
try {
  seed = BigInt.asUintN(64, BigInt(seedArg))
  count = Number(countArg)
  if (BigInt(seedArg) !== seed || !Number.isSafeInteger(count) || count < 0) throw new Error('out of range')
} catch (err) {
  console.error(`invalid seed or count (${seedArg}, ${countArg}): ${err.message}`)
  process.exit(2)
}

const { create } = await import('ipfs-core')

// Blocks written at once: enough to keep the datastore busy, few enough to bound memory.
const IN_FLIGHT = 256
const started = Date.now()
const ipfs = await create({
  repo,
  silent: true,
  offline: true,
  start: false,
  preload: { enabled: false },
  init: { emptyRepo: true, profiles: ['test'] }
})

function block (i) {
  const data = new Uint8Array(16)
  const view = new DataView(data.buffer)
  view.setBigUint64(0, seed)
  view.setBigUint64(8, BigInt(i))
  return data
}

let next = 0
let done = 0
let reported = Date.now()
async function worker () {
  while (next < count) {
    const i = next++
    // Raw blocks have no links: a recursive pin of one is the block itself.
    await ipfs.block.put(block(i), { format: 'raw', mhtype: 'sha2-256', version: 1, pin: true })
    done++
    if (Date.now() - reported >= 10_000) {
      reported = Date.now()
      const seconds = (reported - started) / 1000
      console.error(`fill: ${done} of ${count} pins after ${seconds.toFixed(0)} s (${(done / seconds).toFixed(0)}/s)`)
    }
  }
}
await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
await ipfs.stop()
console.log(JSON.stringify({ pins: count, seconds: (Date.now() - started) / 1000 }))
