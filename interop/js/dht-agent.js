// Line-driven JavaScript HyperDHT agent for the ats-p2p Rust interop tests.
// Reads one JSON command per line on stdin, answers one JSON line on stdout.
// Commands:
//   {"cmd":"testnet","size":N,"bootstrap":["host:port"]?}  -> {"bootstrap":"127.0.0.1:port"}
//   {"cmd":"node","bootstrap":["host:port"],"persistent":bool?} -> {"node":idx}
//   {"cmd":"announce","node":i,"topic":hex,"seed":hex}     -> {"ok":true}
//   {"cmd":"lookup","node":i,"topic":hex}                   -> {"peers":[pkhex,...]}
//   {"cmd":"connect","server":i,"client":j,"seed":hex}      -> {"echo":"..."}
//   {"cmd":"request","node":i,"to":"host:port","command":n,"target":hex?,"value":hex?,"token":hex?}
//       -> {"tid","code","to","id","token","closer","value"}
//   {"cmd":"immutablePut","node":i,"value":hex} -> {"hash"}; {"cmd":"immutableGet","node":i,"hash":hex} -> {"value"}
//   {"cmd":"mutablePut","node":i,"seed":hex,"value":hex,"seq":n}; {"cmd":"mutableGet","node":i,"publicKey":hex,"seq":n}
//   {"cmd":"addr","node":i}                               -> {"addr","id"}
//   {"cmd":"quit"}
const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const readline = require('readline')

const nodes = []
const testnets = []

function parse (list) {
  return (list || []).map((s) => {
    const [host, port] = s.split(':')
    return { host, port: Number(port) }
  })
}

async function handle (m) {
  switch (m.cmd) {
    case 'testnet': {
      const t = await createTestnet(m.size, { host: '127.0.0.1', bootstrap: parse(m.bootstrap) })
      testnets.push(t)
      for (const n of t.nodes) nodes.push(n)
      const b = t.bootstrap[0]
      return { bootstrap: b.host + ':' + b.port, first: nodes.length - t.nodes.length }
    }
    case 'node': {
      const opts = { bootstrap: parse(m.bootstrap), host: '127.0.0.1', port: 0 }
      if (m.persistent) { opts.ephemeral = false; opts.firewalled = false }
      const n = new DHT(opts)
      await n.fullyBootstrapped()
      nodes.push(n)
      return { node: nodes.length - 1, id: n.id ? n.id.toString('hex') : null, firewalled: n.firewalled }
    }
    case 'announce': {
      const kp = DHT.keyPair(Buffer.from(m.seed, 'hex'))
      const q = nodes[m.node].announce(Buffer.from(m.topic, 'hex'), kp)
      await q.finished()
      return { ok: true, closest: q.closestNodes.length }
    }
    case 'unannounce': {
      const kp = DHT.keyPair(Buffer.from(m.seed, 'hex'))
      await nodes[m.node].unannounce(Buffer.from(m.topic, 'hex'), kp)
      return { ok: true }
    }
    case 'lookup': {
      const peers = new Set()
      for await (const r of nodes[m.node].lookup(Buffer.from(m.topic, 'hex'))) {
        for (const p of r.peers) peers.add(p.publicKey.toString('hex'))
      }
      return { peers: [...peers] }
    }
    case 'connect': {
      const kp = DHT.keyPair(Buffer.from(m.seed, 'hex'))
      const server = nodes[m.server].createServer((sock) => {
        sock.on('data', (d) => sock.write(d))
        sock.on('error', () => {})
      })
      await server.listen(kp)
      const sock = nodes[m.client].connect(kp.publicKey)
      sock.on('error', () => {})
      const echo = await new Promise((resolve, reject) => {
        sock.once('data', (d) => resolve(d.toString()))
        sock.once('error', reject)
        sock.write('hello from js')
      })
      sock.destroy()
      await server.close()
      return { echo }
    }
    case 'request': {
      // A raw dht-rpc request to host:port; answers the decoded response fields.
      const [host, port] = m.to.split(':')
      const hexOrNull = (x) => (x ? Buffer.from(x, 'hex') : null)
      const res = await nodes[m.node].request(
        { token: hexOrNull(m.token), command: m.command, target: hexOrNull(m.target), value: hexOrNull(m.value) },
        { host, port: Number(port) },
        { retry: false }
      )
      return {
        tid: res.tid,
        code: res.error,
        to: res.to.host + ':' + res.to.port,
        id: res.from.id ? res.from.id.toString('hex') : null,
        token: res.token ? res.token.toString('hex') : null,
        closer: (res.closerNodes || []).map((n) => n.host + ':' + n.port),
        value: res.value ? res.value.toString('hex') : null
      }
    }
    case 'immutablePut': {
      const r = await nodes[m.node].immutablePut(Buffer.from(m.value, 'hex'))
      return { hash: r.hash.toString('hex') }
    }
    case 'immutableGet': {
      const r = await nodes[m.node].immutableGet(Buffer.from(m.hash, 'hex'))
      return { value: r ? r.value.toString('hex') : null }
    }
    case 'mutablePut': {
      const kp = DHT.keyPair(Buffer.from(m.seed, 'hex'))
      await nodes[m.node].mutablePut(kp, Buffer.from(m.value, 'hex'), { seq: m.seq })
      return { ok: true }
    }
    case 'mutableGet': {
      const r = await nodes[m.node].mutableGet(Buffer.from(m.publicKey, 'hex'), { seq: m.seq || 0 })
      return { value: r ? r.value.toString('hex') : null, seq: r ? r.seq : null }
    }
    case 'addr': {
      const n = nodes[m.node]
      const a = n.address()
      return { addr: '127.0.0.1:' + a.port, id: n.id ? n.id.toString('hex') : null }
    }
    case 'quit': {
      for (const n of nodes.reverse()) await n.destroy().catch(() => {})
      process.exit(0)
    }
  }
  throw new Error('unknown command ' + m.cmd)
}

const rl = readline.createInterface({ input: process.stdin })
let chain = Promise.resolve()
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let out
    try {
      out = await handle(JSON.parse(line))
    } catch (err) {
      out = { error: String(err && err.stack || err) }
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  })
})
rl.on('close', () => process.exit(0))
