//! A child process whose stdout and stderr lines arrive on a channel, read by two threads: the
//! process handling shared by the namespace lab of the tests (`netlab.rs`) and the benches'
//! namespaces (`benches/src/netns.rs`, which includes this file with `#[path]`).
//!
//! Stderr lines are echoed to this process's stderr (with a label) and queued with a
//! `stderr: ` prefix. Dropping a [`LineChild`] closes its stdin, sends SIGTERM, and kills it
//! after [`TERM_GRACE`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

/// Lines buffered from a child's stdout/stderr before the reader threads wait for the caller.
const LINE_QUEUE: usize = 1024;
/// How long a process gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// Prefix of the queued stderr lines.
pub(crate) const STDERR_PREFIX: &str = "stderr: ";

/// A running child with piped stdin and its output lines on a channel.
#[derive(Debug)]
pub(crate) struct LineChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl LineChild {
    /// Starts `cmd` with piped stdio; its stderr lines are echoed as `[label] line`.
    pub(crate) fn spawn(cmd: &mut Command, label: &str) -> std::io::Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let (tx, rx) = sync_channel(LINE_QUEUE);
        if let Some(out) = child.stdout.take() {
            forward_lines(out, tx.clone(), "", None);
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(err, tx, STDERR_PREFIX, Some(label.to_owned()));
        }
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        })
    }

    /// The OS process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Writes to the process's stdin and flushes.
    pub(crate) fn write_stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.write_all(data).and_then(|()| s.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Closes the process's stdin (EOF).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line (stdout, or `stderr: ...`) within `timeout`.
    pub(crate) fn next_line(&mut self, timeout: Duration) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(timeout)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        self.stdin = None;
        if self.exit_status().is_none() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            if self.wait_exit(TERM_GRACE).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

fn forward_lines(
    pipe: impl std::io::Read + Send + 'static,
    tx: SyncSender<String>,
    prefix: &'static str,
    echo: Option<String>,
) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(label) = &echo {
                eprintln!("[{label}] {line}");
            }
            if tx.send(format!("{prefix}{line}")).is_err() {
                break;
            }
        }
    });
}
