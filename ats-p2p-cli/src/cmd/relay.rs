//! `ats-p2p relay`: a blind relay on its own HyperDHT node, announced on the relay topic so
//! nodes find it without configuration. The hub runs one beside its bootstrap node.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use anyhow::Context as _;
use ats_p2p::swarm::KeyPair;
use ats_p2p::swarm::hyperdht::{DhtConfig, HyperDht};
use ats_p2p::swarm::relay::RelayServer;

use crate::args::{CommonArgs, RelayArgs};
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::signals::{Stop, StopSignals};

/// A running relay and the DHT node it listens on.
#[derive(Debug)]
pub(crate) struct RunningRelay {
    server: RelayServer,
    addr: std::net::SocketAddr,
}

impl RunningRelay {
    /// The relay's public key (what `--relay` pins).
    pub(crate) fn public_key(&self) -> ats_p2p::swarm::PublicKey {
        self.server.public_key()
    }

    /// Stops relaying.
    pub(crate) async fn stop(self) {
        self.server.close().await;
    }
}

/// Starts a relay with a fresh key on `host:port`, joined to the DHT through `bootstrap`.
pub(crate) async fn start(
    host: Ipv4Addr,
    port: u16,
    bootstrap: Vec<SocketAddrV4>,
) -> anyhow::Result<RunningRelay> {
    let mut config = DhtConfig::new(host, bootstrap);
    config.port = port;
    // A relay runs on a reachable host: a full DHT node there also helps peers classify their
    // NATs (each answering node is one sample).
    config.ephemeral = false;
    let dht = Arc::new(
        HyperDht::bind(config)
            .await
            .with_context(|| format!("cannot bind the relay on {host}:{port}"))?,
    );
    dht.ready()
        .await
        .context("the relay's DHT node could not join the DHT")?;
    let addr = dht.local_addr();
    let server = RelayServer::spawn(dht, KeyPair::generate())
        .await
        .context("cannot start the relay")?;
    Ok(RunningRelay { server, addr })
}

/// Runs a relay until Ctrl-C (exit 130) or SIGTERM (exit 0).
pub(crate) async fn run(
    out: &Output,
    common: &CommonArgs,
    args: RelayArgs,
) -> Result<Exit, Failure> {
    let mut stop = StopSignals::install()?;
    let entries: Vec<String> = if common.bootstrap.is_empty() {
        ats_p2p::node::PUBLIC_BOOTSTRAP
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        common.bootstrap.clone()
    };
    let mut bootstrap = Vec::new();
    for entry in &entries {
        let addrs = tokio::net::lookup_host(entry.as_str())
            .await
            .with_context(|| format!("cannot resolve bootstrap node {entry}"))?;
        bootstrap.extend(addrs.filter_map(|a| match a {
            std::net::SocketAddr::V4(v4) => Some(v4),
            std::net::SocketAddr::V6(_) => None,
        }));
    }
    let relay = start(*args.listen.ip(), args.listen.port(), bootstrap)
        .await
        .map_err(|e| Failure::new(Exit::Network, e))?;
    let key = relay.public_key().to_hex();
    if out.is_json() {
        crate::output::say(&format!(
            r#"{{"event":"relay_ready","relay":"{key}","addr":"{}"}}"#,
            relay.addr
        ));
    } else {
        out.result(&format!("blind relay {key} on {}", relay.addr));
        out.note("nodes find it on the DHT, or pin it with --relay KEY; stop with Ctrl-C");
    }
    let stopped = stop.wait().await;
    relay.stop().await;
    Ok(match stopped {
        Stop::Interrupt => Exit::Interrupted,
        Stop::Terminate => Exit::Success,
    })
}
