// One hyperdht peer for the ats-p2p connect interop tests (Rust <-> JS by key).
// usage: node connect-peer.js server|client <bootstrap host:port> <seed hex> <bytes>
//          [server: <allowed pk hex,...|*>] [client: <remote pk hex> [once]]
// Prints JSON lines: {"listening":pk} | {"connected":remotePk,"ms":n,"attempts":n}
//   then {"sentSha":hex,"recvSha":hex,"recvBytes":n} | {"error":msg,"attempts":n}
// Each side sends <bytes> random bytes, hashes what it sends and what it receives.
const DHT = require('hyperdht')
const crypto = require('crypto')

const [role, boot, seedHex, bytesArg, extra, once] = process.argv.slice(2)
const [host, port] = boot.split(':')
const total = Number(bytesArg)
const MAX_CLIENT_ATTEMPTS = once === 'once' ? 1 : 3 // JS<->JS on one host often fails the first try; bounded retry
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
  const dht = new DHT({ bootstrap: [{ host, port: Number(port) }], host: '127.0.0.1' })
  await dht.fullyBootstrapped()
  const keyPair = DHT.keyPair(Buffer.from(seedHex, 'hex'))
  if (role === 'server') {
    const allow = extra === '*' ? null : extra.split(',')
    const server = dht.createServer({
      firewall (remotePublicKey) { return allow !== null && !allow.includes(remotePublicKey.toString('hex')) }
    }, async (socket) => {
      out({ connected: socket.remotePublicKey.toString('hex') })
      try {
        const r = await exchange(socket)
        out(r)
        setTimeout(() => socket.end(), 500)
      } catch (e) { out({ error: e.message }) }
    })
    await server.listen(keyPair)
    out({ listening: keyPair.publicKey.toString('hex') })
  } else {
    const remote = Buffer.from(extra, 'hex')
    let attempts = 0
    while (true) {
      attempts++
      const t = Date.now()
      const socket = dht.connect(remote, { keyPair })
      try {
        await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
      } catch (e) {
        if (attempts < MAX_CLIENT_ATTEMPTS && e.code !== 'PEER_CONNECTION_FAILED_FIREWALL') { continue }
        out({ error: e.code || e.message, attempts })
        await dht.destroy()
        return
      }
      out({ connected: socket.remotePublicKey.toString('hex'), ms: Date.now() - t, attempts })
      const r = await exchange(socket)
      out(r)
      setTimeout(() => { socket.end(); dht.destroy() }, 500)
      return
    }
  }
}
main().catch((e) => { out({ error: e.message }); process.exit(1) })
