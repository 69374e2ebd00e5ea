#!/usr/bin/env node
// Milliseconds since this process started (Node's time origin), read as early as possible so the
// `ms` fields of the JSON lines are comparable with the Rust peer's "since process start".
const sinceStart = () => Math.round(performance.now())
// JavaScript peers for the network-namespace NAT lab (ats-p2p-swarm/tests/support/netlab.rs).
//
//   node netlab-peer.js dht    --host H --port P [--nodes N]   bootstrapper + N persistent DHT nodes
//   node netlab-peer.js relay  --bootstrap H:P --host H [--seed HEX64]
//                                                              npm blind-relay server on a DHT node
//   node netlab-peer.js server --bootstrap H:P --seed HEX64 [--bytes N --each-way]
//                              [--relay-through KEY] [--relay-host H]
//   node netlab-peer.js client --bootstrap H:P --key HEX64 --bytes N [--each-way]
//                              [--relay-through KEY] [--relay-host H] [--timeout-ms T]
//
// Every line on stdout is one JSON object with an "event" field; `ms` is milliseconds since process
// start. Errors: {"event":"error","code":...,"message":...} and exit code 1.
//
// Transfer, one way (default): the client sends --bytes N and ends; the server hashes what it
// receives and sends the 32-byte SHA-256 back; the client checks it against what it sent.
// Transfer, --each-way (both sides): each side sends N random bytes, and after it has received N
// bytes sends the 32-byte SHA-256 of them, then ends. Each side checks the hash it gets back
// against what it sent and prints {"event":"done",sentSha256,receivedSha256,...}.
//
// `path` in the `connected` line, the vocabulary of the Rust peer: `relayed` when the raw stream's
// remote host is the relay's (--relay-host, required with --relay-through; give it alone when the
// other side pins the relay), `loopback` / `lan` when the remote address is a loopback / private
// one (no NAT crossed), `holepunched` when this node is behind a NAT (hyperdht's `firewalled`) or
// ran a punch, else `direct` (a public node reached without one).
'use strict'

const DHT = require('hyperdht')
const crypto = require('crypto')

const CHUNK = 64 * 1024 // write size; the secret stream splits further as needed
const HASH_BYTES = 32

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name)
  if (i === -1) {
    if (dflt === undefined) fail('USAGE', 'missing --' + name)
    return dflt
  }
  return process.argv[i + 1]
}

function flag(name) {
  return process.argv.includes('--' + name)
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function fail(code, message) {
  out({ event: 'error', code, message, ms: sinceStart() })
  process.exit(1)
}

function parseHostPort(s) {
  const i = s.lastIndexOf(':')
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) }
}

function remoteOf(socket) {
  const raw = socket.rawStream
  return raw ? { host: raw.remoteHost, port: raw.remotePort } : null
}

function relayKey() {
  const k = arg('relay-through', null)
  if (k && !arg('relay-host', null)) fail('USAGE', '--relay-through needs --relay-host (to report the path)')
  return k ? Buffer.from(k, 'hex') : null
}

// How this connection runs: see the header.
function pathOf(dht, remote) {
  const relayHost = arg('relay-host', null)
  if (!remote) return 'unknown'
  if (relayHost && remote.host === relayHost) return 'relayed'
  if (remote.host.startsWith('127.')) return 'loopback'
  if (isPrivate(remote.host)) return 'lan'
  const p = dht.stats.punches
  return dht.firewalled || p.consistent + p.random > 0 ? 'holepunched' : 'direct'
}

function isPrivate(host) {
  const [a, b] = host.split('.').map(Number)
  return a === 10 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168)
}

function onStop(fn) {
  process.on('SIGTERM', fn)
  process.on('SIGINT', fn)
  process.stdin.on('end', fn) // parent closed our stdin: it is gone or wants us gone
  process.stdin.resume()
}

