#!/usr/bin/env node
// One side of the JavaScript reference transfer (started by bench.js, one process per side so peak
// RSS and CPU are per side). npm hyperswarm peers, ats-p2p frame protocol:
//   [type u8][len u32 BE][payload]  0x01 META {name,size,hash}  0x02 DATA (<= 64 KiB)  0x03 DONE
//   0x04 ACK  0x05 NACK (reason)  0x06 ERROR (message)
//
//   node peer.js receive --bootstrap H:P --topic HEX --out DIR [--host IPV4]
//   node peer.js send    --bootstrap H:P --topic HEX --file PATH [--host IPV4]
// --host: the local address the DHT node binds (default 127.0.0.1).
//
// The receiver announces the topic (server), the sender looks it up (client). Prints one JSON line
// with wall-clock timestamps (ms since the epoch) and this process's peak RSS and CPU seconds.
'use strict'

const Hyperswarm = require('hyperswarm')
const DHT = require('hyperdht')
const crypto = require('crypto')
const fs = require('fs')
const path = require('path')

const META = 0x01
const DATA = 0x02
const DONE = 0x03
const ACK = 0x04
const NACK = 0x05
const ERROR = 0x06
const HEADER = 5
const MAX_DATA = 64 * 1024 // DATA payload limit of the frame protocol
const MAX_CONTROL = 16 * 1024 // META / ACK / NACK / ERROR payload limit

function arg(name) {
  const i = process.argv.indexOf('--' + name)
  if (i === -1) throw new Error('missing --' + name)
  return process.argv[i + 1]
}

function frame(type, payload = Buffer.alloc(0)) {
  const h = Buffer.allocUnsafe(HEADER)
  h[0] = type
  h.writeUInt32BE(payload.length, 1)
  return [h, payload]
}

function usage() {
  const u = process.resourceUsage()
  return { peakRssBytes: u.maxRSS * 1024, cpuSeconds: (u.userCPUTime + u.systemCPUTime) / 1e6 }
}

function finish(result, code = 0) {
  process.stdout.write(JSON.stringify({ ...result, ...usage() }) + '\n')
  process.exit(code)
}

// BENCH_DEBUG=1: log each connection's UDX path (local socket port -> remote address) to stderr.
function logPath(role, socket) {
  if (!process.env.BENCH_DEBUG) return
  const raw = socket.rawStream
  const local = raw && raw.socket ? raw.socket.address().port : null
  console.error(`${role}: connection via local port ${local} -> ${raw && raw.remoteHost}:${raw && raw.remotePort}`)
}

function optArg(name, dflt) {
  const i = process.argv.indexOf('--' + name)
  return i === -1 ? dflt : process.argv[i + 1]
}

function makeSwarm() {
  const [host, port] = arg('bootstrap').split(':')
  const dht = new DHT({ bootstrap: [{ host, port: Number(port) }], host: optArg('host', '127.0.0.1') })
  return new Hyperswarm({ dht })
}

// Incremental frame decoder: refuses unknown types and oversize lengths before buffering.
class Decoder {
  constructor(onframe) {
    this.onframe = onframe
    this.chunks = []
    this.buffered = 0
  }

  push(data) {
    this.chunks.push(data)
    this.buffered += data.length
    while (this.buffered >= HEADER) {
      const head = this._peek(HEADER)
      const type = head[0]
      const len = head.readUInt32BE(1)
      if (type < META || type > ERROR) throw new Error('unknown frame type ' + type)
      if (len > (type === DATA ? MAX_DATA : MAX_CONTROL)) throw new Error(`frame ${type} too long: ${len}`)
      if (this.buffered < HEADER + len) return
      const all = this._take(HEADER + len)
      this.onframe(type, all.subarray(HEADER))
    }
  }

  _peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0]
    const b = Buffer.concat(this.chunks)
    this.chunks = [b]
    return b
  }

  _take(n) {
    let b = this.chunks[0]
    if (b.length < n) {
      b = Buffer.concat(this.chunks)
      this.chunks = [b]
    }
    const out = b.subarray(0, n)
    if (b.length === n) this.chunks.shift()
    else this.chunks[0] = b.subarray(n)
    this.buffered -= n
    return out
  }
}

