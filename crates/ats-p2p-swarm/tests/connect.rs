//! Connect by key and listen with a key firewall, Rust ↔ Rust on loopback through our bootstrap.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::hyperdht::{Bootstrap, ConnectError, DhtConfig, DhtNode, Firewall, HyperDht};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Whole-test bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes moved each way.
const PAYLOAD: usize = 64 << 20;

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

fn data(seed: u8) -> Vec<u8> {
    (0..PAYLOAD)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

async fn exchange<S>(s: S, send: Vec<u8>) -> [u8; 32]
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        w.write_all(&send).await.unwrap();
        // END, acknowledged: everything we wrote reached the peer.
        w.shutdown().await.unwrap();
        w
    });
    let mut got = vec![0u8; PAYLOAD];
    r.read_exact(&mut got).await.unwrap();
    // Then the peer's END: dropping now closes cleanly (no DESTROY racing the peer's reads).
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{} bytes more than sent", rest.len());
    let _w = writer.await.unwrap();
    Sha256::digest(&got).into()
}

fn allow_all() -> Firewall {
    Arc::new(|_| true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_to_rust_connect_64mib_each_way() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (boot, _relays) = network().await;
        let server = Arc::new(
            HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
                .await
                .unwrap(),
        );
        let client = HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
            .await
            .unwrap();
        let skp = KeyPair::from_seed([5; 32]);
        let ckp = KeyPair::from_seed([6; 32]);
        let mut listener = server.listen(skp.clone(), allow_all()).await.unwrap();
        let started = Instant::now();
        let conn = client.connect(&ckp, &skp.public_key()).await.unwrap();
        let accepted = listener.accept().await.unwrap();
        eprintln!("rust->rust connect: {:?}", started.elapsed());
        assert_eq!(conn.remote_public_key(), skp.public_key());
        assert_eq!(accepted.remote_public_key(), ckp.public_key());
        let (a, b) = (data(1), data(2));
        let (ha, hb): ([u8; 32], [u8; 32]) = (Sha256::digest(&a).into(), Sha256::digest(&b).into());
        let t = Instant::now();
        let (got_by_server, got_by_client) = tokio::join!(exchange(accepted, b), exchange(conn, a));
        eprintln!("64 MiB each way: {:?}", t.elapsed());
        assert_eq!(got_by_server, ha);
        assert_eq!(got_by_client, hb);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_refused_key_gets_no_stream() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (boot, _relays) = network().await;
        let server = Arc::new(
            HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
                .await
                .unwrap(),
        );
        let client = HyperDht::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
            .await
            .unwrap();
        let skp = KeyPair::from_seed([7; 32]);
        let good = KeyPair::from_seed([8; 32]);
        let bad = KeyPair::from_seed([9; 32]);
        let allowed = good.public_key();
        let fw: Firewall = Arc::new(move |k| *k == allowed);
        let mut listener = server.listen(skp.clone(), fw).await.unwrap();
        let refused = client.connect(&bad, &skp.public_key()).await;
        assert!(
            matches!(refused, Err(ConnectError::HandshakeFailed)),
            "refused key must get no reply: {refused:?}"
        );
        let ok = client.connect(&good, &skp.public_key()).await.unwrap();
        let acc = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(acc.remote_public_key(), good.public_key());
        assert_eq!(ok.remote_public_key(), skp.public_key());
        // Nothing else was accepted (the refused key never produced a stream).
        assert!(listener.accept().now_or_never_none().await);
    })
    .await
    .expect("test timed out");
}

trait NowOrNever {
    async fn now_or_never_none(self) -> bool;
}
impl<F: Future> NowOrNever for F {
    async fn now_or_never_none(self) -> bool {
        tokio::time::timeout(Duration::from_millis(300), self)
            .await
            .is_err()
    }
}
