//! A directory as one transfer vs one transfer per file, with the real `ats-p2p` CLI on
//! loopback (a hub with its DHT bootstrap, one `listen`, and `send` processes).
//!
//! ```text
//! cargo run --release -p benches --bin tree -- [--files 1000] [--big 64MiB] [--per-file-sample 100]
//! ```
//! Generates `--files` small files (1 B–8 KiB, some empty) in nested directories plus one
//! `--big` file, then times (wall clock, process start to exit) one `send DIR` and, for
//! comparison, one `send FILE` per file for the first `--per-file-sample` files (all of them
//! with `--per-file-sample 0`), extrapolated to the whole tree when sampled. Every received byte
//! is checked against the source.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use benches::parse_size;
use clap::Parser;
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use serde_json::Value;

/// Longest wait for one event of the listener.
const EVENT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Parser)]
struct Args {
    /// Small files in the tree.
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// One more, big file (0 for none).
    #[arg(long, default_value = "64MiB")]
    big: String,
    /// Files sent one by one for the comparison (0: all of them).
    #[arg(long, default_value_t = 100)]
    per_file_sample: usize,
    /// The `ats-p2p` binary (default: the release one next to this binary).
    #[arg(long)]
    ats_p2p: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cli = match args.ats_p2p {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .join("ats-p2p"),
    };
    if !cli.exists() {
        bail!(
            "{} is missing: cargo build --release -p ats-p2p-cli",
            cli.display()
        );
    }
    let big = parse_size(&args.big)?;
    let work = tempfile::tempdir()?;
    let src = work.path().join("src").join("tree");
    let files = make_tree(&src, args.files, big)?;
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    println!(
        "tree: {} files, {:.1} MiB",
        files.len(),
        total as f64 / 1048576.0
    );

    let lab = Lab::start(&cli, work.path())?;
    // One directory.
    let started = Instant::now();
    lab.send(&src)?;
    let dir_time = started.elapsed();
    let done = lab.next_complete()?;
    let saved = PathBuf::from(done["file_path"].as_str().context("file_path")?);
    check_tree(&src, &saved)?;
    println!(
        "one `send DIR`:        {:>8.2} s  ({:.0} files/s)",
        dir_time.as_secs_f64(),
        files.len() as f64 / dir_time.as_secs_f64()
    );

    // One send per file.
    let sample = match args.per_file_sample {
        0 => files.len(),
        n => n.min(files.len()),
    };
    let started = Instant::now();
    for (rel, _) in files.iter().take(sample) {
        lab.send(&src.join(rel))?;
        lab.next_complete()?;
    }
    let each = started.elapsed();
    let whole = each.as_secs_f64() * files.len() as f64 / sample as f64;
    println!(
        "one `send` per file:   {:>8.2} s  ({sample} files in {:.2} s{})",
        whole,
        each.as_secs_f64(),
        if sample < files.len() {
            ", extrapolated"
        } else {
            ""
        }
    );
    println!(
        "the directory is {:.0}× faster",
        whole / dir_time.as_secs_f64()
    );
    Ok(())
}

/// Writes the tree; returns (relative path, size) of every file.
fn make_tree(root: &Path, count: usize, big: u64) -> anyhow::Result<Vec<(String, u64)>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut out = Vec::with_capacity(count.saturating_add(1));
    for i in 0..count {
        let rel = format!("d{}/s{}/f{i}.dat", i % 10, (i / 10) % 5);
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        let mut data = vec![
            0u8;
            if i % 20 == 0 {
                0
            } else {
                rng.gen_range(1..8192)
            }
        ];
        rng.fill_bytes(&mut data);
        std::fs::write(&path, &data)?;
        out.push((rel, data.len() as u64));
    }
    if big > 0 {
        let rel = "media/big.bin".to_owned();
        std::fs::create_dir_all(root.join("media"))?;
        let mut data = vec![0u8; usize::try_from(big)?];
        rng.fill_bytes(&mut data);
        std::fs::write(root.join(&rel), &data)?;
        out.push((rel, big));
    }
    Ok(out)
}

/// Every file of `a` has the same bytes under `b`, and `b` holds nothing else.
fn check_tree(a: &Path, b: &Path) -> anyhow::Result<()> {
    fn list(root: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(root)?.to_path_buf();
                    out.insert(rel, std::fs::read(e.path())?);
                }
            }
        }
        Ok(out)
    }
    if list(a)? != list(b)? {
        bail!("{} differs from {}", b.display(), a.display());
    }
    Ok(())
}

/// A hub and one listener, with the listener's events on a channel.
struct Lab {
    cli: PathBuf,
    dir: PathBuf,
    url: String,
    boot: String,
    hub: Child,
    listen: Child,
    events: mpsc::Receiver<Value>,
}

impl Lab {
    fn start(cli: &Path, dir: &Path) -> anyhow::Result<Self> {
        let mut hub = Command::new(cli)
            .args([
                "hub",
                "--listen",
                "127.0.0.1:0",
                "--bootstrap-listen",
                "127.0.0.1:0",
            ])
            .args(["--json", "--db"])
            .arg(dir.join("hub.sqlite"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = BufReader::new(hub.stdout.take().context("hub stdout")?).lines();
        let ready: Value = serde_json::from_str(&lines.next().context("hub exited")??)?;
        let url = ready["ats_url"].as_str().context("ats_url")?.to_owned();
        let boot = ready["bootstrap"].as_str().context("bootstrap")?.to_owned();
        let mut lab = Self {
            cli: cli.to_path_buf(),
            dir: dir.to_path_buf(),
            url,
            boot,
            hub,
            listen: Command::new("true").spawn()?,
            events: mpsc::channel().1,
        };
        let mut listen = lab
            .node("listen", "bench-b")
            .arg("--save-dir")
            .arg(dir.join("save"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        let out = listen.stdout.take().context("listen stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        lab.listen = listen;
        lab.events = rx;
        lab.next_event("listening")?;
        Ok(lab)
    }

    fn node(&self, sub: &str, actor: &str) -> Command {
        let mut c = Command::new(&self.cli);
        // One key per actor for the whole run: the listener remembers the sender's key after
        // its first transfer and would refuse a new one.
        c.args([sub, "--json", "--host", "127.0.0.1", "--key-dir"])
            .arg(self.dir.join(format!("keys-{actor}")))
            .args(["--bootstrap", &self.boot, "--ats-url", &self.url])
            .args(["--actor-id", actor, "--known-keys"])
            .arg(self.dir.join(format!("known-{actor}.json")));
        c
    }

    /// Runs one `send` to the listener; fails unless it exits with success.
    fn send(&self, path: &Path) -> anyhow::Result<()> {
        let status = self
            .node("send", "bench-a")
            .arg(path)
            .args(["--to", "bench-b"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("send {} failed: {status}", path.display());
        }
        Ok(())
    }

    fn next_event(&self, name: &str) -> anyhow::Result<Value> {
        loop {
            let v = self.events.recv_timeout(EVENT_TIMEOUT)?;
            if v["event"] == name {
                return Ok(v);
            }
            if v["event"] == "transfer_failed" {
                bail!("the listener failed a transfer: {v}");
            }
        }
    }

    fn next_complete(&self) -> anyhow::Result<Value> {
        self.next_event("transfer_complete")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in [&mut self.listen, &mut self.hub] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
