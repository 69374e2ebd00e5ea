//! Bench command: announce / lookup latency on a local Rust DHT (loopback only).
//!
//! `cargo run --release -p ats-p2p-swarm --example dht_latency -- [nodes] [rounds]`

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::dht::hash;
use ats_p2p_swarm::hyperdht::{Bootstrap, DhtConfig, DhtNode};

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: usize| v.get(v.len() * q / 100).copied().unwrap_or_default();
    println!(
        "{name}: n={} median={:?} p90={:?} max={:?}",
        v.len(),
        p(50),
        p(90),
        v.last().copied().unwrap_or_default()
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map_or(Ok(10), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(50), |s| s.parse())?;
    let local = Ipv4Addr::LOCALHOST;
    let boot = Bootstrap::spawn(SocketAddrV4::new(local, 0)).await?;
    let mut persistent = Vec::new();
    let t0 = Instant::now();
    for _ in 0..nodes {
        let mut cfg = DhtConfig::new(local, vec![boot.addr()]);
        cfg.ephemeral = false;
        let n = DhtNode::bind(cfg).await?;
        n.bootstrapped().await?;
        persistent.push(n);
    }
    println!(
        "{nodes} persistent nodes bootstrapped in {:?}",
        t0.elapsed()
    );
    let client = DhtNode::bind(DhtConfig::new(local, vec![boot.addr()])).await?;
    let t0 = Instant::now();
    client.bootstrapped().await?;
    println!("ephemeral client bootstrap: {:?}", t0.elapsed());
    let (mut ann, mut look) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let kp = KeyPair::generate();
        let topic = hash(format!("bench-{i}").as_bytes());
        let s = Instant::now();
        client.announce(topic, &kp, vec![]).await?;
        ann.push(s.elapsed());
        let s = Instant::now();
        let r = client.lookup(topic).await?;
        look.push(s.elapsed());
        if !r.iter().any(|x| {
            x.peers
                .iter()
                .any(|p| p.public_key == *kp.public_key().as_bytes())
        }) {
            return Err("lookup missed an announce".into());
        }
    }
    summary("announce", ann);
    summary("lookup", look);
    client.destroy().await;
    for n in persistent {
        n.destroy().await;
    }
    boot.destroy().await;
    Ok(())
}
