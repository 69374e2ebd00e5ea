//! One transfer with sendme (iroh-blobs over QUIC): `sendme send` on side A prints a ticket,
//! `sendme receive <ticket>` on side B fetches the file into its store, verifying BLAKE3 as it
//! streams, then copies it out into its working directory. Both without relays (`--relay
//! disabled`) and with the sender's direct addresses in the ticket (`--ticket-type addresses`),
//! so nothing needs the internet; each binds the side's address (`--magic-ipv4-addr`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::proc::{Line, Proc, Side, Stream};
use crate::report::{Row, Tool};

/// Longest wait for the ticket, and for the receiver to connect.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `sendme` on PATH, or why not.
pub(crate) fn locate() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").ok_or("PATH is not set")?;
    std::env::split_paths(&path)
        .map(|d| d.join("sendme"))
        .find(|p| p.is_file())
        .ok_or_else(|| "not on PATH (`cargo install sendme --locked`)".to_owned())
}

/// `sendme --version`, for the table's notes.
pub(crate) fn version(sendme: &Path) -> String {
    std::process::Command::new(sendme)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("unknown version ({e})"))
}

/// Reads `proc`'s lines until one that `pred` accepts, within `STEP_TIMEOUT`; the error carries
/// the last lines seen (why sendme could not go on).
async fn expect(proc: &mut Proc, what: &str, pred: impl Fn(&Line) -> bool) -> anyhow::Result<Line> {
    let mut tail: Vec<String> = Vec::new();
    let found = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(line) = proc.next_line().await {
            if pred(&line) {
                return Some(line);
            }
            tail.push(line.text);
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => Ok(line),
        Ok(None) => bail!("sendme ended before {what}; last lines: {tail:?}"),
        Err(_) => bail!("no {what} within {STEP_TIMEOUT:?}; last lines: {tail:?}"),
    }
}

/// `sendme send` on `a`, `sendme receive` on `b`; `src` (SHA-256 `hash`) moves once.
pub(crate) async fn run(
    sendme: &Path,
    dir: &Path,
    (a, b): (&Side, &Side),
    src: &Path,
    size: u64,
    hash: &str,
) -> anyhow::Result<Row> {
    // sendme keeps its stores in the working directory: one fresh directory per side.
    let send_dir = dir.join("sendme-send");
    let recv_dir = dir.join("sendme-recv");
    for d in [&send_dir, &recv_dir] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d)?;
    }
    let common = |side: &Side| {
        [
            "--relay".to_owned(),
            "disabled".to_owned(),
            "--no-progress".to_owned(),
            "--magic-ipv4-addr".to_owned(),
            format!("{}:0", side.host),
        ]
    };
    let mut sc = a.wrapped(sendme)?;
    sc.arg("send")
        .arg(src)
        .args(["--ticket-type", "addresses"])
        .args(common(a))
        .current_dir(&send_dir);
    let send_spawned = Instant::now();
    let mut tx = Proc::spawn("sendme send", sc)?;
    let ticket_line = expect(&mut tx, "a ticket", |l| {
        l.stream == Stream::Out && l.text.starts_with("sendme receive ")
    })
    .await?;
    let ticket = ticket_line
        .text
        .split_whitespace()
        .nth(2)
        .context("no ticket after `sendme receive`")?
        .to_owned();

    let mut rc = b.wrapped(sendme)?;
    rc.args(["receive", &ticket])
        .args(common(b))
        .current_dir(&recv_dir);
    let recv_spawned = Instant::now();
    let mut rx = Proc::spawn("sendme receive", rc)?;
    let received = async {
        let connected = expect(&mut rx, "a connection", |l| {
            l.text.starts_with("getting collection")
        })
        .await?;
        let data_done = expect(&mut rx, "the end of the data", |l| {
            l.text.starts_with("exporting to")
        })
        .await?;
        let (recv_usage, exited) = rx.finish().await?;
        anyhow::Ok((connected.at, data_done.at, exited, recv_usage))
    }
    .await;
    // Stop the sender (it serves until Ctrl-C) whether or not the receive worked.
    tx.interrupt()?;
    let (send_usage, _) = tx.finish().await?;
    let (t_conn, t_data, t_exit, recv_usage) = received?;

    let name = src.file_name().context("source has no file name")?;
    let path = recv_dir.join(name);
    crate::verify(&path, hash)?;
    for d in [&send_dir, &recv_dir] {
        std::fs::remove_dir_all(d)?;
    }
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    Ok(Row {
        run: 0,
        tool: Tool::Sendme,
        size,
        conn_s: t_data.saturating_duration_since(t_conn).as_secs_f64(),
        whole_ms: ms(recv_spawned, t_exit),
        ticket_ms: Some(ms(send_spawned, ticket_line.at)),
        send: send_usage,
        recv: recv_usage,
        latency: None,
        note: None,
    })
}
