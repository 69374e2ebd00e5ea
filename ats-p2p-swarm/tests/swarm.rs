//! The swarm API on loopback: ten peers on one topic connect pairwise exactly once; connect to
//! an expected key; the allowlist firewall.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ats_p2p_swarm::PublicKey;
use ats_p2p_swarm::hyperdht::{Bootstrap, DhtConfig, DhtNode};
use ats_p2p_swarm::swarm::{JoinMode, Swarm, SwarmConfig, SwarmConnection, SwarmError, topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Whole-test bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const PEERS: usize = 10;

async fn network() -> (Bootstrap, Vec<DhtNode>) {
    let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut cfg = DhtConfig::new(LOCAL, vec![boot.addr()]);
        cfg.ephemeral = false;
        let n = DhtNode::bind(cfg).await.unwrap();
        n.bootstrapped().await.unwrap();
        nodes.push(n);
    }
    (boot, nodes)
}

fn config(boot: &Bootstrap, seed: u8) -> SwarmConfig {
    let mut c = SwarmConfig::new(LOCAL, vec![boot.addr()]);
    c.seed = Some([seed; 32]);
    c
}

type Held = Arc<Mutex<Vec<SwarmConnection>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_peers_on_one_topic_connect_pairwise_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (boot, _relays) = network().await;
        let t = topic(b"ats-p2p swarm test: ten peers");
        let mut keys = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        let mut swarms = Vec::new();
        for i in 0..PEERS {
            let s = Swarm::new(config(&boot, 100 + i as u8)).await.unwrap();
            keys.push(s.public_key());
            let h: Held = Arc::default();
            held.push(h.clone());
            s.join(t, JoinMode::BOTH).await.unwrap();
            // Drain connections into `held`, like an application would.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            let mut s2 = s;
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        c = s2.next_connection() => match c {
                            Some(c) => h.lock().unwrap().push(c),
                            None => break,
                        },
                        _ = rx.recv() => break,
                    }
                }
                s2
            });
            swarms.push((task, tx));
        }
        // Wait until every peer has a live connection to each of the other nine.
        let started = Instant::now();
        let live = |h: &Held| -> HashMap<PublicKey, Vec<[u8; 64]>> {
            let mut m: HashMap<PublicKey, Vec<[u8; 64]>> = HashMap::new();
            for c in h.lock().unwrap().iter().filter(|c| !c.is_closed_by_swarm()) {
                m.entry(c.remote_public_key())
                    .or_default()
                    .push(c.handshake_hash());
            }
            m
        };
        loop {
            let done = held.iter().all(|h| live(h).len() == PEERS - 1);
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not fully connected: {:?}",
                held.iter().map(|h| live(h).len()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "10 peers fully connected after the last join in {:?}",
            started.elapsed()
        );
        // Let late duplicates settle, then check: exactly one live connection per pair, the
        // same one on both ends.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let maps: Vec<_> = held.iter().map(live).collect();
        for i in 0..PEERS {
            for j in 0..PEERS {
                if i == j {
                    continue;
                }
                let a = &maps[i][&keys[j]];
                assert_eq!(
                    a.len(),
                    1,
                    "peer {i} has {} live connections to {j}",
                    a.len()
                );
                assert_eq!(
                    a, &maps[j][&keys[i]],
                    "peers {i} and {j} kept different connections"
                );
            }
        }
        // The kept connections carry data both ways.
        let mut c01 = {
            let mut h = held[0].lock().unwrap();
            let idx = h
                .iter()
                .position(|c| !c.is_closed_by_swarm() && c.remote_public_key() == keys[1])
                .unwrap();
            h.swap_remove(idx)
        };
        let mut c10 = {
            let mut h = held[1].lock().unwrap();
            let idx = h
                .iter()
                .position(|c| !c.is_closed_by_swarm() && c.remote_public_key() == keys[0])
                .unwrap();
            h.swap_remove(idx)
        };
        c01.write_all(b"ping").await.unwrap();
        c01.flush().await.unwrap();
        let mut b = [0u8; 4];
        c10.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        for (task, tx) in swarms {
            let _ = tx.send(()).await;
            let s = task.await.unwrap();
            s.destroy().await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_expected_key_and_allowlist() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (boot, _relays) = network().await;
        let mut client = Swarm::new(config(&boot, 1)).await.unwrap();
        let stranger = Swarm::new(config(&boot, 2)).await.unwrap();
        let mut sc = config(&boot, 3);
        sc.allow = Some(vec![client.public_key()]);
        let mut server = Swarm::new(sc).await.unwrap();
        let t = topic(b"allowlist");
        server.join(t, JoinMode::SERVER).await.unwrap();
        // The stranger is refused during the handshake: no stream, an error within the bound.
        let r = stranger.connect(server.public_key()).await;
        assert!(matches!(r, Err(SwarmError::Connect(_))), "{r:?}");
        let mut c = client.connect(server.public_key()).await.unwrap();
        assert_eq!(c.remote_public_key(), server.public_key());
        let mut s = server.next_connection().await.unwrap();
        assert_eq!(s.remote_public_key(), client.public_key());
        // A second dial to a connected key is refused as a duplicate.
        assert!(matches!(
            client.connect(server.public_key()).await,
            Err(SwarmError::Duplicate)
        ));
        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), client.next_connection())
                .await
                .is_err()
        );
        server.leave(t).await.unwrap();
        drop((c, s));
        client.destroy().await;
        server.destroy().await;
        stranger.destroy().await;
    })
    .await
    .expect("test timed out");
}

/// Bootstrap nodes that never answer: the swarm says so at start instead of joining a topic
/// where no peer can ever be found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_bootstrap_is_an_error_at_start() {
    // A bound UDP socket that never answers stands in for a dead bootstrap node.
    let silent = std::net::UdpSocket::bind((LOCAL, 0)).unwrap();
    let addr = match silent.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => unreachable!("bound on IPv4"),
    };
    let started = Instant::now();
    let r = tokio::time::timeout(
        TEST_TIMEOUT,
        Swarm::new(SwarmConfig::new(LOCAL, vec![addr])),
    )
    .await
    .expect("Swarm::new returns");
    match r {
        Err(e) => assert!(
            e.to_string().contains("no DHT bootstrap node answered"),
            "{e}"
        ),
        Ok(_) => panic!("a swarm with a dead bootstrap node started"),
    }
    println!("dead bootstrap reported after {:?}", started.elapsed());
}
