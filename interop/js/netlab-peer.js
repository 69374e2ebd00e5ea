#!/usr/bin/env node
// JavaScript peers for the network-namespace NAT lab (ats-p2p-swarm/tests/support/netlab.rs).
//
//   node netlab-peer.js dht    --host H --port P [--nodes N]   bootstrapper + N persistent DHT nodes
//   node netlab-peer.js server --bootstrap H:P --seed HEX64      hyperdht server, receives and hashes
//   node netlab-peer.js client --bootstrap H:P --key HEX64 --bytes N [--timeout-ms T]
//
// Every line on stdout is one JSON object with an "event" field. The server hashes what it receives
// and sends the 32-byte SHA-256 back; the client checks it against the hash of what it sent.
// Errors: {"event":"error","code":...,"message":...} and exit code 1.
'use strict'

const DHT = require('hyperdht')
const crypto = require('crypto')

const CHUNK = 64 * 1024 // write size; the secret stream splits further as needed

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name)
  if (i === -1) {
    if (dflt === undefined) fail('USAGE', 'missing --' + name)
    return dflt
  }
  return process.argv[i + 1]
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function fail(code, message) {
  out({ event: 'error', code, message })
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
  out({ event: 'ready', bootstrap: `${host}:${port}`, nodes: nodes.map((d) => d.address()) })
  const stop = async () => {
    for (const d of nodes.reverse()) await d.destroy()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.stdin.on('end', stop) // parent closed our stdin: it is gone or wants us gone
  process.stdin.resume()
}

async function runServer() {
  const bootstrap = [parseHostPort(arg('bootstrap'))]
  const seed = Buffer.from(arg('seed'), 'hex')
  const keyPair = DHT.keyPair(seed)
  const dht = new DHT({ bootstrap })
  const server = dht.createServer((socket) => {
    const started = Date.now()
    const hash = crypto.createHash('sha256')
    let bytes = 0
    out({ event: 'connection', remote: remoteOf(socket), remotePublicKey: socket.remotePublicKey.toString('hex') })
    socket.on('data', (d) => {
      hash.update(d)
      bytes += d.length
    })
    socket.on('end', () => {
      const digest = hash.digest()
      out({ event: 'received', bytes, sha256: digest.toString('hex'), seconds: (Date.now() - started) / 1000 })
      socket.end(digest)
    })
    socket.on('error', (err) => out({ event: 'socket-error', code: err.code || null, message: err.message }))
  })
  await server.listen(keyPair)
  await dht.fullyBootstrapped()
  out({
    event: 'listening',
    publicKey: keyPair.publicKey.toString('hex'),
    firewalled: dht.firewalled,
    natHost: dht.host,
    natPort: dht.port
  })
  const stop = async () => {
    await server.close()
    await dht.destroy()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.stdin.on('end', stop)
  process.stdin.resume()
}

async function runClient() {
  const bootstrap = [parseHostPort(arg('bootstrap'))]
  const key = Buffer.from(arg('key'), 'hex')
  const total = Number(arg('bytes'))
  const timeoutMs = Number(arg('timeout-ms', '60000'))
  const timer = setTimeout(() => fail('CLIENT_TIMEOUT', `no result within ${timeoutMs} ms`), timeoutMs)
  const dht = new DHT({ bootstrap })
  await dht.fullyBootstrapped()
  out({ event: 'bootstrapped', firewalled: dht.firewalled, natHost: dht.host, natPort: dht.port })

  const t0 = Date.now()
  const socket = dht.connect(key)
  socket.on('error', (err) => fail(err.code || 'ERROR', err.message))
  socket.once('open', () => {
    const connectMs = Date.now() - t0
    out({ event: 'connected', connectMs, remote: remoteOf(socket) })
    const hash = crypto.createHash('sha256')
    let sent = 0
    const tSend = Date.now()
    const reply = []
    socket.on('data', (d) => reply.push(d))
    socket.on('end', async () => {
      const ours = hash.digest()
      const theirs = Buffer.concat(reply)
      const seconds = (Date.now() - tSend) / 1000
      if (!ours.equals(theirs)) fail('HASH_MISMATCH', `sent ${ours.toString('hex')}, server hashed ${theirs.toString('hex')}`)
      out({ event: 'done', bytes: sent, sha256: ours.toString('hex'), seconds, mbPerSec: sent / 1e6 / seconds, connectMs })
      clearTimeout(timer)
      socket.destroy()
      await dht.destroy()
      process.exit(0)
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
const run = { dht: runDht, server: runServer, client: runClient }[role]
if (!run) fail('USAGE', 'role must be dht, server or client')
run().catch((err) => fail(err.code || 'ERROR', err.message))
