// A udx-native peer for the ats-p2p interop tests and benchmark.
//
// Protocol (one JSON object per line):
//   stdout: {"id": <local stream id>, "port": <udp port>}
//   stdin:  {"remoteId": n, "remotePort": n, "remoteHost": "127.0.0.1", "send": bytes,
//            "mode": "connect" | "accept", "message": optional string sent as one UDX MESSAGE,
//            "keepalive": optional ms for setKeepalive,
//            "destroyAfter": optional n: destroy the stream once n bytes were received}
//     "connect": connect at once; "accept": connect from the firewall callback to the address
//     of the first packet (as hyperdht does after a holepunch).
//   stdout: {"ready": true}   (once the line above was read)
//   stdout: {"sent": n, "sentSha": hex, "recv": n, "recvSha": hex, "ms": n, "maxRssKiB": n,
//            "messages": [utf8 strings received as MESSAGE], "error": code or null,
//            "publicKey": hex, "remotePublicKey": hex (secure mode only)}
// Sent bytes are random; both sides' SHA-256 are compared by the caller. With "hash": false
// (benchmarks) one zero-filled buffer is sent repeatedly and nothing is hashed.
'use strict'

const UDX = require('udx-native')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const crypto = require('crypto')
const readline = require('readline')

const CHUNK = 64 * 1024
const id = Number(process.env.UDX_PEER_ID || (1 + crypto.randomInt(0x7fffffff)))

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, '127.0.0.1')

let cfg = null
const stream = udx.createStream(id, {
  firewall (sock, port, host) {
    if (!cfg || cfg.mode !== 'accept') return true
    stream.connect(sock, cfg.remoteId, port, host)
    onConnected()
    return false
  }
})

process.stdout.write(JSON.stringify({ id, port: socket.address().port }) + '\n')

const recvHash = crypto.createHash('sha256')
const sentHash = crypto.createHash('sha256')
let recv = 0
let sent = 0
let started = 0
let connected = false
let errorCode = null
const messages = []
stream.on('message', (buf) => messages.push(buf.toString()))
// The stream the data goes through: the raw UDX stream, or a secret stream over it.
let io = stream

function attach () {
  io.on('data', (buf) => {
    recv += buf.length
    if (cfg.hash !== false) recvHash.update(buf)
    if (cfg.destroyAfter && recv >= cfg.destroyAfter) io.destroy()
  })
  io.on('end', () => {})
  io.on('error', (err) => {
    errorCode = err.code || err.message
  })
  io.on('close', () => {
    const ms = Date.now() - started
    const out = {
      sent,
      sentSha: sentHash.digest('hex'),
      recv,
      recvSha: recvHash.digest('hex'),
      ms,
      maxRssKiB: Math.round(process.resourceUsage().maxRSS),
      messages,
      error: errorCode
    }
    if (io !== stream) {
      out.publicKey = io.publicKey ? io.publicKey.toString('hex') : null
      out.remotePublicKey = io.remotePublicKey ? io.remotePublicKey.toString('hex') : null
    }
    process.stdout.write(JSON.stringify(out) + '\n')
    socket.close().then(() => process.exit(0))
  })
}

function onConnected () {
  if (connected) return
  connected = true
  started = Date.now()
  if (cfg.keepalive) stream.setKeepalive(cfg.keepalive)
  if (cfg.message) stream.trySend(Buffer.from(cfg.message))
  pump()
}

const ZEROS = Buffer.alloc(CHUNK)

function pump () {
  while (sent < cfg.send) {
    const n = Math.min(CHUNK, cfg.send - sent)
    const buf = cfg.hash === false ? ZEROS.subarray(0, n) : crypto.randomBytes(n)
    if (cfg.hash !== false) sentHash.update(buf)
    sent += n
    if (!io.write(buf)) {
      io.once('drain', pump)
      return
    }
  }
  io.end()
}

const rl = readline.createInterface({ input: process.stdin })
rl.once('line', (line) => {
  cfg = JSON.parse(line)
  cfg.remoteHost = cfg.remoteHost || '127.0.0.1'
  if (cfg.secure) {
    const seed = cfg.secure.seed ? Buffer.from(cfg.secure.seed, 'hex') : undefined
    io = new NoiseSecretStream(!!cfg.secure.initiator, stream, {
      keyPair: NoiseSecretStream.keyPair(seed)
    })
  }
  attach()
  process.stdout.write(JSON.stringify({ ready: true }) + '\n')
  if (cfg.mode === 'connect') {
    stream.connect(socket, cfg.remoteId, cfg.remotePort, cfg.remoteHost)
    onConnected()
  }
})
