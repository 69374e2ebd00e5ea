//! The transfer driver over the production stream: a file moves between two swarms on loopback
//! (local HyperDHT bootstrap, topic from the transfer id, the server's firewall allowing only the
//! receiver's key), and arrives intact.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is a failed test

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ats_p2p::swarm::hyperdht::{Bootstrap, DhtConfig, DhtNode};
use ats_p2p::swarm::swarm::{JoinMode, Swarm, SwarmConfig};
use ats_p2p::topic::transfer_topic;
use ats_p2p::transfer::{receive_stream, send_stream};
use ats_p2p::wire::{FileHash, Meta, ReceiverConfig, SenderConfig};
use rand::{RngCore, SeedableRng};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const FILE_LEN: usize = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_moves_between_two_swarms_on_loopback() {
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

        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; FILE_LEN];
        rand::rngs::StdRng::seed_from_u64(11).fill_bytes(&mut data);
        let src = dir.path().join("payload.bin");
        std::fs::write(&src, &data).unwrap();
        let meta = Meta {
            name: "payload.bin".into(),
            size: data.len() as u64,
            hash: FileHash::of(&data),
            resume: false,
        };
        let id = [0x5au8; 16];
        let id_hex = hex::encode(id);
        let topic = transfer_topic(&id);

        let mut receiver_cfg = SwarmConfig::new(LOCAL, vec![boot.addr()]);
        receiver_cfg.seed = Some([2; 32]);
        let receiver = Swarm::new(receiver_cfg).await.unwrap();
        let mut sender_cfg = SwarmConfig::new(LOCAL, vec![boot.addr()]);
        sender_cfg.seed = Some([1; 32]);
        sender_cfg.allow = Some(vec![receiver.public_key()]);
        let mut sender = Swarm::new(sender_cfg).await.unwrap();
        let sender_key = sender.public_key();
        let receiver_key = receiver.public_key();
        sender.join(topic, JoinMode::SERVER).await.unwrap();

        let save = dir.path().join("incoming");
        let started = Instant::now();
        let (sent, received) = tokio::join!(
            async {
                let conn = sender.next_connection().await.unwrap();
                assert_eq!(conn.remote_public_key(), receiver_key);
                send_stream(conn, &src, meta.clone(), SenderConfig::default(), |_, _| {}).await
            },
            async {
                let conn = receiver.connect(sender_key).await.unwrap();
                assert_eq!(conn.remote_public_key(), sender_key);
                receive_stream(
                    conn,
                    &save,
                    &id_hex,
                    meta.clone(),
                    ReceiverConfig::new(1 << 30),
                    |_, _| {},
                )
                .await
            },
        );
        let elapsed = started.elapsed();
        sent.unwrap();
        let received = received.unwrap();
        assert_eq!(received.hash, meta.hash);
        assert_eq!(std::fs::read(&received.path).unwrap(), data);
        eprintln!("{FILE_LEN} bytes over the swarm in {elapsed:?}");
        sender.destroy().await;
        receiver.destroy().await;
    })
    .await
    .unwrap();
}
