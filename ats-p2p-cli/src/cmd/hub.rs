//! `ats-p2p hub`: the embedded ATS-compatible server and a DHT bootstrap node.

use anyhow::Context as _;
use ats_p2p::swarm::hyperdht::Bootstrap;
use ats_p2p_signal::AccessToken;
use ats_p2p_signal::hub::{DbLocation, Hub, HubConfig};
use clap::Args;

use crate::args::HubArgs;
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::signals::{Stop, StopSignals};

/// Who may use the hub: its bearer token, or the explicit choice to serve without one.
#[derive(Debug, Args)]
pub(crate) struct HubAccessArgs {
    /// Bearer token every client must send (`Authorization: Bearer <token>`), at least 16
    /// characters. Needed to listen on a non-loopback address.
    #[arg(
        long,
        env = "ATS_P2P_HUB_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<AccessToken>,
    /// Listen on a non-loopback address without a token: only behind a proxy that
    /// authenticates, or on a network of your own (anyone who reaches the port can read and
    /// change every task).
    #[arg(long)]
    pub(crate) insecure_no_token: bool,
}

/// Runs the hub until Ctrl-C (exit 130) or SIGTERM (exit 0).
pub(crate) async fn run(out: &Output, args: HubArgs) -> Result<Exit, Failure> {
    let db = match args.db {
        Some(location) => location,
        None => DbLocation::Sqlite(
            dirs::data_dir()
                .context("no data directory for this user; pass --db PATH")?
                .join("ats-p2p")
                .join("hub.sqlite"),
        ),
    };
    let mut stop = StopSignals::install()?;
    let mut config = HubConfig::new(args.listen, db.clone());
    config.allowed_origins = args.allow_origins;
    config.token = args.access.token;
    config.insecure_no_token = args.access.insecure_no_token;
    let hub = Hub::bind(config)
        .await
        .with_context(|| format!("cannot start the hub (database {db})"))?;
    let bootstrap = if args.no_bootstrap {
        None
    } else {
        match Bootstrap::spawn(args.bootstrap_listen).await {
            Ok(b) => Some(b),
            Err(e) => {
                hub.shutdown().await;
                return Err(anyhow::Error::new(e)
                    .context(format!(
                        "cannot start the DHT bootstrap node on {} (pass --bootstrap-listen \
                         HOST:0 for a free port, or --no-bootstrap)",
                        args.bootstrap_listen
                    ))
                    .into());
            }
        }
    };
    let bootstrap_addr = bootstrap.as_ref().map(|b| b.addr().to_string());
    // The relay beside the bootstrap node: peers behind two randomizing NATs meet through it
    // (found on the DHT's relay topic, or pinned with --relay).
    let relay = match (&bootstrap, args.no_relay) {
        (Some(b), false) => {
            let addr = b.addr();
            match crate::cmd::relay::start(*addr.ip(), 0, vec![addr]).await {
                Ok(r) => Some(r),
                Err(e) => {
                    if let Some(b) = bootstrap {
                        b.destroy().await;
                    }
                    hub.shutdown().await;
                    return Err(e
                        .context("cannot start the relay (or pass --no-relay)")
                        .into());
                }
            }
        }
        _ => None,
    };
    let relay_key = relay.as_ref().map(|r| r.public_key().to_hex());
    if out.is_json() {
        // Written by hand to keep the documented key order (`event` first).
        let url = serde_json::Value::String(hub.url());
        let boot = serde_json::to_string(&bootstrap_addr)?;
        let relay = serde_json::to_string(&relay_key)?;
        crate::output::say(&format!(
            r#"{{"event":"hub_ready","ats_url":{url},"bootstrap":{boot},"relay":{relay}}}"#
        ));
    } else {
        let mut ready = format!("ATS hub listening on {}", hub.url());
        if let Some(addr) = &bootstrap_addr {
            ready.push_str(&format!("\nDHT bootstrap node on {addr}"));
        }
        if let Some(key) = &relay_key {
            ready.push_str(&format!("\nblind relay {key}"));
        }
        out.result(&ready);
        out.note(&format!(
            "database: {}\npoint nodes at it with --ats-url {}{}; stop with Ctrl-C",
            db,
            hub.url(),
            bootstrap_addr
                .as_ref()
                .map(|a| format!(" --bootstrap {a}"))
                .unwrap_or_default()
        ));
    }
    let stopped = stop.wait().await;
    if let Some(r) = relay {
        r.stop().await;
    }
    if let Some(b) = bootstrap {
        b.destroy().await;
    }
    hub.shutdown().await;
    Ok(match stopped {
        Stop::Interrupt => Exit::Interrupted,
        Stop::Terminate => Exit::Success,
    })
}
