//! `ats-p2p mcp` as an MCP client sees it: real server processes (alice, bob) spoken to over
//! their stdio with rmcp's client, on a real hub and DHT on loopback.
//!
//! With `ATS_P2P_MCP_TRANSCRIPT=<file>`, the two-server test writes the JSON-RPC messages it
//! exchanged (trimmed) to that file as Markdown.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{HubProc, ats_p2p, start_hub, subdir};
use rand::RngCore as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ProgressNotificationParam, ProgressToken,
    Request, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Bound on each test (each runs its own hub and servers).
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// One JSON-RPC line as it crossed a server's stdio.
#[derive(Debug, Clone)]
struct Logged {
    server: String,
    to_server: bool,
    line: String,
}

/// The lines both servers exchanged, in order.
type Log = Arc<Mutex<Vec<Logged>>>;

/// Records each complete line that passes through (client→server or server→client).
struct Tee<T> {
    inner: T,
    server: String,
    to_server: bool,
    partial: Vec<u8>,
    log: Log,
}

impl<T> Tee<T> {
    fn new(inner: T, server: &str, to_server: bool, log: &Log) -> Self {
        Self {
            inner,
            server: server.to_owned(),
            to_server,
            partial: Vec::new(),
            log: log.clone(),
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.log.lock().unwrap().push(Logged {
                server: self.server.clone(),
                to_server: self.to_server,
                line: String::from_utf8_lossy(&line).trim_end().to_owned(),
            });
        }
    }
}

impl AsyncRead for Tee<ChildStdout> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = buf.filled()[before..].to_vec();
            self.saw(&new);
        }
        polled
    }
}

impl AsyncWrite for Tee<ChildStdin> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.saw(&data[..n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The test's MCP client: keeps the progress notifications it receives.
#[derive(Debug, Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

/// A hub, a private HOME, and the log of what the servers said.
struct Net {
    dir: tempfile::TempDir,
    hub: HubProc,
    log: Log,
}

impl Net {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let deadline = std::time::Instant::now() + TEST_TIMEOUT;
        let hub = start_hub(dir.path(), deadline);
        Self {
            dir,
            hub,
            log: Log::default(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `ats-p2p mcp` as `actor` with `extra` flags and connects a client to it.
    async fn server(&self, actor: &str, extra: &[&str]) -> Server {
        let save_dir = self.path().join(format!("{actor}-incoming"));
        let mut cmd = ats_p2p(self.path());
        cmd.args(["mcp", "--host", "127.0.0.1", "--ephemeral"])
            .args(["--bootstrap", &self.hub.bootstrap])
            .args(["--ats-url", &self.hub.ats_url])
            .args(["--actor-id", actor, "--timeout", "30000", "--known-keys"])
            .arg(self.path().join(format!("{actor}-known-keys")))
            .arg("--save-dir")
            .arg(&save_dir)
            .args(extra);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdout = Tee::new(child.stdout.take().unwrap(), actor, false, &self.log);
        let stdin = Tee::new(child.stdin.take().unwrap(), actor, true, &self.log);
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut buf).await;
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf));
            });
        }
        let recorder = Recorder::default();
        let client = recorder.clone().serve((stdout, stdin)).await.unwrap();
        Server {
            name: actor.to_owned(),
            client,
            recorder,
            child,
            stderr,
            save_dir,
        }
    }
}

/// A running `ats-p2p mcp` and the client connected to it.
struct Server {
    name: String,
    client: RunningService<RoleClient, Recorder>,
    recorder: Recorder,
    child: Child,
    stderr: Arc<Mutex<String>>,
    save_dir: PathBuf,
}

/// A tool's answer and the progress notifications sent for its call.
struct Answer {
    result: CallToolResult,
    progress: Vec<ProgressNotificationParam>,
}

impl Answer {
    /// The structured result of a call that succeeded.
    fn ok(&self) -> Value {
        assert_eq!(self.result.is_error, Some(false), "{:?}", self.result);
        self.result.structured_content.clone().unwrap()
    }

    /// The structured error of a call that failed.
    fn err(&self) -> Value {
        assert_eq!(self.result.is_error, Some(true), "{:?}", self.result);
        self.result.structured_content.clone().unwrap()
    }
}

