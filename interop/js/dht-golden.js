// Prints golden vectors for the ats-p2p Rust DHT codecs as one JSON object on stdout.
const c = require('compact-encoding')
const b4a = require('b4a')
const sodium = require('sodium-universal')
const peer = require('dht-rpc/lib/peer')
const m = require('hyperdht/lib/messages')
const Persistent = require('hyperdht/lib/persistent')
const { NS } = require('hyperdht/lib/constants')
const DHT = require('hyperdht')

const hex = (b) => b4a.toString(b, 'hex')
const out = {}

out.uint = [0, 0xfc, 0xfd, 300, 0xffff, 0x10000, 70000, 0xffffffff, 2 ** 40].map((n) => [n, hex(c.encode(c.uint, n))])
out.ipv4 = hex(c.encode(c.ipv4Address, { host: '10.1.2.3', port: 49737 }))
out.ipv6 = hex(c.encode(c.ipv6Address, { host: '2001:db8::1', port: 8080 }))
out.string = hex(c.encode(c.string, 'héllo'))
out.ids = ['127.0.0.1:49737', '10.1.2.3:1', '255.255.255.255:65535'].map((s) => {
  const [h, p] = s.split(':')
  return [s, hex(peer.id(h, Number(p)))]
})
out.ns = {}
for (const k of Object.keys(NS)) out.ns[k] = hex(NS[k])

// keyed blake2b as dht-rpc tokens use it
const key = b4a.alloc(32, 7)
const tok = b4a.alloc(32)
sodium.crypto_generichash(tok, b4a.from('127.0.0.1'), key)
out.token = { key: hex(key), host: '127.0.0.1', token: hex(tok) }
const hh = b4a.alloc(64, 3)
const hs = b4a.alloc(32)
sodium.crypto_generichash(hs, NS.PEER_HOLEPUNCH, hh)
out.holepunchSecret = { hash: hex(hh), secret: hex(hs) }

// secretbox
const nonce = b4a.alloc(24, 1)
const boxed = b4a.alloc(16 + 5)
sodium.crypto_secretbox_easy(boxed, b4a.from('hello'), nonce, hs)
out.secretbox = { key: hex(hs), nonce: hex(nonce), plain: hex(b4a.from('hello')), boxed: hex(boxed) }

// messages
const a = { host: '127.0.0.1', port: 4000 }
const b = { host: '10.0.0.2', port: 5000 }
const pk = b4a.alloc(32, 0xaa)
out.peer = hex(c.encode(m.peer, { publicKey: pk, relayAddresses: [a, b] }))
out.handshake = hex(c.encode(m.handshake, { mode: 2, noise: b4a.from('noise!'), peerAddress: a, relayAddress: b }))
out.holepunch = hex(c.encode(m.holepunch, { mode: 1, id: 300, payload: b4a.from('pl'), peerAddress: b }))
out.holepunchPayload = hex(c.encode(m.holepunchPayload, { error: 0, firewall: 2, round: 1, connected: false, punching: true, addresses: [a], remoteAddress: b, token: b4a.alloc(32, 1), remoteToken: null }))
out.noisePayload = hex(c.encode(m.noisePayload, {
  version: 1, error: 0, firewall: 1,
  holepunch: { id: 2, relays: [{ relayAddress: a, peerAddress: b }] },
  addresses4: [a], addresses6: [], udx: { reusableSocket: true, id: 123456, seq: 0 },
  secretStream: {}, relayThrough: null, relayAddresses: [b]
}))
out.lookupReply = hex(c.encode(m.lookupRawReply, { peers: [c.encode(m.peer, { publicKey: pk, relayAddresses: [] })], bump: 0 }))

// announce signable + signature
const kp = DHT.keyPair(b4a.alloc(32, 5))
const target = b4a.alloc(32, 0x11)
const nodeId = b4a.alloc(32, 0x22)
const token = b4a.alloc(32, 0x33)
const ann = { peer: { publicKey: kp.publicKey, relayAddresses: [a] }, refresh: null, signature: null, bump: 0 }
ann.signature = Persistent.signAnnounce(target, token, nodeId, ann, kp)
out.announce = {
  seed: hex(b4a.alloc(32, 5)), publicKey: hex(kp.publicKey), target: hex(target), nodeId: hex(nodeId), token: hex(token),
  signature: hex(ann.signature), value: hex(c.encode(m.announce, ann))
}
const unann = { peer: { publicKey: kp.publicKey, relayAddresses: [] }, refresh: null, signature: null, bump: 0 }
unann.signature = Persistent.signUnannounce(target, token, nodeId, unann, kp)
out.unannounce = { signature: hex(unann.signature), value: hex(c.encode(m.announce, unann)) }

process.stdout.write(JSON.stringify(out) + '\n')
