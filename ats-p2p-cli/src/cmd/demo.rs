//! `ats-p2p demo`: a hub, a DHT bootstrap node and two nodes on loopback in this process; a
//! generated file goes from `agent-a` to `agent-b`, every step shown. Needs no internet.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use ats_p2p::events::{Direction, Event};
use ats_p2p::hashing::sha256_file_async;
use ats_p2p::identity::KeySource;
use ats_p2p::swarm::hyperdht::Bootstrap;
use ats_p2p::{Incoming, Node, NodeConfig};
use ats_p2p_signal::hub::{Hub, HubConfig};
use futures::StreamExt as _;
use rand::RngCore as _;
use serde_json::json;

use crate::args::DemoArgs;
use crate::exit::{Exit, Failure};
use crate::output::{Output, human_size};
use crate::signals::StopSignals;
use ats_p2p::defaults::CHANNEL as DEFAULT_CHANNEL;

/// The sending node's actor id.
const SENDER: &str = "agent-a";

/// The receiving node's actor id.
const RECEIVER: &str = "agent-b";

/// Bytes generated per write of the demo file.
const GEN_CHUNK: usize = 1024 * 1024;

/// Extra time the whole transfer may take beyond the node timeout (the bytes themselves).
const TRANSFER_GRACE: Duration = Duration::from_secs(120);

/// A demo step for people (`demo: ...`) or a JSON object.
fn step(out: &Output, human: &str, json: serde_json::Value) {
    if out.is_json() {
        out.json_line(&json);
    } else {
        out.result(&format!("demo: {human}"));
    }
}

/// Writes `size` random bytes to `path`, blocking.
fn generate(path: &Path, size: u64) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = rand::thread_rng();
    let mut buf = vec![0u8; GEN_CHUNK];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(GEN_CHUNK, |l| l.min(GEN_CHUNK));
        let chunk = buf.get_mut(..n).unwrap_or_default();
        rng.fill_bytes(chunk);
        file.write_all(chunk)?;
        left = left.saturating_sub(n as u64);
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// A node of the demo: ephemeral key, remembered keys in memory, loopback only.
fn demo_config(
    actor: &str,
    ats_url: &str,
    bootstrap: SocketAddrV4,
    timeout: Duration,
) -> NodeConfig {
    let mut c = NodeConfig::new(actor);
    c.ats_url = ats_url.to_owned();
    c.bootstrap = vec![bootstrap.to_string()];
    c.key_source = KeySource::Ephemeral;
    c.known_keys_path = None;
    c.host = Ipv4Addr::LOCALHOST;
    c.timeout = timeout;
    c
}

/// Runs the demo; exit 0 only when the saved file's SHA-256 equals the source's.
pub(crate) async fn run(out: &mut Output, args: DemoArgs) -> Result<Exit, Failure> {
    let mut stop = StopSignals::install()?;
    let temp;
    let root: PathBuf = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let hub = Hub::bind(HubConfig::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        root.join("hub.sqlite"),
    ))
    .await
    .context("cannot start the hub")?;
    let result = tokio::select! {
        r = with_hub(out, &args, &root, &hub) => r,
        _ = stop.wait() => Err(Failure::new(Exit::Interrupted, anyhow!("interrupted"))),
    };
    hub.shutdown().await;
    result
}

async fn with_hub(
    out: &mut Output,
    args: &DemoArgs,
    root: &Path,
    hub: &Hub,
) -> Result<Exit, Failure> {
    let ats_url = hub.url();
    let boot = Bootstrap::spawn(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot start the DHT bootstrap node")?;
    step(
        out,
        &format!(
            "ATS hub at {ats_url}, DHT bootstrap node at {}",
            boot.addr()
        ),
        json!({"event": "hub_ready", "ats_url": ats_url, "bootstrap": boot.addr().to_string()}),
    );
    let result = with_bootstrap(out, args, root, &ats_url, boot.addr()).await;
    boot.destroy().await;
    result
}

async fn with_bootstrap(
    out: &mut Output,
    args: &DemoArgs,
    root: &Path,
    ats_url: &str,
    boot: SocketAddrV4,
) -> Result<Exit, Failure> {
    let start = |actor: &'static str| async move {
        Node::start(demo_config(actor, ats_url, boot, args.timeout.0))
            .await
            .map_err(|e| {
                Failure::new(
                    Exit::from_kind(e.kind()),
                    anyhow::Error::new(e).context(format!("cannot start node {actor}")),
                )
            })
    };
    let a = start(SENDER).await?;
    let b = match start(RECEIVER).await {
        Ok(b) => b,
        Err(e) => {
            a.destroy().await;
            return Err(e);
        }
    };
    for n in [&a, &b] {
        step(
            out,
            &format!(
                "node {} up, public key {}",
                n.actor_id(),
                n.public_key().to_hex()
            ),
            json!({"event": "node_ready", "transfer_id": null, "actor_id": n.actor_id(),
                   "public_key": n.public_key().to_hex()}),
        );
    }
    let result = transfer(out, args, root, &a, &b).await;
    a.destroy().await;
    b.destroy().await;
    result
}

