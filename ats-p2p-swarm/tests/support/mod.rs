//! Shared helpers for the DHT integration tests: the JavaScript agent process.
// Test-only helpers: a panic here is a failed test, not a crash on peer input.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// `interop/js` in the repository.
pub fn js_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js"));
    assert!(
        dir.join("node_modules/hyperdht").exists(),
        "interop/js/node_modules is missing: run `npm ci --prefix interop/js` first"
    );
    dir
}

/// Runs a JS script to completion and parses its stdout as JSON.
pub async fn run_js_json(script: &str) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("node")
            .arg(script)
            .current_dir(js_dir())
            .output(),
    )
    .await
    .expect("node timed out")
    .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A running `dht-agent.js`.
pub struct Agent {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Agent {
    pub async fn spawn() -> Self {
        let mut child = Command::new("node")
            .arg("dht-agent.js")
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Sends one command and waits (bounded) for its answer; panics on an error answer.
    pub async fn call(&mut self, cmd: Value, limit: Duration) -> Value {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("js agent did not answer {cmd} within {limit:?}"))
            .unwrap()
            .expect("js agent exited");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert!(v.get("error").is_none(), "js agent error for {cmd}: {v}");
        v
    }

    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}