// Runs the --each-way transfer on `socket`; resolves with the `done` fields or rejects.
function eachWay(socket, total) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const sentHash = crypto.createHash('sha256')
    const recvHash = crypto.createHash('sha256')
    let sent = 0
    let received = 0
    let receivedDigest = null
    const echo = [] // the peer's hash of what we sent
    let echoLen = 0
    socket.on('data', (d) => {
      let off = 0
      if (received < total) {
        const take = Math.min(total - received, d.length)
        recvHash.update(d.subarray(0, take))
        received += take
        off = take
        if (received === total) {
          receivedDigest = recvHash.digest()
          maybeEnd()
        }
      }
      if (off < d.length) {
        echo.push(d.subarray(off))
        echoLen += d.length - off
        if (echoLen > HASH_BYTES) reject(Object.assign(new Error(`${echoLen} bytes after the data, want ${HASH_BYTES}`), { code: 'PROTOCOL' }))
      }
    })
    socket.on('end', () => {
      const ours = sentHash.digest()
      const theirs = Buffer.concat(echo)
      if (received < total) return reject(Object.assign(new Error(`stream ended after ${received} of ${total} bytes`), { code: 'SHORT' }))
      if (!ours.equals(theirs)) return reject(Object.assign(new Error(`sent ${ours.toString('hex')}, peer hashed ${theirs.toString('hex')}`), { code: 'HASH_MISMATCH' }))
      const seconds = (Date.now() - started) / 1000
      resolve({
        bytes: sent,
        receivedBytes: received,
        sentSha256: ours.toString('hex'),
        receivedSha256: receivedDigest.toString('hex'),
        seconds,
        mbPerSec: (sent + received) / 1e6 / seconds
      })
    })
    // Our hash of their bytes follows our own data: once both are complete, send it and end.
    let ended = false
    const maybeEnd = () => {
      if (ended || sent < total || receivedDigest === null) return
      ended = true
      socket.end(receivedDigest)
    }
    const pump = () => {
      while (sent < total) {
        const n = Math.min(CHUNK, total - sent)
        const buf = crypto.randomBytes(n)
        sentHash.update(buf)
        sent += n
        if (!socket.write(buf)) return socket.once('drain', pump)
      }
      maybeEnd()
    }
    pump()
  })
}

async function runDht() {
  const host = arg('host')
  const port = Number(arg('port'))
  const n = Number(arg('nodes', '3'))
  const nodes = []
  const boot = DHT.bootstrapper(port, host, { host })
  nodes.push(boot)
  await boot.fullyBootstrapped()
  const bootstrap = [{ host, port }]
  for (let i = 0; i < n; i++) {
    const node = new DHT({ ephemeral: false, firewalled: false, bootstrap, host })
    await node.fullyBootstrapped()
    nodes.push(node)
  }
  out({ event: 'ready', bootstrap: `${host}:${port}`, nodes: nodes.map((d) => d.address()), ms: sinceStart() })
  onStop(async () => {
    for (const d of nodes.reverse()) await d.destroy()
    process.exit(0)
  })
}

// The npm blind-relay server on a public DHT node (hyperdht's examples/connection-relaying).
async function runRelay() {
  const RelayServer = require('blind-relay').Server
  const bootstrap = [parseHostPort(arg('bootstrap'))]
  const host = arg('host')
  const seed = arg('seed', null)
  const keyPair = seed ? DHT.keyPair(Buffer.from(seed, 'hex')) : DHT.keyPair()
  const dht = new DHT({ bootstrap, host, firewalled: false })
  const relay = new RelayServer({
    createStream(opts) {
      return dht.createRawStream({ ...opts, framed: true })
    }
  })
  let pairs = 0
  const server = dht.createServer({ shareLocalAddress: false }, (socket) => {
    const session = relay.accept(socket, { id: socket.remotePublicKey })
    session.on('pair', (isInitiator) => {
      pairs++
      out({ event: 'pair', isInitiator, pairs, ms: sinceStart() })
    })
    session.on('error', (err) => out({ event: 'session-error', code: err.code || null, message: err.message }))
  })
  await server.listen(keyPair)
  await dht.fullyBootstrapped()
  const addr = dht.address()
  out({ event: 'relay', publicKey: keyPair.publicKey.toString('hex'), host: addr.host, port: addr.port, ms: sinceStart() })
  onStop(async () => {
    await relay.close()
    await server.close()
    await dht.destroy()
    process.exit(0)
  })
}

