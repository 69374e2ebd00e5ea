// Starts a local hyperdht testnet (bootstrap + N nodes) on 127.0.0.1 and prints the bootstrap.
// usage: node testnet.js [size=3]   (runs until killed)
const createTestnet = require('hyperdht/testnet')
createTestnet(Number(process.argv[2] || 3), { host: '127.0.0.1' }).then((t) => {
  const b = t.bootstrap[0]
  console.log(b.host + ':' + b.port)
})
