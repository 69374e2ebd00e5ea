//! Interop with npm hyperdht 6.34 over real UDP on 127.0.0.1.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::dht::hash;
use ats_p2p_swarm::hyperdht::{Bootstrap, DhtConfig, DhtNode};
use serde_json::json;
use support::Agent;

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
const STEP: Duration = Duration::from_secs(20);

fn topic(name: &str) -> [u8; 32] {
    hash(name.as_bytes())
}

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test exceeded its time bound")
}

/// (a) JS nodes bootstrap off our Bootstrap; one announces, another's lookup finds it.
/// (b) Two JS peers connect to each other by key with only our bootstrap as the DHT: our node
/// stores the server's forward and relays PEER_HANDSHAKE / PEER_HOLEPUNCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_peers_on_our_bootstrap() {
    bounded(async {
        let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
        let b = boot.addr().to_string();
        let mut js = Agent::spawn().await;
        let n0 = js.call(json!({"cmd":"node","bootstrap":[b]}), STEP).await["node"].clone();
        let n1 = js.call(json!({"cmd":"node","bootstrap":[b]}), STEP).await["node"].clone();
        let t = hex::encode(topic("interop-a"));
        let seed = hex::encode([1u8; 32]);
        let pk = KeyPair::from_seed([1u8; 32]).public_key().to_hex();
        js.call(
            json!({"cmd":"announce","node":n0,"topic":t,"seed":seed}),
            STEP,
        )
        .await;
        let found = js
            .call(json!({"cmd":"lookup","node":n1,"topic":t}), STEP)
            .await;
        assert!(
            found["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == &json!(pk)),
            "JS lookup via our bootstrap did not find the JS announce: {found}"
        );
        let info = boot.node().info().await.unwrap();
        assert!(
            info.stored.1 >= 1,
            "our bootstrap stored no record: {info:?}"
        );

        let started = Instant::now();
        let echo = js
            .call(
                json!({"cmd":"connect","server":n0,"client":n1,"seed":hex::encode([2u8; 32])}),
                STEP,
            )
            .await;
        assert_eq!(echo["echo"], "hello from js");
        eprintln!("js<->js connect through our relay: {:?}", started.elapsed());
        let info = boot.node().info().await.unwrap();
        assert!(
            info.relayed.handshakes_to_server >= 1 && info.relayed.handshakes_to_client >= 1,
            "our bootstrap relayed no handshake: {info:?}"
        );
        assert!(info.bootstrapped, "{info:?}");
        eprintln!("bootstrap relay stats: {:?}", info.relayed);
        js.quit().await;
        boot.destroy().await;
    })
    .await;
}

/// (c) Our node joins a JS testnet; JS finds our signed announce, we find the JS announce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_node_in_js_testnet() {
    bounded(async {
        let mut js = Agent::spawn().await;
        let tn = js.call(json!({"cmd":"testnet","size":5}), STEP).await;
        let b: SocketAddrV4 = tn["bootstrap"].as_str().unwrap().parse().unwrap();
        let client = js.call(json!({"cmd":"node","bootstrap":[b.to_string()]}), STEP).await["node"].clone();

        let node = DhtNode::bind(DhtConfig::new(LOCAL, vec![b])).await.unwrap();
        node.bootstrapped().await.unwrap();
        let info = node.info().await.unwrap();
        assert!(info.table_len >= 3, "routing table too small: {info:?}");
        assert!(!info.firewalled, "loopback node should pass the firewall test: {info:?}");

        let kp = KeyPair::from_seed([7u8; 32]);
        let t = topic("interop-c");
        let started = Instant::now();
        let accepted = node.announce(t, &kp, vec![]).await.unwrap();
        eprintln!("rust announce into JS testnet: {:?}, {accepted} nodes", started.elapsed());
        assert!(accepted >= 3, "only {accepted} JS nodes accepted our announce");
        let found = js.call(json!({"cmd":"lookup","node":client,"topic":hex::encode(t)}), STEP).await;
        assert!(
            found["peers"].as_array().unwrap().iter().any(|p| p == &json!(kp.public_key().to_hex())),
            "JS lookup did not find our announce: {found}"
        );

        let t2 = topic("interop-c-js");
        js.call(json!({"cmd":"announce","node":client,"topic":hex::encode(t2),"seed":hex::encode([8u8; 32])}), STEP).await;
        let started = Instant::now();
        let res = node.lookup(t2).await.unwrap();
        eprintln!("rust lookup in JS testnet: {:?}", started.elapsed());
        let want = *KeyPair::from_seed([8u8; 32]).public_key().as_bytes();
        assert!(res.iter().any(|r| r.peers.iter().any(|p| p.public_key == want)), "{res:?}");

        // Unannounce removes our record.
        node.unannounce(t, &kp).await.unwrap();
        let found = js.call(json!({"cmd":"lookup","node":client,"topic":hex::encode(t)}), STEP).await;
        assert!(
            !found["peers"].as_array().unwrap().iter().any(|p| p == &json!(kp.public_key().to_hex())),
            "record still present after unannounce: {found}"
        );
        node.destroy().await;
        js.quit().await;
    })
    .await;
}

