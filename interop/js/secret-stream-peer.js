// A real @hyperswarm/secret-stream peer over TCP on 127.0.0.1, driven by the Rust interop tests
// (ats-p2p-swarm/tests/js_interop.rs).
//
//   node secret-stream-peer.js --role initiator|responder [--port P] [--seed HEX]
//        [--expect HEX] [--bytes N] [--ik --remote HEX] [--keepalive MS] [--idle MS]
//
// responder: listens on 127.0.0.1:0 and prints `PORT p`; initiator: connects to --port.
// --expect: the remote static key we accept. secret-stream 6.9.2 does not check it in XX (the
//   remotePublicKey option only feeds IK/XK), so, like an application would, we check it on
//   'handshake' and destroy the stream before our id+header goes out.
// --ik: pre-made handshake mode (what hyperdht does): run Noise IK with noise-handshake over
//   stdin/stdout lines (`MSG1 hex` / `MSG2 hex`), prologue NS_PEER_HANDSHAKE, then start
//   NoiseSecretStream with { handshake } on the TCP socket (only the id+header frames travel).
// --keepalive: secret-stream keep-alive interval (and filtering of empty messages);
// --idle: wait this long after connecting before sending.
// After connecting, sends N random bytes in mixed write sizes, ends, reads to the end, prints
// `REMOTE hex`, `HASH hex`, `SENT n sha256`, `RECV n sha256`, `DONE`.
// Failures print `REJECTED hex` or `CLOSED connected=<bool> header=<bool> err=<msg|null>`, exit 2.
'use strict'

const net = require('net')
const crypto = require('crypto')
const readline = require('readline')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const Noise = require('noise-handshake')
const curve = require('noise-curve-ed')
const sodium = require('sodium-native')

const args = {}
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, '')
  const next = process.argv[i + 1]
  if (next === undefined || next.startsWith('--')) args[k] = true
  else { args[k] = next; i++ }
}
const isInitiator = args.role === 'initiator'
const keyPair = NoiseSecretStream.keyPair(args.seed ? Buffer.from(args.seed, 'hex') : undefined)
const expect = args.expect ? Buffer.from(args.expect, 'hex') : null
const total = Number(args.bytes || 0)
const out = (line) => process.stdout.write(line + '\n')

const lines = readline.createInterface({ input: process.stdin })
const pending = []
const waiters = []
lines.on('line', (l) => (waiters.length ? waiters.shift()(l) : pending.push(l)))
const nextLine = () => new Promise((resolve) => (pending.length ? resolve(pending.shift()) : waiters.push(resolve)))

function nsPeerHandshake () {
  const ns = Buffer.alloc(32)
  sodium.crypto_generichash(ns, Buffer.from('hyperswarm/dht'))
  const out = Buffer.alloc(32)
  sodium.crypto_generichash(out, Buffer.concat([ns, Buffer.from([0])]))
  return out
}

async function ikHandshake () {
  const noise = new Noise('IK', isInitiator, keyPair, { curve })
  noise.initialise(nsPeerHandshake(), isInitiator ? Buffer.from(args.remote, 'hex') : undefined)
  if (isInitiator) {
    out('MSG1 ' + noise.send(Buffer.from('ik client payload')).toString('hex'))
    const m2 = (await nextLine()).split(' ')[1]
    out('IKPAYLOAD ' + Buffer.from(noise.recv(Buffer.from(m2, 'hex'))).toString('hex'))
  } else {
    const m1 = (await nextLine()).split(' ')[1]
    out('IKPAYLOAD ' + Buffer.from(noise.recv(Buffer.from(m1, 'hex'))).toString('hex'))
    out('MSG2 ' + noise.send(Buffer.from('ik server payload')).toString('hex'))
  }
  return {
    tx: Buffer.from(noise.tx),
    rx: Buffer.from(noise.rx),
    hash: Buffer.from(noise.hash),
    publicKey: keyPair.publicKey,
    remotePublicKey: Buffer.from(noise.rs)
  }
}

