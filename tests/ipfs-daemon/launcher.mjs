// Runs one js-ipfs daemon (Kubo-compatible /api/v0 RPC) for the tests, on one loopback address.
//
//   node launcher.mjs <repo-dir> [api-port] [swarm-port]
//
// Ports default to $IPFS_API_PORT / $IPFS_SWARM_PORT, then 0 (any free port). The address is
// $IPFS_HOST (the kubelet stand-in passes the pod IP), 127.0.0.1 by default. When the daemon is
// ready it prints ONE JSON line on stdout: {"api": "/ip4/127.0.0.1/tcp/N", "swarm": [...], "id": "..."}.
// SIGTERM or SIGINT stop it cleanly (the repo lock is released).

import './polyfill.mjs'

const [repo, apiArg, swarmArg] = process.argv.slice(2)
if (!repo) {
  console.error('usage: node launcher.mjs <repo-dir> [api-port] [swarm-port]')
  process.exit(2)
}

function port (arg, envName) {
  const text = arg ?? process.env[envName] ?? '0'
  const value = Number(text)
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    console.error(`invalid port for ${envName}: ${text}`)
    process.exit(2)
  }
  return value
}
const apiPort = port(apiArg, 'IPFS_API_PORT')
const swarmPort = port(swarmArg, 'IPFS_SWARM_PORT')
const host = process.env.IPFS_HOST || '127.0.0.1'
if (!/^127(\.\d{1,3}){3}$/.test(host)) {
  console.error(`IPFS_HOST must be a loopback IPv4 address: ${host}`)
  process.exit(2)
}

// Loaded after the polyfill on purpose (static imports would be evaluated first).
const { Daemon } = await import('ipfs-daemon')
const { createLibp2p } = await import('libp2p')

const daemon = new Daemon({
  repo,
  silent: true,
  preload: { enabled: false },
  init: { emptyRepo: true, profiles: ['test'] },
  // Applied on every start, so a restart with the same ports keeps the same addresses.
  config: {
    Addresses: {
      Swarm: [`/ip4/${host}/tcp/${swarmPort}`],
      API: `/ip4/${host}/tcp/${apiPort}`,
      Gateway: '',
      RPC: '',
      Delegates: []
    },
    Bootstrap: [],
    Discovery: { MDNS: { Enabled: false }, webRTCStar: { Enabled: false } },
    Swarm: { DisableNatPortMap: true }
  },
  // Without this libp2p keeps dialling every peer it has heard of; tests connect daemons explicitly.
  libp2p: async ({ libp2pOptions }) => createLibp2p({
    ...libp2pOptions,
    connectionManager: { ...libp2pOptions.connectionManager, autoDial: false }
  })
})

let stopping = false
async function stop (signal) {
  if (stopping) return
  stopping = true
  try {
    await daemon.stop()
    process.exit(0)
  } catch (err) {
    console.error(`stopping on ${signal} failed:`, err)
    process.exit(1)
  }
}
process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))

try {
  await daemon.start()
} catch (err) {
  console.error('daemon failed to start:', err)
  process.exit(1)
}

// The bound API address has no public accessor; the HTTP server keeps it here.
const api = daemon._httpApi._apiServers[0].info.ma
const id = await daemon._ipfs.id()
console.log(JSON.stringify({
  api: api.toString(),
  swarm: id.addresses.map(String),
  id: id.id.toString()
}))
