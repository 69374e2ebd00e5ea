//! Hostile input on the punch path: a listening server is flooded with stray probes, junk
//! datagrams, fake UDX packets and forged PEER_HOLEPUNCH / PEER_HANDSHAKE messages (relayed by
//! a real DHT node), then a real client still connects and moves data, and the process did not
//! grow without bound. Loopback only.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use ats_p2p_swarm::dht::{UserRequest, hash};
use ats_p2p_swarm::hyperdht::messages::{Handshake, Holepunch, Mode};
use ats_p2p_swarm::hyperdht::{Bootstrap, DhtConfig, DhtNode, Firewall, HyperDht, commands};
use ats_p2p_swarm::{KeyPair, PublicKey};
use rand::{Rng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Raw datagrams aimed at the server's socket.
const FLOOD_DATAGRAMS: usize = 20_000;
/// Forged holepunch and handshake messages relayed to the server.
const FORGED_MESSAGES: usize = 400;
/// Bytes the client moves afterwards.
const PAYLOAD: usize = 1 << 20;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_server_keeps_accepting_and_stays_bounded() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
        let mut relays = Vec::new();
        for _ in 0..3 {
            let mut cfg = DhtConfig::new(LOCAL, vec![boot.addr()]);
            cfg.ephemeral = false;
            let n = DhtNode::bind(cfg).await.unwrap();
            n.bootstrapped().await.unwrap();
            relays.push(n);
        }
        let server_dht = Arc::new(
            HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
                .await
                .unwrap(),
        );
        let server_kp = KeyPair::generate();
        let allow_all: Firewall = Arc::new(|_: &PublicKey| true);
        let mut server = server_dht.listen(server_kp.clone(), allow_all).await.unwrap();
        let target = SocketAddr::V4(match server_dht.local_addr() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound on IPv4"),
        });
        let before = rss_kib();

        // Raw floods: stray probes, junk, UDX-looking packets for random stream ids.
        let attacker = std::net::UdpSocket::bind((LOCAL, 0)).unwrap();
        let mut rng = rand::thread_rng();
        for i in 0..FLOOD_DATAGRAMS {
            let len = match i % 3 {
                0 => 1,
                1 => rng.gen_range(2..1200),
                _ => 20,
            };
            let mut d = vec![0u8; len];
            rng.fill_bytes(&mut d);
            if i % 3 == 0 {
                d[0] = 0;
            } else if i % 3 == 2 {
                // UDX magic and version, a random stream id.
                d[0] = 0xff;
                d[1] = 1;
            }
            let _ = attacker.send_to(&d, target);
            if i % 500 == 0 {
                tokio::task::yield_now().await;
            }
        }

        // Forged messages relayed by a real DHT node to the server's key.
        let forger = DhtNode::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
            .await
            .unwrap();
        forger.bootstrapped().await.unwrap();
        let key_target = hash(server_kp.public_key().as_bytes());
        let relay = relays[0].local_addr();
        for i in 0..FORGED_MESSAGES {
            let mut junk = vec![0u8; rng.gen_range(0..200)];
            rng.fill_bytes(&mut junk);
            let (command, value) = if i % 2 == 0 {
                let hp = Holepunch {
                    mode: Mode::FromClient,
                    id: rng.gen_range(0..512),
                    payload: junk,
                    peer_address: Some(SocketAddrV4::new(LOCAL, 9)),
                };
                (commands::PEER_HOLEPUNCH, hp.encode())
            } else {
                let hs = Handshake {
                    mode: Mode::FromClient,
                    noise: junk,
                    peer_address: None,
                    relay_address: None,
                };
                (commands::PEER_HANDSHAKE, hs.encode())
            };
            let req = UserRequest {
                to: relay,
                token: None,
                internal: false,
                command,
                target: Some(key_target),
                value: Some(value),
                socket: None,
                retries: Some(0),
            };
            // Nothing answers forged messages; do not wait for each.
            let f = forger.request(req);
            let _ = tokio::time::timeout(Duration::from_millis(5), f).await;
        }

        // A real client still gets through and moves data both ways.
        let client_dht = HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
            .await
            .unwrap();
        let client_kp = KeyPair::generate();
        let server_pk = server_kp.public_key();
        let (accepted, connected) = tokio::join!(
            server.accept(),
            client_dht.connect(&client_kp, &server_pk)
        );
        let mut s = accepted.expect("server accepts the real client");
        let mut c = connected.expect("the real client connects");
        let mut data = vec![0u8; PAYLOAD];
        rng.fill_bytes(&mut data);
        let send = async {
            c.write_all(&data).await.unwrap();
            c.flush().await.unwrap();
        };
        let mut got = vec![0u8; PAYLOAD];
        let recv = async {
            s.read_exact(&mut got).await.unwrap();
        };
        tokio::join!(send, recv);
        assert_eq!(got, data);
        let grown = rss_kib().saturating_sub(before);
        println!("flood: {FLOOD_DATAGRAMS} datagrams, {FORGED_MESSAGES} forged messages, RSS +{grown} KiB");
        assert!(grown < 128 * 1024, "RSS grew by {grown} KiB under the flood");
    })
    .await
    .expect("test timed out");
}