/// (d) A mixed network: our bootstrap, three persistent Rust nodes, a JS testnet of three
/// persistent nodes bootstrapped off ours; JS and Rust clients announce and look up across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_rust_and_js_network() {
    bounded(async {
        let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
        let mut rust = Vec::new();
        for _ in 0..3 {
            let mut cfg = DhtConfig::new(LOCAL, vec![boot.addr()]);
            cfg.ephemeral = false;
            let n = DhtNode::bind(cfg).await.unwrap();
            n.bootstrapped().await.unwrap();
            rust.push(n);
        }
        for n in &rust {
            let info = n.info().await.unwrap();
            assert!(info.id.is_some() && !info.firewalled, "rust node not persistent: {info:?}");
        }
        let mut js = Agent::spawn().await;
        let b = boot.addr().to_string();
        js.call(json!({"cmd":"testnet","size":3,"bootstrap":[b]}), STEP).await;
        let c0 = js.call(json!({"cmd":"node","bootstrap":[b]}), STEP).await["node"].clone();
        let c1 = js.call(json!({"cmd":"node","bootstrap":[b]}), STEP).await["node"].clone();
        let client = DhtNode::bind(DhtConfig::new(LOCAL, vec![boot.addr()])).await.unwrap();
        client.bootstrapped().await.unwrap();

        // JS announces, JS and Rust look up.
        let t = topic("mixed-js");
        js.call(json!({"cmd":"announce","node":c0,"topic":hex::encode(t),"seed":hex::encode([11u8; 32])}), STEP).await;
        let found = js.call(json!({"cmd":"lookup","node":c1,"topic":hex::encode(t)}), STEP).await;
        let want = KeyPair::from_seed([11u8; 32]).public_key();
        assert!(found["peers"].as_array().unwrap().iter().any(|p| p == &json!(want.to_hex())), "{found}");
        let res = client.lookup(t).await.unwrap();
        let holders = res.iter().filter(|r| r.peers.iter().any(|p| p.public_key == *want.as_bytes())).count();
        assert!(holders >= 4, "only {holders} nodes hold the JS record");

        // Rust nodes took part in storage.
        let mut rust_stored = 0;
        for n in &rust {
            rust_stored += n.info().await.unwrap().stored.1;
        }
        assert!(rust_stored >= 1, "no Rust node stored the JS announce");

        // Rust announces, JS looks up; repeated for latency numbers.
        let mut ann = Vec::new();
        let mut look = Vec::new();
        for i in 0..10u8 {
            let kp = KeyPair::from_seed([100 + i; 32]);
            let t = topic(&format!("mixed-rust-{i}"));
            let s = Instant::now();
            assert!(client.announce(t, &kp, vec![]).await.unwrap() >= 4);
            ann.push(s.elapsed());
            let s = Instant::now();
            let res = client.lookup(t).await.unwrap();
            look.push(s.elapsed());
            assert!(res.iter().any(|r| r.peers.iter().any(|p| p.public_key == *kp.public_key().as_bytes())));
            if i == 0 {
                let found = js.call(json!({"cmd":"lookup","node":c1,"topic":hex::encode(t)}), STEP).await;
                assert!(found["peers"].as_array().unwrap().iter().any(|p| p == &json!(kp.public_key().to_hex())), "{found}");
            }
        }
        ann.sort();
        look.sort();
        eprintln!(
            "mixed network (bootstrap + 3 rust + 3 js persistent): announce median {:?}, lookup median {:?}",
            ann[ann.len() / 2],
            look[look.len() / 2]
        );
        client.destroy().await;
        for n in rust {
            n.destroy().await;
        }
        js.quit().await;
        boot.destroy().await;
    })
    .await;
}

/// Mutable and immutable values across JS and Rust through our bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutable_and_immutable_values_interop() {
    bounded(async {
        let boot = Bootstrap::spawn(SocketAddrV4::new(LOCAL, 0)).await.unwrap();
        let b = boot.addr().to_string();
        let mut js = Agent::spawn().await;
        let n0 = js.call(json!({"cmd":"node","bootstrap":[b]}), STEP).await["node"].clone();
        let node = DhtNode::bind(DhtConfig::new(LOCAL, vec![boot.addr()]))
            .await
            .unwrap();
        node.bootstrapped().await.unwrap();

        // JS puts, Rust gets (hash / signature checked).
        let r = js
            .call(
                json!({"cmd":"immutablePut","node":n0,"value":"68656c6c6f"}),
                STEP,
            )
            .await;
        let target: [u8; 32] = hex::decode(r["hash"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            node.immutable_get(target).await.unwrap(),
            Some(b"hello".to_vec())
        );
        let seed = [21u8; 32];
        let pk = *KeyPair::from_seed(seed).public_key().as_bytes();
        js.call(
            json!({"cmd":"mutablePut","node":n0,"seed":hex::encode(seed),"value":"0a0b","seq":3}),
            STEP,
        )
        .await;
        let m = node
            .mutable_get(pk, 0)
            .await
            .unwrap()
            .expect("mutable value");
        assert_eq!((m.seq, m.value), (3, vec![0x0a, 0x0b]));
        assert_eq!(node.mutable_get(pk, 4).await.unwrap(), None);

        // Rust puts, JS gets (JS verifies the signature).
        let t = node.immutable_put(b"from rust".to_vec()).await.unwrap();
        let r = js
            .call(
                json!({"cmd":"immutableGet","node":n0,"hash":hex::encode(t)}),
                STEP,
            )
            .await;
        assert_eq!(r["value"], json!(hex::encode(b"from rust")));
        let kp = KeyPair::from_seed([22u8; 32]);
        node.mutable_put(&kp, 9, b"rust mutable".to_vec())
            .await
            .unwrap();
        let r = js
            .call(
                json!({"cmd":"mutableGet","node":n0,"publicKey":kp.public_key().to_hex()}),
                STEP,
            )
            .await;
        assert_eq!(
            (r["value"].clone(), r["seq"].clone()),
            (json!(hex::encode(b"rust mutable")), json!(9))
        );
        // A lower seq is refused (SEQ_TOO_LOW) by every node.
        assert!(node.mutable_put(&kp, 2, b"older".to_vec()).await.is_err());
        node.destroy().await;
        js.quit().await;
        boot.destroy().await;
    })
    .await;
}
