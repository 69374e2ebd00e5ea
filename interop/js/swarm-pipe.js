// JS counterpart of `cargo run --example pipe`: hyperswarm on a topic, stdin -> first peer -> stdout.
// usage: node swarm-pipe.js <bootstrap host:port> <topic hex> server|client
const Hyperswarm = require('hyperswarm')
const [boot, topicHex, role] = process.argv.slice(2)
const [host, port] = boot.split(':')
const swarm = new Hyperswarm({ bootstrap: [{ host, port: Number(port) }] })
let taken = false
swarm.on('connection', (socket) => {
  if (taken) return socket.destroy()
  taken = true
  process.stderr.write('swarm-pipe: connected to ' + socket.remotePublicKey.toString('hex') + '\n')
  process.stdin.pipe(socket).pipe(process.stdout)
  // stdin's end ends our side; destroy only once both directions finished (flushed).
  socket.on('close', () => swarm.destroy())
  socket.on('error', () => swarm.destroy())
})
swarm.join(Buffer.from(topicHex, 'hex'), { server: role === 'server', client: role === 'client' })
