//! One transfer with the real product: `ats-p2p hub` (ATS server + HyperDHT bootstrap) and
//! `send` on side A, `listen --once` on side B, each its own process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::proc::{Proc, Side};
use crate::report::{Latency, Row, Tool};

/// Longest wait for a ready line (hub, listener).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds (or builds) the release `ats-p2p` binary.
pub(crate) fn locate_cli(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    let cli = dir.join("ats-p2p");
    if !cli.exists() {
        eprintln!("building the release CLI (cargo build --release -p ats-p2p-cli)");
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "--release", "-p", "ats-p2p-cli"])
            .status()?;
        if !status.success() || !cli.exists() {
            bail!("could not build {}", cli.display());
        }
    }
    Ok(cli)
}

/// Hub and sender on `a`, receiver on `b`; `src` (SHA-256 `hash`) moves once.
pub(crate) async fn run(
    cli: &Path,
    dir: &Path,
    (a, b): (&Side, &Side),
    src: &Path,
    size: u64,
    hash: &str,
) -> anyhow::Result<Row> {
    let hub_db = dir.join("hub.sqlite");
    let _ = std::fs::remove_file(&hub_db);
    let mut hub_cmd = a.command(cli);
    let any_port = format!("{}:0", a.host);
    hub_cmd
        .args([
            "hub",
            "--listen",
            &any_port,
            "--bootstrap-listen",
            &any_port,
        ])
        .args(["--json", "--db"])
        .arg(&hub_db);
    if !a.host.is_loopback() {
        // The namespaces are this bench's own network.
        hub_cmd.arg("--insecure-no-token");
    }
    let mut hub = Proc::spawn("hub", hub_cmd)?;
    let (_, ready) = tokio::time::timeout(READY_TIMEOUT, hub.wait_event("hub_ready"))
        .await
        .context("hub not ready")??;
    let url = ready["ats_url"].as_str().context("ats_url")?.to_owned();
    let boot = ready["bootstrap"].as_str().context("bootstrap")?.to_owned();

    // Ephemeral keys change every run: start each run without remembered keys, and without
    // the sender's pre-hash cache (beside them): every run sends a file never sent before, so
    // every `send` hashes it (spawn→offer).
    for actor in ["bench-a", "bench-b"] {
        let _ = std::fs::remove_file(dir.join(format!("known-{actor}.json")));
    }
    let _ = std::fs::remove_file(dir.join(ats_p2p::hash_cache::CACHE_FILE_NAME));
    let save = dir.join("save");
    std::fs::create_dir_all(&save)?;
    let node = |side: &Side, sub: &str, actor: &str| -> anyhow::Result<tokio::process::Command> {
        let mut c = side.wrapped(cli)?;
        c.args([
            sub,
            "--json",
            "--host",
            &side.host.to_string(),
            "--ephemeral",
        ])
        .args(["--bootstrap", &boot, "--ats-url", &url, "--actor-id", actor])
        .arg("--known-keys")
        .arg(dir.join(format!("known-{actor}.json")));
        Ok(c)
    };
    let mut lc = node(b, "listen", "bench-b")?;
    lc.arg("--once").arg("--save-dir").arg(&save);
    let mut rx = Proc::spawn("listen", lc)?;
    tokio::time::timeout(READY_TIMEOUT, rx.wait_event("listening"))
        .await
        .context("listener not ready")??;

    let mut sc = node(a, "send", "bench-a")?;
    sc.arg(src).args(["--to", "bench-b"]);
    let spawned = Instant::now();
    let mut tx = Proc::spawn("send", sc)?;
    let (t_offer, _) = tx.wait_event("offer_sent").await?;
    let (t_ack, _) = tx.wait_event("transfer_complete").await?;
    let (_, done) = rx.wait_event("transfer_complete").await?;
    let (send_usage, t_exit) = tx.finish().await?;
    let (recv_usage, _) = rx.finish().await?;
    drop(hub);

    let t_file = rx
        .first("file", |_| true)
        .context("no file event from the receiver")?;
    let t_start = rx
        .first("transfer_start", |_| true)
        .context("no transfer_start from the receiver")?;
    // `file_path` is where the file was saved (`path` is the connection's path).
    let path = done["file_path"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| save.join(src.file_name().unwrap_or_default()));
    crate::verify(&path, hash)?;
    std::fs::remove_file(&path)?;
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let latency = Latency {
        total: ms(spawned, t_exit),
        spawn_offer: ms(spawned, t_offer),
        offer_file: ms(t_offer, t_file),
        file_start: ms(t_file, t_start),
        start_ack: ms(t_start, t_ack),
        ack_exit: ms(t_ack, t_exit),
    };
    Ok(Row {
        run: 0,
        tool: Tool::Ours,
        size,
        conn_s: t_ack.saturating_duration_since(t_start).as_secs_f64(),
        whole_ms: latency.total,
        ticket_ms: None,
        send: send_usage,
        recv: recv_usage,
        latency: Some(latency),
        note: None,
    })
}
