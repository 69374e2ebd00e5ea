// hyperdht peers for the blind-relay interop tests (tests/relay.rs).
// usage: node relay-peer.js relay  <bootstrap host:port> <seed hex>
//        node relay-peer.js server <bootstrap host:port> <seed hex> <bytes> <relay pk hex>
//        node relay-peer.js client <bootstrap host:port> <seed hex> <bytes> <server pk hex> [relay pk hex]
// relay:  an npm blind-relay Server on a hyperdht server (as blind-relay's example). Prints
//         {"listening":pk}; answers every stdin line with {"stats":relay.stats}.
// server: a hyperdht server with relayThrough ("-": none; holepunch and LAN shortcut are off,
//         so a relay is the only path). Prints {"listening":pk}, then {"connected":pk} and
//         {"sentSha","recvSha","recvBytes"} for its first connection.
// client: connects to the server (with relayThrough when a relay key is given); prints {"connected":pk} and the shas. Each side sends <bytes>
//         random bytes and hashes what it sends and what it receives.
const DHT = require('hyperdht')
const RelayServer = require('blind-relay').Server
const crypto = require('crypto')
const readline = require('readline')

const [role, boot, seedHex, bytesArg, keyHex, clientRelayHex] = process.argv.slice(2)
const [host, port] = boot.split(':')
const total = Number(bytesArg || 0)
const CHUNK = 65536

function out (o) { process.stdout.write(JSON.stringify(o) + '\n') }

function exchange (socket) {
  return new Promise((resolve, reject) => {
    const sent = crypto.createHash('sha256')
    const recv = crypto.createHash('sha256')
    let recvBytes = 0
    let wrote = 0
    let doneWrite = false
    let doneRead = false
    const finish = () => { if (doneWrite && doneRead) resolve({ sentSha: sent.digest('hex'), recvSha: recv.digest('hex'), recvBytes }) }
    socket.on('data', (d) => {
      recv.update(d)
      recvBytes += d.length
      if (recvBytes >= total && !doneRead) { doneRead = true; finish() }
    })
    socket.on('error', reject)
    const write = () => {
      while (wrote < total) {
        const n = Math.min(CHUNK, total - wrote)
        const b = crypto.randomBytes(n)
        sent.update(b)
        wrote += n
        if (!socket.write(b)) { socket.once('drain', write); return }
      }
      doneWrite = true
      finish()
    }
    write()
    if (total === 0) { doneRead = true; finish() }
  })
}

async function main () {
  const dht = new DHT({
    bootstrap: [{ host, port: Number(port) }],
    host: '127.0.0.1',
    ephemeral: true,
    quickFirewall: false
  })
  await dht.fullyBootstrapped()
  const keyPair = DHT.keyPair(Buffer.from(seedHex, 'hex'))
  if (role === 'relay') {
    const relay = new RelayServer({
      createStream (opts) { return dht.createRawStream({ ...opts, framed: true }) }
    })
    const server = dht.createServer((socket) => {
      const session = relay.accept(socket, { id: socket.remotePublicKey })
      session.on('error', () => {})
      socket.on('error', () => {})
    })
    await server.listen(keyPair)
    out({ listening: keyPair.publicKey.toString('hex') })
    const rl = readline.createInterface({ input: process.stdin })
    rl.on('line', () => out({ stats: relay.stats }))
    rl.on('close', () => process.exit(0))
  } else if (role === 'server') {
    let served = false
    const server = dht.createServer({
      holepunch: false,
      shareLocalAddress: false,
      relayThrough: keyHex === '-' ? null : Buffer.from(keyHex, 'hex')
    }, async (socket) => {
      socket.on('error', (e) => out({ error: e.message }))
      if (served) return
      served = true
      out({ connected: socket.remotePublicKey.toString('hex') })
      const r = await exchange(socket)
      out(r)
      setTimeout(() => socket.end(), 500)
    })
    await server.listen(keyPair)
    out({ listening: keyPair.publicKey.toString('hex') })
  } else {
    const relayThrough = clientRelayHex ? Buffer.from(clientRelayHex, 'hex') : null
    const socket = dht.connect(Buffer.from(keyHex, 'hex'), { keyPair, relayThrough })
    await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
    out({ connected: socket.remotePublicKey.toString('hex') })
    const r = await exchange(socket)
    out(r)
    setTimeout(() => { socket.end(); dht.destroy() }, 500)
  }
}
main().catch((e) => { out({ error: e.message }); process.exit(1) })