async function receive() {
  const outDir = arg('out')
  const swarm = makeSwarm()
  let started = false
  swarm.on('connection', (socket) => {
    if (started) return socket.destroy()
    started = true
    logPath('receive', socket)
    const connectedAt = Date.now()
    let meta = null
    let file = null
    let tmpPath = null
    let hash = null
    let received = 0
    let firstDataAt = null
    const fail = (type, reason) => {
      socket.write(Buffer.concat(frame(type, Buffer.from(reason))))
      finish({ role: 'receive', error: reason, connectedAt }, 1)
    }
    const dec = new Decoder((type, payload) => {
      if (type === META) {
        meta = JSON.parse(payload.toString())
        tmpPath = path.join(outDir, '.' + path.basename(meta.name) + '.part')
        file = fs.createWriteStream(tmpPath)
        hash = crypto.createHash('sha256')
      } else if (type === DATA) {
        if (!meta) return fail(ERROR, 'DATA before META')
        if (firstDataAt === null) firstDataAt = Date.now()
        received += payload.length
        hash.update(payload)
        // The payload is a view into a buffer nobody reuses (each secret-stream message is a new
        // buffer), so it is written without a copy. Pausing only delays: udx-native 1.21.3 pushes
        // received data regardless of backpressure, so a slow disk grows this process's memory.
        if (!file.write(payload)) {
          socket.pause()
          file.once('drain', () => socket.resume())
        }
      } else if (type === DONE) {
        file.end(() => {
          const got = hash.digest('hex')
          if (received !== meta.size || got !== meta.hash) {
            fs.unlinkSync(tmpPath)
            return fail(NACK, `size ${received}/${meta.size}, hash ${got} vs ${meta.hash}`)
          }
          const finalPath = path.join(outDir, path.basename(meta.name))
          fs.renameSync(tmpPath, finalPath)
          const ackAt = Date.now()
          socket.end(Buffer.concat(frame(ACK, Buffer.from(JSON.stringify({ hash: got, size: received })))))
          socket.once('close', () =>
            finish({ role: 'receive', connectedAt, firstDataAt, ackAt, bytes: received, path: finalPath })
          )
        })
      } else {
        finish({ role: 'receive', error: `unexpected frame ${type}: ${payload}`, connectedAt }, 1)
      }
    })
    socket.on('data', (d) => {
      try {
        dec.push(d)
      } catch (err) {
        fail(ERROR, err.message)
      }
    })
    socket.on('error', (err) => {
      console.error(`receive: connection failed: ${err.message}`)
      if (file) file.destroy()
      if (tmpPath) fs.rmSync(tmpPath, { force: true })
      started = false
    })
  })
  await swarm.join(Buffer.from(arg('topic'), 'hex'), { server: true, client: false }).flushed()
  process.stdout.write(JSON.stringify({ role: 'receive', event: 'announced' }) + '\n')
}

async function hashFile(file) {
  const h = crypto.createHash('sha256')
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk)
  return h.digest('hex')
}

async function send() {
  const file = arg('file')
  const size = fs.statSync(file).size
  const hashStart = Date.now()
  const hash = await hashFile(file)
  const preHashSeconds = (Date.now() - hashStart) / 1000
  const swarm = makeSwarm()
  let started = false
  let attempts = 0
  let firstConnectAt = null
  swarm.on('connection', (socket) => {
    if (started) return socket.destroy()
    started = true
    attempts++
    logPath('send', socket)
    const connectedAt = Date.now()
    if (firstConnectAt === null) firstConnectAt = connectedAt
    let firstDataSentAt = null
    let rs = null
    const dec = new Decoder((type, payload) => {
      const result = { role: 'send', connectedAt, firstConnectAt, attempts, firstDataSentAt, bytes: size, preHashSeconds }
      if (type === ACK) finish({ ...result, ackAt: Date.now(), ack: payload.toString() })
      else finish({ ...result, error: `frame ${type}: ${payload}` }, 1)
    })
    socket.on('data', (d) => dec.push(d))
    // JS hyperdht 6.34 sometimes opens a same-host connection that the server never accepts
    // (ends in "connection timed out"); give it up and let hyperswarm reconnect.
    socket.on('error', (err) => {
      console.error(`send: connection attempt ${attempts} failed after ${Date.now() - connectedAt} ms: ${err.message}`)
      if (rs) rs.destroy()
      started = false
    })
    socket.write(Buffer.concat(frame(META, Buffer.from(JSON.stringify({ name: path.basename(file), size, hash })))))
    rs = fs.createReadStream(file, { highWaterMark: MAX_DATA })
    rs.on('data', (chunk) => {
      if (firstDataSentAt === null) firstDataSentAt = Date.now()
      const [h, p] = frame(DATA, chunk)
      socket.write(h)
      if (!socket.write(p)) {
        rs.pause()
        socket.once('drain', () => rs.resume())
      }
    })
    rs.on('end', () => socket.write(Buffer.concat(frame(DONE))))
  })
  swarm.join(Buffer.from(arg('topic'), 'hex'), { server: false, client: true })
}

const role = process.argv[2]
const run = { receive, send }[role]
if (!run) {
  console.error('usage: peer.js (receive|send) --bootstrap H:P --topic HEX (--out DIR | --file PATH)')
  process.exit(2)
}
run().catch((err) => finish({ role, error: err.message }, 1))