async fn transfer(
    out: &mut Output,
    args: &DemoArgs,
    root: &Path,
    a: &Node,
    b: &Node,
) -> Result<Exit, Failure> {
    let source = root.join("demo.bin");
    let save_dir = root.join("incoming");
    let size = args.size.as_u64();
    let gen_path = source.clone();
    tokio::task::spawn_blocking(move || generate(&gen_path, size))
        .await
        .context("the file generator did not finish")?
        .with_context(|| format!("cannot write {}", source.display()))?;
    let digest = sha256_file_async(source.clone(), |_, _| {})
        .await
        .context("cannot hash the generated file")?;
    let source_hash = digest.sha256_hex();
    step(
        out,
        &format!(
            "generated {} ({}), sha256 {source_hash}",
            source.display(),
            human_size(size)
        ),
        json!({"event": "file_generated", "transfer_id": null, "file_path": source.display().to_string(),
               "file_size": size, "file_hash": source_hash}),
    );
    let mut inbox = b.watch(DEFAULT_CHANNEL, Some(save_dir.clone()));
    step(
        out,
        &format!(
            "{RECEIVER} watches channel {DEFAULT_CHANNEL:?}, saving to {}",
            save_dir.display()
        ),
        json!({"event": "listening", "transfer_id": null, "actor_id": RECEIVER,
               "channel": DEFAULT_CHANNEL, "save_dir": save_dir.display().to_string()}),
    );

    let out = Mutex::new(out);
    let show = |who: &str, e: &Event| {
        if let Ok(mut o) = out.lock() {
            o.event_from(who, e);
        }
    };
    let sending = a.send(&source, RECEIVER, DEFAULT_CHANNEL, |e| show(SENDER, e));
    let receiving = async {
        while let Some(item) = inbox.next().await {
            match item {
                Incoming::Event(e) => {
                    show(RECEIVER, &e);
                    match &e {
                        Event::TransferStart {
                            direction: Direction::Receive,
                            peer_id,
                            path,
                            ..
                        } => {
                            if let Ok(o) = out.lock()
                                && !o.is_json()
                            {
                                o.result(&format!(
                                    "{RECEIVER}: claimed the offer, accepted with its key, \
                                         connected to {peer_id} over HyperDHT (Noise IK, UDX), \
                                         path {path}"
                                ));
                            }
                        }
                        Event::TransferComplete {
                            direction: Direction::Receive,
                            file_path,
                            ..
                        } => return Ok(PathBuf::from(file_path)),
                        Event::TransferFailed {
                            direction: Direction::Receive,
                            kind,
                            reason,
                            ..
                        } => {
                            return Err(Failure::kind(
                                *kind,
                                anyhow!("{RECEIVER} could not receive: {reason}"),
                            ));
                        }
                        _ => {}
                    }
                }
                Incoming::Offer(p) => {
                    let _ = p.reject("the demo accepts automatically").await;
                }
                other => tracing::debug!(?other, "inbox item not handled"),
            }
        }
        Err(Failure::new(
            Exit::Network,
            anyhow!("the watch on ATS ended"),
        ))
    };
    let bound = args.timeout.0.saturating_add(TRANSFER_GRACE);
    let (sent, received) = tokio::time::timeout(bound, async { tokio::join!(sending, receiving) })
        .await
        .map_err(|_| Failure::new(Exit::TimedOut, anyhow!("the demo transfer took too long")))?;
    let report = sent.map_err(|e| {
        Failure::new(
            Exit::from_kind(e.kind()),
            anyhow::Error::new(e).context("agent-a could not send"),
        )
    })?;
    let saved = received?;
    let Ok(out) = out.into_inner() else {
        return Err(anyhow!("output lock poisoned").into());
    };
    match a.client().get_task(report.task_id).await {
        Ok(task) => step(
            out,
            &format!(
                "ATS task {} is {}, outputs {}",
                task.id,
                task.status.as_str(),
                serde_json::Value::from(task.outputs.clone())
            ),
            json!({"event": "task_status", "transfer_id": report.transfer_id.to_string(), "task_id": task.id,
                   "state": task.status.as_str(), "outputs": task.outputs}),
        ),
        Err(e) => out.warn(&format!("cannot read task {}: {e}", report.task_id)),
    }
    let check = sha256_file_async(saved.clone(), |_, _| {})
        .await
        .with_context(|| format!("cannot hash {}", saved.display()))?;
    let saved_hash = check.sha256_hex();
    let verified = saved_hash == source_hash && check.bytes == size;
    step(
        out,
        &if verified {
            format!(
                "verified: {} has the source's SHA-256 {saved_hash}",
                saved.display()
            )
        } else {
            format!("MISMATCH: {} has SHA-256 {saved_hash}", saved.display())
        },
        json!({"event": "demo_complete", "transfer_id": report.transfer_id.to_string(), "verified": verified,
               "saved_path": saved.display().to_string(), "file_hash": saved_hash,
               "source_hash": source_hash}),
    );
    if verified {
        Ok(Exit::Success)
    } else {
        Err(Failure::new(
            Exit::Verification,
            anyhow!("the saved file differs from the source"),
        ))
    }
}