impl Server {
    /// Calls `tool` with `args` (an object, or raw JSON for malformed calls).
    async fn call(&self, tool: &'static str, args: Value) -> Answer {
        let mut params = CallToolRequestParams::new(tool);
        if let Value::Object(map) = args {
            params = params.with_arguments(map);
        }
        let handle = self
            .client
            .send_cancellable_request(
                ClientRequest::CallToolRequest(Request::new(params)),
                PeerRequestOptions::no_options(),
            )
            .await
            .unwrap();
        let token: ProgressToken = handle.progress_token.clone();
        let response = handle.await_response().await;
        let result = match response {
            Ok(ServerResult::CallToolResult(r)) => r,
            other => panic!(
                "{}: {tool} answered {other:?}; stderr:\n{}",
                self.name,
                self.stderr.lock().unwrap()
            ),
        };
        let progress = self
            .recorder
            .progress
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.progress_token == token)
            .cloned()
            .collect();
        Answer { result, progress }
    }

    /// Polls `list_offers` until one offer waits; returns it.
    async fn wait_offer(&self) -> Value {
        loop {
            let v = self.call("list_offers", json!({})).await.ok();
            if let Some(o) = v["offers"].as_array().and_then(|o| o.first()) {
                return o.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `list_transfers` until `transfer_id` is in `state`; returns its record.
    async fn wait_transfer(&self, transfer_id: &str, state: &str) -> Value {
        loop {
            let v = self.call("list_transfers", json!({})).await.ok();
            let found = v["transfers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["transfer_id"] == transfer_id)
                .cloned();
            if let Some(t) = found.filter(|t| t["state"] == state) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session (closing stdin) and waits for a clean exit.
    async fn close(mut self) {
        let _ = self.client.cancel().await;
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the server exits once its client is gone")
            .unwrap();
        assert!(
            status.success(),
            "{}: {status}; stderr:\n{}",
            self.name,
            self.stderr.lock().unwrap()
        );
    }
}

fn random_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    p
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn files_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs `f` within [`TEST_TIMEOUT`].
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("the test finished in time");
}

/// Shortens a line for the transcript: the tool list becomes the tools' names, a result's text
/// copy of its structured content is left out, and anything still long is cut.
fn trimmed(line: &str) -> String {
    const MAX: usize = 900;
    let Ok(mut v) = serde_json::from_str::<Value>(line) else {
        return line.chars().take(MAX).collect();
    };
    if let Some(tools) = v["result"]["tools"].as_array() {
        let names: Vec<Value> = tools.iter().map(|t| t["name"].clone()).collect();
        v["result"]["tools"] = json!(format!(
            "[{} tools, schemas trimmed: {}]",
            names.len(),
            names
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if v["result"]["structuredContent"].is_object() {
        v["result"]["content"] = json!("[text copy of structuredContent]");
    }
    if v["result"]["instructions"].is_string() {
        v["result"]["instructions"] = json!("[trimmed]");
    }
    let s = v.to_string();
    if s.len() <= MAX {
        s
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}… ({} bytes)", s.len())
    }
}

/// Writes the log as Markdown to `$ATS_P2P_MCP_TRANSCRIPT`, if set.
fn write_transcript(log: &Log) {
    let Ok(path) = std::env::var("ATS_P2P_MCP_TRANSCRIPT") else {
        return;
    };
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(
        f,
        "# `ats-p2p mcp` transcript: two servers (alice, bob) on a local hub\n\n\
         JSON-RPC lines as they crossed each server's stdio (`→` client to server, `←` server \
         to client), in order; `tools/list` schemas and long values trimmed.\n"
    )
    .unwrap();
    for l in log.lock().unwrap().iter() {
        let arrow = if l.to_server { "→" } else { "←" };
        writeln!(f, "{arrow} **{}** `{}`\n", l.server, trimmed(&l.line)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_whoami_send_list_accept_reject() {
    let net = Net::start();
    bounded(async {
        let src = subdir(net.path(), "src");
        let file = random_file(&src, "report.bin", 256 * 1024);
        let alice = net.server("alice", &[]).await;
        let bob = net.server("bob", &[]).await;

        let tools = alice.client.list_all_tools().await.unwrap();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept_offer",
                "list_offers",
                "list_transfers",
                "reject_offer",
                "send_file",
                "transfer_status",
                "whoami"
            ]
        );
        for t in &tools {
            assert!(
                t.description.as_ref().is_some_and(|d| d.len() > 40),
                "{t:?}"
            );
            assert!(t.output_schema.is_some(), "{t:?}");
        }

        let a = alice.call("whoami", json!({})).await.ok();
        let b = bob.call("whoami", json!({})).await.ok();
        assert_eq!(a["actor_id"], "alice");
        assert_eq!(b["actor_id"], "bob");
        assert_eq!(a["public_key"].as_str().unwrap().len(), 64);
        assert_ne!(a["public_key"], b["public_key"]);
        assert_eq!(b["ats_url"], net.hub.ats_url.as_str());

        // alice sends while bob looks at his offers and accepts.
        let path = file.to_str().unwrap().to_owned();
        let sending = alice.call("send_file", json!({"path": path, "to": "bob"}));
        let receiving = async {
            let offer = bob.wait_offer().await;
            assert_eq!(offer["sender_id"], "alice");
            assert_eq!(offer["sender_key"], a["public_key"]);
            assert_eq!(offer["sender_key_status"], "new");
            assert_eq!(offer["file_name"], "report.bin");
            assert_eq!(offer["size"], 256 * 1024);
            assert_eq!(offer["sha256"], sha256_hex(&file));
            let tid = offer["transfer_id"].as_str().unwrap().to_owned();
            let accepted = bob
                .call("accept_offer", json!({"transfer_id": tid}))
                .await
                .ok();
            (tid, accepted)
        };
        let (sent, (tid, accepted)) = tokio::join!(sending, receiving);
        let sent = sent.ok();
        assert_eq!(sent["transfer_id"], tid.as_str());
        assert_eq!(sent["bytes"], 256 * 1024);
        assert_eq!(sent["sha256"], sha256_hex(&file));
        let saved = PathBuf::from(accepted["file_path"].as_str().unwrap());
        assert!(saved.starts_with(bob.save_dir.canonicalize().unwrap()));
        assert_eq!(sha256_hex(&saved), sha256_hex(&file), "verified copy");
        assert_eq!(accepted["sha256"], sha256_hex(&file));

        let status = alice
            .call("transfer_status", json!({"transfer_id": tid}))
            .await
            .ok();
        assert_eq!(status["state"], "completed", "{status}");
        let rec = bob.wait_transfer(&tid, "complete").await;
        assert_eq!(rec["peer_id"], "alice");

        // A second offer, rejected: alice's send_file ends with the rejection and its reason.
        let sending = alice.call("send_file", json!({"path": path, "to": "bob"}));
        let rejecting = async {
            let offer = bob.wait_offer().await;
            assert_eq!(
                offer["sender_key_status"], "known",
                "remembered from the first"
            );
            let tid = offer["transfer_id"].as_str().unwrap().to_owned();
            bob.call(
                "reject_offer",
                json!({"transfer_id": tid, "reason": "not today"}),
            )
            .await
            .ok()
        };
        let (sent, rejected) = tokio::join!(sending, rejecting);
        let err = sent.err();
        assert_eq!(err["code"], "declined", "{err}");
        assert_eq!(err["kind"], "rejected");
        assert!(
            err["message"].as_str().unwrap().contains("not today"),
            "{err}"
        );
        assert_eq!(err["transfer_id"], rejected["transfer_id"]);
        let again = bob
            .call(
                "accept_offer",
                json!({"transfer_id": rejected["transfer_id"]}),
            )
            .await
            .err();
        assert_eq!(again["code"], "unknown_offer");

        alice.close().await;
        bob.close().await;
        assert_eq!(
            files_in(&bob_save_dir(&net)).len(),
            1,
            "only the accepted file"
        );
    })
    .await;
    write_transcript(&net.log);
}

fn bob_save_dir(net: &Net) -> PathBuf {
    net.path().join("bob-incoming")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_miss_and_too_large_end_with_their_codes() {
    let net = Net::start();
    bounded(async {
        let src = subdir(net.path(), "src");
        let small = random_file(&src, "small.txt", 4096);
        let big = random_file(&src, "big.bin", 64 * 1024);
        let alice = net.server("alice", &[]).await;
        let bob = net.server("bob", &["--allow", "carol"]).await;
        let carol = net.server("carol", &["--max-size", "1KiB"]).await;

        let err = alice
            .call("send_file", json!({"path": small, "to": "bob"}))
            .await
            .err();
        assert_eq!(err["kind"], "rejected", "{err}");
        let tid = err["transfer_id"].as_str().unwrap();
        assert!(
            err["message"].as_str().unwrap().contains("allowlist"),
            "{err}"
        );
        let refused = bob.wait_transfer(tid, "failed").await;
        assert_eq!(refused["code"], "not_allowed", "{refused}");
        let offers = bob.call("list_offers", json!({})).await.ok();
        assert_eq!(offers["offers"], json!([]), "a refused offer never waits");

        let err = alice
            .call("send_file", json!({"path": big, "to": "carol"}))
            .await
            .err();
        assert_eq!(err["kind"], "rejected", "{err}");
        let tid = err["transfer_id"].as_str().unwrap();
        let refused = carol.wait_transfer(tid, "failed").await;
        assert_eq!(refused["code"], "too_large", "{refused}");
        let status = carol
            .call("transfer_status", json!({"transfer_id": tid}))
            .await
            .ok();
        assert_eq!(status["state"], "rejected", "{status}");

        assert!(files_in(&net.path().join("bob-incoming")).is_empty());
        assert!(files_in(&net.path().join("carol-incoming")).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_reports_progress_and_auto_accept_lists_it() {
    let net = Net::start();
    bounded(async {
        let src = subdir(net.path(), "src");
        let size = 16 * 1024 * 1024;
        let file = random_file(&src, "large.bin", size);
        let alice = net.server("alice", &[]).await;
        let bob = net.server("bob", &["--auto-accept"]).await;

        let answer = alice
            .call("send_file", json!({"path": file, "to": "bob"}))
            .await;
        let sent = answer.ok();
        assert_eq!(sent["bytes"], size);
        assert!(!answer.progress.is_empty(), "progress notifications arrive");
        let mut last = -1.0;
        for p in &answer.progress {
            assert!(
                p.progress > last,
                "progress increases: {:?}",
                answer.progress
            );
            last = p.progress;
            #[allow(clippy::cast_precision_loss)]
            let total = size as f64;
            assert_eq!(p.total, Some(total));
            assert!(p.progress <= total);
        }
        let tid = sent["transfer_id"].as_str().unwrap();
        let rec = bob.wait_transfer(tid, "complete").await;
        let saved = PathBuf::from(rec["file_path"].as_str().unwrap());
        assert_eq!(sha256_hex(&saved), sha256_hex(&file));
        let offers = bob.call("list_offers", json!({})).await.ok();
        assert_eq!(offers["auto_accept"], true);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_arguments_are_tool_errors_and_the_server_keeps_serving() {
    let net = Net::start();
    bounded(async {
        let alice = net.server("alice", &[]).await;
        let outside = net.path().join("elsewhere");
        let cases = [
            ("send_file", json!({"to": "bob"}), "invalid_arguments"),
            (
                "send_file",
                json!({"path": 42, "to": "bob"}),
                "invalid_arguments",
            ),
            ("accept_offer", json!({}), "invalid_arguments"),
            (
                "accept_offer",
                json!({"transfer_id": "nope"}),
                "invalid_arguments",
            ),
            (
                "transfer_status",
                json!({"transfer_id": [1]}),
                "invalid_arguments",
            ),
            (
                "list_transfers",
                json!({"state": "bogus"}),
                "invalid_arguments",
            ),
            (
                "send_file",
                json!({"path": "/no/such/file", "to": "bob"}),
                "not_a_file",
            ),
            (
                // Neither a regular file nor a directory (a directory is sent whole).
                "send_file",
                json!({"path": "/dev/null", "to": "bob"}),
                "not_a_file",
            ),
            (
                "accept_offer",
                json!({"transfer_id": "00112233445566778899aabbccddeeff"}),
                "unknown_offer",
            ),
            (
                "accept_offer",
                json!({"transfer_id": "00112233445566778899aabbccddeeff", "save_dir": "../x"}),
                "outside_save_dir",
            ),
            (
                "accept_offer",
                json!({"transfer_id": "00112233445566778899aabbccddeeff", "save_dir": outside}),
                "outside_save_dir",
            ),
            (
                "reject_offer",
                json!({"transfer_id": "00112233445566778899aabbccddeeff"}),
                "unknown_offer",
            ),
        ];
        for (tool, args, code) in cases {
            let err = alice.call(tool, args.clone()).await.err();
            assert_eq!(err["code"], code, "{tool} {args}: {err}");
            assert!(!err["message"].as_str().unwrap().is_empty());
        }
        assert!(
            !outside.exists(),
            "nothing created outside the save directory"
        );
        // Still serving.
        let me = alice.call("whoami", json!({})).await.ok();
        assert_eq!(me["actor_id"], "alice");
        alice.close().await;
    })
    .await;
}
