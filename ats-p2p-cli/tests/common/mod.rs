//! Helpers for tests that run the real `ats-p2p` binary: child processes that are killed when a
//! test fails, line readers with deadlines, and a hub started as a process.
// Not every test file uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;

pub(crate) mod net;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ats-p2p");

/// A command for the binary with a private HOME and XDG directories under `home`, so a test
/// never touches the real user's keys or data, and without environment that changes behaviour.
pub(crate) fn ats_p2p(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("ATS_") {
            c.env_remove(k);
        }
    }
    // To debug a failure: ATS_P2P_TEST_LOG=debug puts the children's logs in the panic message.
    if let Ok(filter) = std::env::var("ATS_P2P_TEST_LOG") {
        c.env("RUST_LOG", filter);
    }
    c
}

/// A running child whose stdout is read line by line on a thread; killed on drop.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Every stdout line read so far.
    pub(crate) seen: Vec<String>,
}

impl Proc {
    /// Starts `cmd` with piped stdout and stderr.
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Self {
            name: name.to_owned(),
            child,
            lines: rx,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// The next stdout line, waiting until `deadline`.
    pub(crate) fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = self.lines.recv_timeout(wait).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Reads JSON lines until one whose `event` is `event`; panics (with what was seen and the
    /// child's stderr) at the deadline or at end of output.
    pub(crate) fn wait_event(&mut self, event: &str, deadline: Instant) -> Value {
        loop {
            let Some(line) = self.next_line(deadline) else {
                let err = self.kill_and_stderr();
                panic!(
                    "{}: no {event:?} event; stdout so far:\n{}\nstderr:\n{err}",
                    self.name,
                    self.seen.join("\n")
                );
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}: stdout line is not JSON ({e}): {line}", self.name));
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Waits for the exit (killing at the deadline), reads the rest of stdout, returns the
    /// status and stderr.
    pub(crate) fn wait_exit(&mut self, deadline: Instant) -> (ExitStatus, String) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                let err = self
                    .stderr
                    .take()
                    .map(|h| h.join().unwrap())
                    .unwrap_or_default();
                return (status, err);
            }
            if Instant::now() > deadline {
                let err = self.kill_and_stderr();
                panic!(
                    "{} did not exit in time; stdout:\n{}\nstderr:\n{err}",
                    self.name,
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`-INT`, `-TERM`).
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub(crate) fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill_and_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failed test shows what every one of its processes said.
        if std::thread::panicking() {
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line);
            }
            let err = self
                .stderr
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            eprintln!(
                "--- {} stdout:\n{}\n--- {} stderr:\n{err}",
                self.name,
                self.seen.join("\n"),
                self.name
            );
        }
    }
}

/// A hub process on loopback with its DHT bootstrap node.
pub(crate) struct HubProc {
    pub(crate) proc: Proc,
    pub(crate) ats_url: String,
    pub(crate) bootstrap: String,
}

/// Starts `ats-p2p hub` on free loopback ports with its database under `dir`.
pub(crate) fn start_hub(dir: &Path, deadline: Instant) -> HubProc {
    start_hub_on(dir, "127.0.0.1:0", "127.0.0.1:0", deadline)
}

/// Starts `ats-p2p hub` with its HTTP API on `listen` and its DHT bootstrap node on
/// `bootstrap_listen` (port 0: a free one), its database `dir/hub.sqlite`.
pub(crate) fn start_hub_on(
    dir: &Path,
    listen: &str,
    bootstrap_listen: &str,
    deadline: Instant,
) -> HubProc {
    let mut cmd = ats_p2p(dir);
    cmd.args([
        "hub",
        "--listen",
        listen,
        "--bootstrap-listen",
        bootstrap_listen,
    ])
    .args(["--json", "--db"])
    .arg(dir.join("hub.sqlite"));
    let mut proc = Proc::spawn("hub", cmd);
    let ready = proc.wait_event("hub_ready", deadline);
    HubProc {
        ats_url: ready["ats_url"].as_str().unwrap().to_owned(),
        bootstrap: ready["bootstrap"].as_str().unwrap().to_owned(),
        proc,
    }
}

/// A fresh directory under `root`.
pub(crate) fn subdir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}
