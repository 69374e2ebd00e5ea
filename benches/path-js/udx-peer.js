// The udx-native side of the real-path benchmark (benches/src/bin/path.rs): one raw UDX stream,
// bound to the address given as the first argument. It uses the udx-native that interop/js
// installs (`npm ci --prefix interop/js`); 1.21.3 already runs libudx's BBR.
//
// Protocol (one JSON object per line), the same as benches/src/udx_path_peer.rs:
//   stdout: {"id": <local stream id>, "port": <udp port>}
//   stdin:  {"remoteId": n, "remoteHost": ip, "remotePort": n, "send": bytes}  (connects at once)
//   stdout: {"ready": true}
//   stdin:  any line: go (send "send" bytes, then end; read the peer's data to its end)
//   stdout: {"impl": "js", "sent": n, "recv": n, "ms": n, "cpuMs": n, "maxRssKiB": n,
//            "retransmits": n, ...counters}
// Both sides connect before either sends. "ms" runs from go: the sender's to close (everything
// acknowledged), the receiver's to the end of the stream.
'use strict'

const path = require('path')
const crypto = require('crypto')
const readline = require('readline')
const UDX = require(path.join(__dirname, '..', '..', 'interop', 'js', 'node_modules', 'udx-native'))

const CHUNK = 64 * 1024
const bindHost = process.argv[2] || '127.0.0.1'
const id = 1 + crypto.randomInt(0x7fffffff)

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, bindHost)

let cfg = null
let started = 0
let recv = 0
let sent = 0
let recvMs = 0
let errorCode = null

const stream = udx.createStream(id)

process.stdout.write(JSON.stringify({ id, port: socket.address().port }) + '\n')

stream.on('data', (buf) => { recv += buf.length })
stream.on('end', () => { recvMs = Date.now() - started })
stream.on('error', (err) => { errorCode = err.code || err.message })
stream.on('close', () => {
  const ms = cfg.send > 0 ? Date.now() - started : recvMs
  const cpu = process.cpuUsage()
  const out = {
    impl: 'js',
    sent,
    recv,
    ms,
    cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    maxRssKiB: Math.round(process.resourceUsage().maxRSS),
    // libudx counts retransmits in 16 bits: exact below 65536.
    retransmits: stream.retransmits,
    rtoExpiries: stream.rtoCount,
    lossEvents: stream.fastRecoveries,
    packetsSent: stream.packetsTransmitted,
    srttUs: stream.rtt * 1000,
    cwnd: stream.cwnd,
    mtu: stream.mtu,
    bbrState: stream.bbrState,
    error: errorCode
  }
  process.stdout.write(JSON.stringify(out) + '\n')
  socket.close().then(() => process.exit(0))
})

function go () {
  started = Date.now()
  pump()
}

const ZEROS = Buffer.alloc(CHUNK)

function pump () {
  while (sent < cfg.send) {
    const n = Math.min(CHUNK, cfg.send - sent)
    sent += n
    if (!stream.write(ZEROS.subarray(0, n))) {
      stream.once('drain', pump)
      return
    }
  }
  stream.end()
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (cfg === null) {
    cfg = JSON.parse(line)
    stream.connect(socket, cfg.remoteId, cfg.remotePort, cfg.remoteHost)
    process.stdout.write(JSON.stringify({ ready: true }) + '\n')
  } else if (started === 0) {
    go()
  }
})