async function runServer() {
  const bootstrap = [parseHostPort(arg('bootstrap'))]
  const seed = Buffer.from(arg('seed'), 'hex')
  const each = flag('each-way')
  const total = each ? Number(arg('bytes')) : 0
  const keyPair = DHT.keyPair(seed)
  const dht = new DHT({ bootstrap })
  const server = dht.createServer({ relayThrough: relayKey() }, (socket) => {
    const started = Date.now()
    const remote = remoteOf(socket)
    const line = { remote, remotePublicKey: socket.remotePublicKey.toString('hex'), path: pathOf(dht, remote), ms: sinceStart() }
    out({ event: 'connection', ...line })
    out({ event: 'connected', ...line })
    socket.on('error', (err) => out({ event: 'socket-error', code: err.code || null, message: err.message }))
    if (each) {
      eachWay(socket, total).then(
        (done) => {
          out({ event: 'received', bytes: done.receivedBytes, sha256: done.receivedSha256, seconds: done.seconds })
          out({ event: 'done', ...done, ms: sinceStart() })
        },
        (err) => out({ event: 'socket-error', code: err.code || null, message: err.message })
      )
      return
    }
    const hash = crypto.createHash('sha256')
    let bytes = 0
    socket.on('data', (d) => {
      hash.update(d)
      bytes += d.length
    })
    socket.on('end', () => {
      const digest = hash.digest()
      out({ event: 'received', bytes, sha256: digest.toString('hex'), seconds: (Date.now() - started) / 1000 })
      socket.end(digest)
    })
  })
  await server.listen(keyPair)
  await dht.fullyBootstrapped()
  out({
    event: 'listening',
    publicKey: keyPair.publicKey.toString('hex'),
    firewalled: dht.firewalled,
    natHost: dht.host,
    natPort: dht.port,
    ms: sinceStart()
  })
  onStop(async () => {
    await server.close()
    await dht.destroy()
    process.exit(0)
  })
}

async function runClient() {
  const bootstrap = [parseHostPort(arg('bootstrap'))]
  const key = Buffer.from(arg('key'), 'hex')
  const total = Number(arg('bytes'))
  const each = flag('each-way')
  const timeoutMs = Number(arg('timeout-ms', '60000'))
  const timer = setTimeout(() => fail('CLIENT_TIMEOUT', `no result within ${timeoutMs} ms`), timeoutMs)
  const dht = new DHT({ bootstrap })
  dht.fullyBootstrapped().then(() =>
    out({ event: 'bootstrapped', firewalled: dht.firewalled, natHost: dht.host, natPort: dht.port, ms: sinceStart() })
  )
  // Connect at once, as an agent would: hyperdht bootstraps on the way.
  const t0 = Date.now()
  const socket = dht.connect(key, { relayThrough: relayKey() })
  socket.on('error', (err) => fail(err.code || 'ERROR', err.message))
  socket.once('open', () => {
    const connectMs = Date.now() - t0
    const remote = remoteOf(socket)
    out({ event: 'connected', ms: sinceStart(), connectMs, remote, path: pathOf(dht, remote) })
    const finish = async (done) => {
      out({ event: 'done', ...done, connectMs, ms: sinceStart() })
      clearTimeout(timer)
      socket.destroy()
      // A relayed node may linger in destroy (relay keep-alives): bounded, then exit anyway.
      await Promise.race([dht.destroy(), new Promise((resolve) => setTimeout(resolve, 1000))])
      process.exit(0)
    }
    if (each) {
      eachWay(socket, total).then(finish, (err) => fail(err.code || 'ERROR', err.message))
      return
    }
    const hash = crypto.createHash('sha256')
    let sent = 0
    const tSend = Date.now()
    const reply = []
    socket.on('data', (d) => reply.push(d))
    socket.on('end', () => {
      const ours = hash.digest()
      const theirs = Buffer.concat(reply)
      const seconds = (Date.now() - tSend) / 1000
      if (!ours.equals(theirs)) fail('HASH_MISMATCH', `sent ${ours.toString('hex')}, server hashed ${theirs.toString('hex')}`)
      finish({ bytes: sent, sha256: ours.toString('hex'), seconds, mbPerSec: sent / 1e6 / seconds })
    })
    const pump = () => {
      while (sent < total) {
        const n = Math.min(CHUNK, total - sent)
        const buf = crypto.randomBytes(n)
        hash.update(buf)
        sent += n
        if (!socket.write(buf)) return socket.once('drain', pump)
      }
      socket.end()
    }
    pump()
  })
}

const role = process.argv[2]
const run = { dht: runDht, relay: runRelay, server: runServer, client: runClient }[role]
if (!run) fail('USAGE', 'role must be dht, relay, server or client')
run().catch((err) => fail(err.code || 'ERROR', err.message))
