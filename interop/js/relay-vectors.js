// Expected bytes for the blind-relay / protomux codec tests (tests/relay.rs), from the npm
// packages themselves (blind-relay 1.6.1, protomux 3.12.1, compact-encoding 3.5.2).
// Prints one JSON object of hex strings.
const c = require('compact-encoding')
const Protomux = require('protomux')
const relay = require('blind-relay')
const { Duplex } = require('streamx')

const hex = (b) => Buffer.from(b).toString('hex')
const token1 = Buffer.alloc(32, 1)
const token2 = Buffer.alloc(32, 2)
const chanId = Buffer.alloc(32, 7)

// a stream that records each write (one write = one secret-stream message)
function recorder () {
  const writes = []
  const s = new Duplex({ write (data, cb) { writes.push(hex(data)); cb(null) } })
  return { s, writes }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 50))

async function main () {
  const out = {
    pairInitiator: hex(c.encode(relay.messages.pair, { isInitiator: true, token: token1, id: 70000, seq: 0 })),
    pairResponder: hex(c.encode(relay.messages.pair, { isInitiator: false, token: token2, id: 5, seq: 300 })),
    unpair: hex(c.encode(relay.messages.unpair, { token: token2 }))
  }

  // plain protomux: open, message, close
  {
    const { s, writes } = recorder()
    const mux = new Protomux(s)
    const ch = mux.createChannel({ protocol: 'blind-relay', id: chanId })
    const m = ch.addMessage({ encoding: relay.messages.pair })
    ch.addMessage({ encoding: relay.messages.unpair })
    ch.open()
    m.send({ isInitiator: true, token: token1, id: 70000, seq: 0 })
    ch.messages[1].send({ token: token2 })
    ch.close()
    await tick()
    out.muxOpen = writes[0]
    out.muxPair = writes[1]
    out.muxUnpair = writes[2]
    out.muxClose = writes[3]
  }

  // corked: open + pair in one batch
  {
    const { s, writes } = recorder()
    const mux = new Protomux(s)
    mux.cork()
    const ch = mux.createChannel({ protocol: 'blind-relay', id: chanId })
    const m = ch.addMessage({ encoding: relay.messages.pair })
    ch.open()
    m.send({ isInitiator: false, token: token2, id: 5, seq: 300 })
    mux.uncork()
    await tick()
    out.muxBatch = writes[0]
  }

  // the blind-relay client itself: open, then pair when the request is read
  {
    const { s, writes } = recorder()
    const client = new relay.Client(s, { id: chanId })
    const req = client.pair(true, token1, { id: 1234 })
    req.on('data', () => {}).on('error', () => {})
    await tick()
    out.clientWrites = writes.slice()
    client.unpair(token1)
    await tick()
    out.clientUnpair = writes[writes.length - 1]
  }

  process.stdout.write(JSON.stringify(out) + '\n')
  process.exit(0)
}

main().catch((e) => { console.error(e); process.exit(1) })