function run (socket, handshake) {
  const opts = { keyPair }
  if (args.keepalive) opts.keepAlive = Number(args.keepalive)
  if (handshake) opts.handshake = handshake
  if (expect) opts.remotePublicKey = expect
  const stream = new NoiseSecretStream(isInitiator, socket, opts)
  let connected = false
  let sendDone = null // { sent, sha } once our last write is queued
  let recvDone = false
  let reported = false

  const recvHash = crypto.createHash('sha256')
  let received = 0

  function report () {
    if (reported || !sendDone || !recvDone) return
    reported = true
    out(`SENT ${sendDone.sent} ${sendDone.sha}`)
    out(`RECV ${received} ${recvHash.digest('hex')}`)
    out(`RAWREAD ${stream.rawBytesRead}`) // encrypted message bodies, keep-alives included
    out('DONE')
    process.exit(0)
  }

  stream.on('handshake', () => {
    if (expect && !stream.remotePublicKey.equals(expect)) {
      out('REJECTED ' + stream.remotePublicKey.toString('hex'))
      stream.destroy(new Error('unexpected remote public key'))
    }
  })
  let lastError = null
  stream.on('error', (e) => { lastError = e })
  stream.on('data', (d) => { received += d.byteLength; recvHash.update(d) })
  const fail = () => {
    out(`CLOSED connected=${connected} header=${stream._setup === false} err=${lastError && lastError.message}`)
    process.exit(2)
  }
  // An end before the peer's id+header arrived is a failed connection, not an empty one.
  stream.on('end', () => { if (stream._setup !== false) fail(); recvDone = true; report() })
  stream.on('close', () => {
    if (sendDone && recvDone) return report()
    fail()
  })

  // With allowHalfOpen a TCP FIN does not close the socket; a peer that gives up during the
  // handshake only half-closes, so treat that as the failure it is (UDX closes on its own).
  socket.on('end', () => { if (!connected) stream.destroy(new Error('peer closed during handshake')) })

  stream.once('connect', async () => {
    connected = true
    out('REMOTE ' + stream.remotePublicKey.toString('hex'))
    out('HASH ' + stream.handshakeHash.toString('hex'))
    if (args.idle) await new Promise((resolve) => setTimeout(resolve, Number(args.idle)))
    const sendHash = crypto.createHash('sha256')
    const pool = crypto.randomBytes(1 << 20)
    const sizes = [1, 100, 65536, 1 << 20, 3000, 200000, 17]
    let sent = 0
    let k = 0
    while (sent < total) {
      const n = Math.min(sizes[k++ % sizes.length], total - sent)
      const off = (k * 7919) % ((1 << 20) - n + 1)
      const chunk = pool.subarray(off, off + n)
      sendHash.update(chunk)
      sent += n
      if (!stream.write(chunk)) await new Promise((resolve) => stream.once('drain', resolve))
    }
    sendDone = { sent, sha: sendHash.digest('hex') }
    stream.end()
    report()
  })
}

async function main () {
  if (isInitiator) {
    const handshake = args.ik ? await ikHandshake() : null
    const socket = net.connect({ port: Number(args.port), host: '127.0.0.1', allowHalfOpen: true })
    socket.on('error', () => {})
    run(socket, handshake)
  } else {
    const server = net.createServer({ allowHalfOpen: true })
    server.listen(0, '127.0.0.1', async () => {
      out('PORT ' + server.address().port)
      out('PUBLIC ' + keyPair.publicKey.toString('hex'))
      const handshake = args.ik ? await ikHandshake() : null
      server.once('connection', (socket) => {
        socket.on('error', () => {})
        server.close()
        run(socket, handshake)
      })
    })
  }
}

setTimeout(() => { out('TIMEOUT'); process.exit(3) }, 60000).unref()
main()
