//! One transfer with the JavaScript reference (`benches/js/bench.js`: a `@hyperswarm/testnet`
//! and two npm hyperswarm peers, the ats-p2p frame protocol): testnet and sender on side A, the
//! receiver on side B.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use benches::Usage;
use serde_json::Value;
use tokio::process::Command;

use crate::proc::Side;
use crate::report::{Row, Tool};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Installs the reference's npm packages when `node_modules` is missing.
pub(crate) async fn prepare() -> anyhow::Result<()> {
    let js = js_dir();
    if js.join("node_modules").exists() {
        return Ok(());
    }
    eprintln!(
        "installing the JS reference (npm ci --prefix {})",
        js.display()
    );
    let status = Command::new("npm")
        .arg("ci")
        .arg("--prefix")
        .arg(&js)
        .status()
        .await?;
    if !status.success() {
        bail!("npm ci --prefix {} failed", js.display());
    }
    Ok(())
}

/// Bound on one bench.js run (it kills its peers and exits after it): this plus the size at
/// 20 MB/s. npm hyperdht's connections between the namespaces often time out and retry.
const JS_TIMEOUT_BASE_S: u64 = 100;

/// Moves `src` (SHA-256 `hash`) once and checks the bytes the receiver saved.
pub(crate) async fn run(
    (a, b): (&Side, &Side),
    src: &Path,
    size: u64,
    hash: &str,
) -> anyhow::Result<Row> {
    let mut cmd = a.command("node");
    cmd.arg(js_dir().join("bench.js"))
        .arg("--file")
        .arg(src)
        .args(["--host", &a.host.to_string()])
        .args(["--recv-host", &b.host.to_string()])
        .arg("--timeout-s")
        .arg((JS_TIMEOUT_BASE_S + size / 20_000_000).to_string())
        .kill_on_drop(true);
    if let Some(ns) = &b.netns {
        cmd.args(["--recv-netns", ns]);
    }
    let out = cmd.stderr(Stdio::piped()).output().await?;
    let errors = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = errors.lines().rev().take(4).collect();
        bail!("bench.js failed ({}): {tail:?}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("no JSON line from bench.js")?;
    let got = v["receivedSha256"].as_str().unwrap_or("none");
    if got != hash {
        bail!("the JS receiver saved SHA-256 {got}, want {hash}");
    }
    let usage = |s: &Value| Usage {
        max_rss: s["peakRssBytes"].as_u64().unwrap_or(0),
        cpu_s: s["cpuSeconds"].as_f64().unwrap_or(0.0),
    };
    Ok(Row {
        run: 0,
        tool: Tool::Js,
        size,
        conn_s: v["seconds"].as_f64().context("no seconds from bench.js")?,
        whole_ms: v["sendWholeSeconds"]
            .as_f64()
            .context("no sendWholeSeconds from bench.js")?
            * 1e3,
        ticket_ms: None,
        send: usage(&v["sender"]),
        recv: usage(&v["receiver"]),
        latency: None,
        note: v["connectAttempts"].as_u64().filter(|&n| n > 1).map(|n| {
            format!(
                "{n} connection attempts, the sender's first ones timed out (npm hyperdht \
                     6.34); its whole time includes them"
            )
        }),
    })
}
