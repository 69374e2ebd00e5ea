//! Runs the built `ats-p2p hub` binary: ready line on stdout, serves HTTP, clean Ctrl-C exit.
// Test helpers may unwrap: a panic here is a failed test (clippy.toml allows it in #[test]s).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on every wait in this test.
const TIMEOUT: Duration = Duration::from_secs(20);

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ats-p2p hub did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn hub_prints_ready_line_serves_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub").join("hub.sqlite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ats-p2p"))
        .args(["hub", "--listen", "127.0.0.1:0", "--json"])
        .args(["--bootstrap-listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(TIMEOUT) else {
        let _ = child.kill();
        panic!("no ready line");
    };
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(
        line.starts_with(r#"{"event":"hub_ready","ats_url":"http://"#),
        "{line}"
    );
    assert_eq!(v["event"], "hub_ready");
    let url = v["ats_url"].as_str().unwrap();
    let addr = url.strip_prefix("http://").unwrap();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{url}"
    );

    let boot: std::net::SocketAddrV4 = v["bootstrap"].as_str().unwrap().parse().unwrap();
    assert!(boot.ip().is_loopback() && boot.port() != 0, "{line}");
    assert_dht_ping_answered(boot);

    let health = http_get(addr, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""status":"ok""#), "{health}");
    assert!(db.exists(), "database created with its directory");

    // Ctrl-C: graceful stop, exit 130.
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "stderr: {err}");
    assert!(
        !err.contains("ERROR") && !err.contains("panicked"),
        "stderr: {err}"
    );
}

#[test]
fn hub_plain_output_and_bad_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ats-p2p"))
        .args(["hub", "--listen", "not-an-address", "--db"])
        .arg(dir.path().join("h.sqlite"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(out.stdout.is_empty());

    let mut child = Command::new(env!("CARGO_BIN_EXE_ats-p2p"))
        .args(["hub", "--listen", "127.0.0.1:0"])
        .args(["--bootstrap-listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("h.sqlite"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
    assert!(
        line.starts_with("ATS hub listening on http://127.0.0.1:"),
        "{line:?}"
    );
    // SIGTERM: graceful stop, exit 0.
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

/// Sends a dht-rpc PING (`03` request, flags `04` internal, tid, the 6-byte "to" address, command
/// 0) to the hub's bootstrap node and expects a response (`13`) with the same transaction id.
fn assert_dht_ping_answered(boot: std::net::SocketAddrV4) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut ping = vec![0x03, 0x04, 0x34, 0x12];
    ping.extend_from_slice(&boot.ip().octets());
    ping.extend_from_slice(&boot.port().to_le_bytes());
    ping.push(0x00);
    sock.send_to(&ping, boot).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("the bootstrap node answers a PING");
    assert_eq!(from, std::net::SocketAddr::V4(boot));
    assert!(n >= 4, "short reply {:?}", &buf[..n]);
    assert_eq!(buf[0], 0x13, "a dht-rpc response");
    assert_eq!(&buf[2..4], &[0x34, 0x12], "same transaction id");
}

/// Runs `ats-p2p hub ARGS` in `cwd`, which must fail at once: exit status and stderr.
fn hub_refused(cwd: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ats-p2p"))
        .arg("hub")
        .args(["--bootstrap-listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env_remove("ATS_P2P_HUB_TOKEN")
        .env_remove("ATS_P2P_HUB_DB")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

#[test]
fn hub_refuses_a_database_url_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let (status, err) = hub_refused(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--db",
            "mysql://user:hunter2@host:3306/db",
        ],
    );
    assert_eq!(status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "the password was echoed: {err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "created {left:?}");
}

#[test]
fn hub_on_an_unreachable_postgres_says_so_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: refused at once.
    let (status, err) = hub_refused(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-bootstrap",
            "--db",
            "postgres://user:hunter2@127.0.0.1:1/db",
        ],
    );
    assert!(!status.success());
    assert!(
        err.contains("cannot open hub database postgres://"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "created {left:?}");
}

#[test]
fn hub_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.sqlite").display().to_string();
    // Refused before anything is bound.
    let (status, err) = hub_refused(dir.path(), &["--listen", "0.0.0.0:0", "--db", &db]);
    assert!(!status.success());
    assert!(err.contains("without a token"), "{err}");
    let (status, err) = hub_refused(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--db", &db, "--token", "short"],
    );
    assert!(!status.success());
    assert!(err.contains("at least 16"), "{err}");
}
