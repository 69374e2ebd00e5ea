// Known-answer vectors from the JavaScript stack for the Rust noise / secret_stream modules.
// Prints one JSON object on stdout. Fixed seeds everywhere except the secretstream header,
// which libsodium always draws at random (the Rust test reuses the header it finds here).
// Used by ats-p2p-swarm/tests/noise_vectors.rs (runs `node noise-vectors.js`).
'use strict'

const Noise = require('noise-handshake')
const curve = require('noise-curve-ed')
const sodium = require('sodium-native')
const { Push } = require('sodium-secretstream')
const NoiseSecretStream = require('@hyperswarm/secret-stream')

const hex = (b) => Buffer.from(b).toString('hex')
const seed = (n) => Buffer.alloc(32, n)

function dhVectors () {
  const out = []
  for (const [a, b] of [[1, 2], [3, 4], [200, 17]]) {
    const local = curve.generateKeyPair(seed(a))
    const remote = curve.generateKeyPair(seed(b))
    out.push({
      local_seed: hex(seed(a)),
      remote_public: hex(remote.publicKey),
      shared: hex(curve.dh(remote.publicKey, local))
    })
  }
  // libsodium refuses these (small order / not a point / non-canonical): dh throws
  const rejected = []
  const bad = [
    '0100000000000000000000000000000000000000000000000000000000000000',
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    '0000000000000000000000000000000000000000000000000000000000000000',
    'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    '0200000000000000000000000000000000000000000000000000000000000000'
  ]
  // a valid prime-order key plus an 8-torsion point: on the curve, canonical, not prime order
  const torsioned = Buffer.alloc(32)
  sodium.crypto_core_ed25519_add(torsioned, curve.generateKeyPair(seed(2)).publicKey,
    Buffer.from('26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', 'hex'))
  bad.push(hex(torsioned))
  for (const b of bad) {
    let ok = true
    try { curve.dh(Buffer.from(b, 'hex'), curve.generateKeyPair(seed(1))) } catch { ok = false }
    rejected.push({ public: b, accepted: ok })
  }
  return { vectors: out, invalid: rejected }
}

function transcript (pattern, prologue, payloads) {
  const si = curve.generateKeyPair(seed(11))
  const sr = curve.generateKeyPair(seed(12))
  const i = new Noise(pattern, true, si, { curve })
  const r = new Noise(pattern, false, sr, { curve })
  i.initialise(prologue, pattern === 'IK' ? sr.publicKey : undefined)
  r.initialise(prologue)
  i.e = curve.generateKeyPair(seed(21))
  r.e = curve.generateKeyPair(seed(22))
  const messages = []
  let sender = i
  let receiver = r
  let n = 0
  while (!i.complete || !r.complete) {
    const m = sender.send(payloads[n] || Buffer.alloc(0))
    const sent = hex(m) // recv keeps a view of m and zeroes it when the handshake completes
    const p = receiver.recv(m)
    messages.push({ message: sent, payload: hex(p) })
    n++
    ;[sender, receiver] = [receiver, sender]
  }
  return {
    pattern,
    prologue: hex(prologue),
    initiator_seed: hex(seed(11)),
    responder_seed: hex(seed(12)),
    initiator_ephemeral_seed: hex(seed(21)),
    responder_ephemeral_seed: hex(seed(22)),
    payloads: payloads.map(hex),
    messages,
    initiator_tx: hex(i.tx),
    initiator_rx: hex(i.rx),
    responder_tx: hex(r.tx),
    responder_rx: hex(r.rx),
    hash: hex(i.hash),
    responder_hash: hex(r.hash)
  }
}

function secretstreamVectors () {
  const key = Buffer.alloc(32, 0x42)
  const push = new Push(key)
  // Every length 0..=80, then each residue mod 16 around 64 KiB: lengths ≡ 0 or 8 mod 16 are
  // the ones the Rust side seals with the IETF AEAD, the others with the portable path.
  const lengths = []
  for (let len = 0; len <= 80; len++) lengths.push(len)
  for (let r = 0; r < 16; r++) lengths.push(65536 + r)
  lengths.push(1000, 4096, 4104)
  const messages = lengths.map((len, k) => {
    const plain = Buffer.alloc(len)
    for (let j = 0; j < len; j++) plain[j] = (j * 7 + k) & 255
    return { plain: hex(plain), cipher: hex(push.next(plain)) }
  })
  return { key: hex(key), header: hex(push.header), messages }
}

function streamIds () {
  const hash = Buffer.alloc(64)
  for (let j = 0; j < 64; j++) hash[j] = j
  return {
    hash: hex(hash),
    initiator: hex(NoiseSecretStream.id(hash, true)),
    responder: hex(NoiseSecretStream.id(hash, false))
  }
}

const NS_PEER_HANDSHAKE = (() => {
  // hyperdht's prologue: H(H("hyperswarm/dht") ‖ 0)
  const ns = Buffer.alloc(32)
  sodium.crypto_generichash(ns, Buffer.from('hyperswarm/dht'))
  const out = Buffer.alloc(32)
  sodium.crypto_generichash(out, Buffer.concat([ns, Buffer.from([0])]))
  return out
})()

console.log(JSON.stringify({
  dh: dhVectors(),
  xx: transcript('XX', Buffer.alloc(0), []),
  ik: transcript('IK', NS_PEER_HANDSHAKE, [Buffer.from('client payload'), Buffer.from('server payload!')]),
  secretstream: secretstreamVectors(),
  stream_id: streamIds()
}, null, 1))
