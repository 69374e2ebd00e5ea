#!/usr/bin/env node
// JavaScript reference for the ats-p2p end-to-end benchmark (issue 7).
//
//   npm ci --prefix benches/js && node benches/js/bench.js [--size 1GiB | --file PATH] [--keep]
//       [--host IPV4] [--recv-host IPV4 --recv-netns NS] [--timeout-s N]
//
// Starts a local HyperDHT testnet on --host (default 127.0.0.1; in this process), generates a
// random file of the given size in a temp dir (or takes --file), then runs a receiver and a sender as separate node processes
// (peer.js) that move it with the ats-p2p frame protocol over npm hyperswarm. The receiver writes
// a temp file, checks SHA-256 and size, renames it into place, then ACKs. --recv-netns runs the
// receiver in that network namespace (`ip netns exec`, root) bound to --recv-host; the sender
// stays in this process's namespace, bound to --host. Prints one JSON line:
//   bytes, seconds (the transfer's connection, first side to see it -> sender got ACK), mbPerSec
//   (1e6 bytes/s), ttfbMs (receiver: connection -> first DATA byte), connectAttempts and
//   secondsFromFirstAttempt (JS hyperdht 6.34 sometimes opens a same-host connection that then
//   times out after ~13 s; the sender lets hyperswarm reconnect), senderPreHashSeconds, and per
//   side peakRssBytes / cpuSeconds (process.resourceUsage: maxRSS, user+system CPU),
//   sendWholeSeconds (the sending peer process: spawn -> exit) and receivedSha256 (of the file
//   the receiver saved, hashed here again).
'use strict'

const createTestnet = require('@hyperswarm/testnet')
const { spawn } = require('child_process')
const crypto = require('crypto')
const fs = require('fs')
const os = require('os')
const path = require('path')

const GEN_CHUNK = 4 * 1024 * 1024 // random data written per step while generating the file
const RUN_TIMEOUT_S = 30 * 60 // default bound on one transfer (1 GiB at ~1 MB/s); --timeout-s

function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)\s*(|b|k|kib|m|mib|g|gib)$/i.exec(s.trim())
  if (!m) throw new Error('bad --size ' + s)
  const mult = { '': 1, b: 1, k: 1024, kib: 1024, m: 1 << 20, mib: 1 << 20, g: 1 << 30, gib: 1 << 30 }
  return Math.round(Number(m[1]) * mult[m[2].toLowerCase()])
}

function opt(name, dflt) {
  const i = process.argv.indexOf('--' + name)
  return i === -1 ? dflt : process.argv[i + 1]
}

async function generate(file, size) {
  const out = fs.createWriteStream(file)
  let left = size
  while (left > 0) {
    const n = Math.min(GEN_CHUNK, left)
    if (!out.write(crypto.randomBytes(n))) await new Promise((resolve) => out.once('drain', resolve))
    left -= n
  }
  await new Promise((resolve, reject) => out.end((err) => (err ? reject(err) : resolve())))
}

function runPeer(args, onLine, netns) {
  const argv = [path.join(__dirname, 'peer.js'), ...args]
  const child = netns
    ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] })
  let buf = ''
  let last = null
  child.stdout.on('data', (d) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = JSON.parse(buf.slice(0, i))
      buf = buf.slice(i + 1)
      last = line
      if (onLine) onLine(line)
    }
  })
  const done = new Promise((resolve, reject) => {
    child.on('exit', (code) => (code === 0 ? resolve(last) : reject(new Error(`${args[0]} exited ${code}: ${JSON.stringify(last)}`))))
  })
  return { child, done }
}

async function hashFile(file) {
  const h = crypto.createHash('sha256')
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk)
  return h.digest('hex')
}

async function main() {
  const given = opt('file', null)
  const size = given ? fs.statSync(given).size : parseSize(opt('size', '1GiB'))
  const host = opt('host', '127.0.0.1')
  const recvHost = opt('recv-host', host)
  const recvNetns = opt('recv-netns', null)
  const keep = process.argv.includes('--keep')
  const timeoutS = Number(opt('timeout-s', RUN_TIMEOUT_S))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ats-p2p-bench-js-'))
  const srcDir = path.join(dir, 'src')
  const outDir = path.join(dir, 'out')
  fs.mkdirSync(srcDir)
  fs.mkdirSync(outDir)
  const file = given || path.join(srcDir, 'payload.bin')
  const children = []
  let testnet = null
  const timer = setTimeout(() => {
    console.error(`bench: timed out after ${timeoutS} s`)
    for (const c of children) c.kill('SIGKILL')
    if (!keep) fs.rmSync(dir, { recursive: true, force: true })
    process.exit(1)
  }, timeoutS * 1000)
  try {
    if (!given) await generate(file, size)
    testnet = await createTestnet(3, { host })
    const bootstrap = `${testnet.bootstrap[0].host}:${testnet.bootstrap[0].port}`
    const topic = crypto.randomBytes(32).toString('hex')

    let announced
    const isAnnounced = new Promise((resolve) => (announced = resolve))
    const recv = runPeer(
      ['receive', '--bootstrap', bootstrap, '--topic', topic, '--out', outDir, '--host', recvHost],
      (l) => {
        if (l.event === 'announced') announced()
      },
      recvNetns
    )
    children.push(recv.child)
    await Promise.race([isAnnounced, recv.done])
    let sendWholeSeconds = null
    const sendSpawned = process.hrtime.bigint()
    const send = runPeer(['send', '--bootstrap', bootstrap, '--topic', topic, '--file', file, '--host', host])
    children.push(send.child)
    const sendExited = send.done.then((last) => {
      sendWholeSeconds = Number(process.hrtime.bigint() - sendSpawned) / 1e9
      return last
    })
    const [r, s] = await Promise.all([recv.done, sendExited])

    const saved = path.join(outDir, path.basename(file))
    const got = fs.statSync(saved).size
    if (got !== size) throw new Error(`received file has ${got} bytes, want ${size}`)
    const receivedSha256 = await hashFile(saved)
    const seconds = (s.ackAt - Math.min(r.connectedAt, s.connectedAt)) / 1000
    process.stdout.write(
      JSON.stringify({
        impl: 'js-hyperswarm',
        bytes: size,
        seconds,
        mbPerSec: size / 1e6 / seconds,
        ttfbMs: r.firstDataAt - r.connectedAt,
        connectAttempts: s.attempts,
        secondsFromFirstAttempt: (s.ackAt - s.firstConnectAt) / 1000,
        senderPreHashSeconds: s.preHashSeconds,
        sendWholeSeconds,
        receivedSha256,
        sender: { peakRssBytes: s.peakRssBytes, cpuSeconds: s.cpuSeconds },
        receiver: { peakRssBytes: r.peakRssBytes, cpuSeconds: r.cpuSeconds }
      }) + '\n'
    )
  } finally {
    clearTimeout(timer)
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    if (testnet) await testnet.destroy()
    if (!keep) fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error('bench:', err.message)
  process.exit(1)
})
