//! Pipes stdin to the first peer found on a topic and that peer's data to stdout.
//!
//! ```text
//! cargo run -p ats-p2p-swarm --example pipe -- --bootstrap 127.0.0.1:49737 --topic <64 hex> --server
//! cargo run -p ats-p2p-swarm --example pipe -- --bootstrap 127.0.0.1:49737 --topic <64 hex> --client
//! ```
//! Interoperates with JS `hyperswarm` peers joined on the same 32-byte topic.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ats_p2p_swarm::PublicKey;
use ats_p2p_swarm::hyperdht::RelayMode;
use ats_p2p_swarm::swarm::{JoinMode, Swarm, SwarmConfig};
use clap::Parser;
use tokio::io::{AsyncWriteExt, copy, split, stdin, stdout};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// DHT bootstrap node (repeatable).
    #[arg(long, required = true)]
    bootstrap: Vec<SocketAddrV4>,
    /// Topic, 64 hex characters (32 bytes).
    #[arg(long)]
    topic: String,
    /// Announce and accept.
    #[arg(long, conflicts_with = "client")]
    server: bool,
    /// Look up and connect.
    #[arg(long)]
    client: bool,
    /// Host to bind (all interfaces by default, so peers on the LAN and behind NATs reach us).
    #[arg(long, default_value = "0.0.0.0")]
    host: Ipv4Addr,
    /// Relay through this blind relay (64 hex) when no direct or holepunched path exists
    /// [default: a relay announced on the DHT].
    #[arg(long, conflicts_with = "no_relay")]
    relay: Option<String>,
    /// Never relay.
    #[arg(long)]
    no_relay: bool,
    /// Key pair seed, 64 hex characters (default: ephemeral).
    #[arg(long)]
    seed: Option<String>,
}

/// How long to wait for the first peer before giving up.
const FIRST_PEER_TIMEOUT: Duration = Duration::from_secs(300);

fn hex32(s: &str) -> Result<[u8; 32], String> {
    let v = hex::decode(s).map_err(|e| e.to_string())?;
    v.try_into()
        .map_err(|_| "expected 32 bytes (64 hex characters)".to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipe: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if !args.server && !args.client {
        return Err("pass --server or --client".into());
    }
    let topic = hex32(&args.topic)?;
    let mut cfg = SwarmConfig::new(args.host, args.bootstrap);
    cfg.seed = args.seed.as_deref().map(hex32).transpose()?;
    cfg.relay = match (&args.relay, args.no_relay) {
        (_, true) => RelayMode::Disabled,
        (Some(k), false) => RelayMode::Pinned(PublicKey::from_bytes(hex32(k)?)),
        (None, false) => RelayMode::Auto,
    };
    let started = std::time::Instant::now();
    let mut swarm = Swarm::new(cfg).await?;
    eprintln!("pipe: public key {}", swarm.public_key().to_hex());
    let mode = if args.server {
        JoinMode::SERVER
    } else {
        JoinMode::CLIENT
    };
    swarm.join(topic, mode).await?;
    eprintln!("pipe: joined, waiting for a peer");
    let conn = tokio::time::timeout(FIRST_PEER_TIMEOUT, swarm.next_connection())
        .await
        .map_err(|_| "no peer within the timeout")?
        .ok_or("swarm closed")?;
    eprintln!(
        "pipe: connected to {} after {} ms via {}",
        conn.remote_public_key().to_hex(),
        started.elapsed().as_millis(),
        conn.path()
    );
    let (mut r, mut w) = split(conn);
    let up = async {
        copy(&mut stdin(), &mut w).await?;
        w.shutdown().await
    };
    let down = async {
        let mut out = stdout();
        copy(&mut r, &mut out).await?;
        out.flush().await
    };
    let (a, b) = tokio::join!(up, down);
    a?;
    b?;
    drop((r, w));
    swarm.destroy().await;
    Ok(())
}
