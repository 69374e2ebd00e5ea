//! Child processes of the benchmark: where they run (a network namespace, the address their
//! sockets bind), the `__wrap` process that measures one CLI process's peak RSS and CPU, and
//! their output lines, timestamped as they arrive.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, bail};
use benches::{Usage, children_usage};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Wrapper mode: `e2e __wrap <program> <args>...`.
pub(crate) const WRAP: &str = "__wrap";

/// Where one side's processes run.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    /// The network namespace (`ip netns exec`), `None`: this process's.
    pub(crate) netns: Option<String>,
    /// The local IPv4 address the side's sockets bind.
    pub(crate) host: Ipv4Addr,
}

impl Side {
    pub(crate) fn loopback() -> Self {
        Self {
            netns: None,
            host: Ipv4Addr::LOCALHOST,
        }
    }

    /// `program` run in this side's namespace.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// `program` run in this side's namespace under the `__wrap` process (its usage line).
    pub(crate) fn wrapped(&self, program: &Path) -> anyhow::Result<Command> {
        let mut c = self.command(std::env::current_exe()?);
        c.arg(WRAP).arg(program);
        Ok(c)
    }
}

/// Runs the command with this process's stdio, prints its pid (`__child`, so the bench can
/// signal it), waits for it, then prints its resource usage as one JSON line on stdout
/// (`__usage`) and exits with its status.
pub(crate) fn wrap(cmd: &[String]) -> anyhow::Result<()> {
    let (prog, rest) = cmd.split_first().context("__wrap needs a command")?;
    let mut child = std::process::Command::new(prog).args(rest).spawn()?;
    println!("{}", json!({"event": "__child", "pid": child.id()}));
    let status = child.wait()?;
    let u = children_usage();
    println!(
        "{}",
        json!({"event": "__usage", "max_rss": u.max_rss, "cpu_s": u.cpu_s, "code": status.code()})
    );
    std::process::exit(status.code().unwrap_or(1));
}

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Out,
    Err,
}

/// One output line and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) at: Instant,
    pub(crate) stream: Stream,
    pub(crate) text: String,
}

/// A child process whose stdout and stderr lines arrive timestamped.
pub(crate) struct Proc {
    name: &'static str,
    child: Child,
    /// Unbounded: a child whose lines nobody reads for a while (the hub after it is ready)
    /// must never block on a full pipe; the bench's children print a few hundred lines a run.
    lines: mpsc::UnboundedReceiver<Line>,
    /// Every JSON line of stdout so far.
    seen: Vec<(Instant, Value)>,
    /// The wrapped program's pid (the wrapper's `__child` line).
    child_pid: Option<i32>,
    /// The output ended and the process was waited for.
    finished: bool,
}

fn verbose() -> bool {
    std::env::var_os("E2E_VERBOSE").is_some()
}

impl Proc {
    pub(crate) fn spawn(name: &'static str, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        for (stream, reader) in [
            (
                Stream::Out,
                Box::new(out) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            ),
            (Stream::Err, Box::new(err)),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(reader).lines();
                while let Ok(Some(text)) = r.next_line().await {
                    let line = Line {
                        at: Instant::now(),
                        stream,
                        text,
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            name,
            child,
            lines,
            seen: Vec::new(),
            child_pid: None,
            finished: false,
        })
    }

    /// The next output line (stdout or stderr); `None` at the end of both.
    pub(crate) async fn next_line(&mut self) -> Option<Line> {
        let line = self.lines.recv().await?;
        if verbose() {
            eprintln!("[{}] {}", self.name, line.text);
        }
        if line.stream == Stream::Out
            && let Ok(v) = serde_json::from_str::<Value>(&line.text)
        {
            if v["event"] == "__child" {
                self.child_pid = v["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
            }
            self.seen.push((line.at, v));
        }
        Some(line)
    }

    /// The next JSON line of stdout (other lines are skipped); `None` at the end of the output.
    pub(crate) async fn next(&mut self) -> Option<(Instant, Value)> {
        let mut seen = self.seen.len();
        while self.next_line().await.is_some() {
            if self.seen.len() > seen {
                return self.seen.last().cloned();
            }
            seen = self.seen.len();
        }
        None
    }

    /// Reads until an event named `event`; fails on `transfer_failed` or the end of output.
    pub(crate) async fn wait_event(&mut self, event: &str) -> anyhow::Result<(Instant, Value)> {
        loop {
            let Some((t, v)) = self.next().await else {
                bail!("{} ended before {event}", self.name);
            };
            if v["event"] == event {
                return Ok((t, v));
            }
            if v["event"] == "transfer_failed" {
                bail!("{} failed: {v}", self.name);
            }
        }
    }

    /// Sends SIGINT to the wrapped program (as Ctrl-C would).
    pub(crate) fn interrupt(&self) -> anyhow::Result<()> {
        let pid = self
            .child_pid
            .with_context(|| format!("{}: no __child line yet", self.name))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .with_context(|| format!("SIGINT to {}", self.name))
    }

    /// Reads to the end of the output and returns the wrapper's usage line and when it came
    /// (as soon as the program exited).
    pub(crate) async fn finish(&mut self) -> anyhow::Result<(Usage, Instant)> {
        let mut usage = None;
        while let Some((t, v)) = self.next().await {
            if v["event"] == "__usage" {
                usage = Some((
                    Usage {
                        max_rss: v["max_rss"].as_u64().unwrap_or(0),
                        cpu_s: v["cpu_s"].as_f64().unwrap_or(0.0),
                    },
                    t,
                ));
            }
        }
        let status = self.child.wait().await?;
        self.finished = true;
        if !status.success() {
            bail!("{} exited with {status}", self.name);
        }
        usage.with_context(|| format!("{}: no usage line", self.name))
    }

    /// Kills the wrapped program of a run that did not finish (killing the wrapper, on drop,
    /// would leave it running).
    fn kill_program(&self) {
        if let (false, Some(pid)) = (self.finished, self.child_pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// When the first stdout JSON event named `event` that `pred` accepts arrived.
    pub(crate) fn first(&self, event: &str, pred: impl Fn(&Value) -> bool) -> Option<Instant> {
        self.seen
            .iter()
            .find(|(_, v)| v["event"] == event && pred(v))
            .map(|(t, _)| *t)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_program();
    }
}
