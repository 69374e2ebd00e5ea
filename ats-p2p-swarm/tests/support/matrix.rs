//! One cell of the NAT matrix (issue 11), shared by `tests/netlab_matrix.rs` and the
//! `nat_matrix` bench: a lab with a NAT kind per router ([`crate::netlab`]), the npm `hyperdht`
//! DHT on the public side, optionally a blind relay there (npm `blind-relay`, or ours), a server
//! behind NAT B and a client behind NAT A, each JS (`interop/js/netlab-peer.js`) or Rust
//! ([`crate::lab_peer`]). Both move 16 MiB each way and check each other's SHA-256.
//!
//! [`run_cell`] panics (with every line the processes printed) when the cell fails, and returns
//! `None` where the lab cannot be built outside CI (see [`crate::netlab::NetLab::start_with`]).
//! Every wait is bounded by one deadline per cell, [`CELL_LIMIT`].
#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use serde_json::Value;

use crate::lab_peer::{PeerArgs, RelayChoice, Role};
use crate::netlab::{LabProcess, NatKind, NetLab, Node};

/// JS helper scripts and their `node_modules` (from both `ats-p2p-swarm` and `benches`).
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js");
/// Bytes each way.
pub(crate) const TRANSFER_BYTES: usize = 16 * 1024 * 1024;
/// Port of the bootstrap node inside the public namespace (private to the lab).
const BOOTSTRAP_PORT: u16 = 49737;
/// Everything of one cell: DHT, relay, server, connect, 16 MiB each way (a few s when idle; a
/// random-NAT punch may take up to ~20 s in JS).
pub(crate) const CELL_LIMIT: Duration = Duration::from_secs(60);
/// Server key seed (the client knows the key from it).
const SERVER_SEED: [u8; 32] = [0x11; 32];
/// Our relay's key seed.
const RELAY_SEED: [u8; 32] = [0x22; 32];

/// Which implementation a peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Imp {
    /// npm `hyperdht` (`netlab-peer.js`).
    Js,
    /// ats-p2p-swarm ([`crate::lab_peer`]).
    Rust,
}

impl Imp {
    /// `js` or `rust`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Js => "js",
            Self::Rust => "rust",
        }
    }
}

/// Which relay runs on the public side, and how the peers use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relay {
    /// No relay; Rust peers have relaying disabled.
    None,
    /// npm `blind-relay` on a hyperdht node; both peers pin it.
    Npm,
    /// Ours (`ats_p2p_swarm::relay::RelayServer`); both peers pin it.
    Ours,
    /// Ours; the (Rust) peers find it on the relay topic by themselves.
    OursFound,
}

impl Relay {
    /// Short label for tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::None => "-",
            Self::Npm => "npm relay",
            Self::Ours => "our relay",
            Self::OursFound => "our relay (found)",
        }
    }
}

/// One cell: NAT A (client side) and NAT B (server side), who runs what, which relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    /// Router A, in front of the client.
    pub(crate) nat_a: NatKind,
    /// Router B, in front of the server.
    pub(crate) nat_b: NatKind,
    /// The client's implementation.
    pub(crate) client: Imp,
    /// The server's implementation.
    pub(crate) server: Imp,
    /// The relay.
    pub(crate) relay: Relay,
}

impl Cell {
    /// `consistent↔random` (client's NAT first).
    pub(crate) fn nats(&self) -> String {
        format!("{}↔{}", self.nat_a.name(), self.nat_b.name())
    }

    /// `js→rust` (client → server).
    pub(crate) fn imps(&self) -> String {
        format!("{}→{}", self.client.name(), self.server.name())
    }

    /// The path both sides must report.
    pub(crate) fn expected_path(&self) -> &'static str {
        match self.relay {
            Relay::None => "holepunched",
            Relay::Npm | Relay::Ours | Relay::OursFound => "relayed",
        }
    }
}

/// Every cell of the matrix by name (the test functions of `tests/netlab_matrix.rs` and the rows
/// of the `nat_matrix` bench): NATs client-side first; random↔random always through a relay.
pub(crate) const CELLS: &[(&str, Cell)] = {
    use Imp::{Js, Rust};
    use NatKind::{Consistent as C, Random as R};
    const fn cell(nat_a: NatKind, nat_b: NatKind, client: Imp, server: Imp, relay: Relay) -> Cell {
        Cell {
            nat_a,
            nat_b,
            client,
            server,
            relay,
        }
    }
    &[
        ("js_consistent_consistent", cell(C, C, Js, Js, Relay::None)),
        ("js_consistent_random", cell(C, R, Js, Js, Relay::None)),
        ("js_random_consistent", cell(R, C, Js, Js, Relay::None)),
        ("js_random_random_npm_relay", cell(R, R, Js, Js, Relay::Npm)),
        (
            "js_random_random_our_relay",
            cell(R, R, Js, Js, Relay::Ours),
        ),
        (
            "rust_consistent_consistent",
            cell(C, C, Rust, Rust, Relay::None),
        ),
        (
            "rust_consistent_random",
            cell(C, R, Rust, Rust, Relay::None),
        ),
        (
            "rust_random_consistent",
            cell(R, C, Rust, Rust, Relay::None),
        ),
        (
            "rust_random_random_our_relay",
            cell(R, R, Rust, Rust, Relay::Ours),
        ),
        (
            "rust_random_random_found_relay",
            cell(R, R, Rust, Rust, Relay::OursFound),
        ),
        (
            "rust_random_random_npm_relay",
            cell(R, R, Rust, Rust, Relay::Npm),
        ),
        (
            "js_to_rust_consistent_consistent",
            cell(C, C, Js, Rust, Relay::None),
        ),
        (
            "js_to_rust_consistent_random",
            cell(C, R, Js, Rust, Relay::None),
        ),
        (
            "js_to_rust_random_consistent",
            cell(R, C, Js, Rust, Relay::None),
        ),
        (
            "js_to_rust_random_random_our_relay",
            cell(R, R, Js, Rust, Relay::Ours),
        ),
        (
            "js_to_rust_random_random_npm_relay",
            cell(R, R, Js, Rust, Relay::Npm),
        ),
        (
            "rust_to_js_consistent_consistent",
            cell(C, C, Rust, Js, Relay::None),
        ),
        (
            "rust_to_js_consistent_random",
            cell(C, R, Rust, Js, Relay::None),
        ),
        (
            "rust_to_js_random_consistent",
            cell(R, C, Rust, Js, Relay::None),
        ),
        (
            "rust_to_js_random_random_our_relay",
            cell(R, R, Rust, Js, Relay::Ours),
        ),
        (
            "rust_to_js_random_random_npm_relay",
            cell(R, R, Rust, Js, Relay::Npm),
        ),
    ]
};

/// The cell called `name` in [`CELLS`]; panics on an unknown name.
pub(crate) fn cell(name: &str) -> Cell {
    CELLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .unwrap_or_else(|| panic!("no cell {name:?} in the matrix"))
}

/// What a passing cell measured.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Client: ms from its process start to `connected`.
    pub(crate) client_ms: u64,
    /// Server: ms from its process start to `connected`.
    pub(crate) server_ms: u64,
    /// The client's path.
    pub(crate) path: String,
    /// The server's path.
    pub(crate) server_path: String,
    /// The client's remote address, `host:port`.
    pub(crate) remote: String,
}

/// How to start a Rust lab peer: this program with these arguments, plus the
/// [`PeerArgs::env`] variables.
#[derive(Debug, Clone)]
pub(crate) struct RustPeer {
    /// The executable (a test binary or the bench, re-executed).
    pub(crate) program: String,
    /// Arguments that make it run [`crate::lab_peer::run`].
    pub(crate) args: Vec<String>,
}

fn js_script() -> String {
    let dir = Path::new(JS_DIR);
    assert!(
        dir.join("node_modules/blind-relay").is_dir(),
        "interop/js/node_modules is missing or old: run `npm ci --prefix interop/js`"
    );
    dir.join("netlab-peer.js").display().to_string()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn is_event(line: &str, events: &[&str]) -> bool {
    serde_json::from_str::<Value>(line)
        .is_ok_and(|v| events.iter().any(|e| v["event"].as_str() == Some(e)))
}

fn str_field(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {v}"))
        .to_owned()
}

/// Waits for one of `events` from `p` until `deadline`. Panics on an `error` line, on timeout or
/// when `p` exits, with `p`'s output and that of `others` (what they printed so far).
fn expect(
    p: &mut LabProcess,
    others: &mut [&mut LabProcess],
    deadline: Instant,
    what: &str,
    events: &[&str],
) -> Value {
    let failure = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.next_line(left) {
            Some(l) if is_event(&l, events) => return json(&l),
            Some(l) if is_event(&l, &["error"]) => break format!("{what} failed: {l}"),
            Some(_) => {}
            None => break format!("{what}: no {events:?} line within the cell's time limit"),
        }
    };
    let mut report = format!(
        "{failure}\n--- {} output:\n{}",
        p.label(),
        p.log().join("\n")
    );
    for o in others.iter_mut() {
        while o.next_line(Duration::ZERO).is_some() {}
        report.push_str(&format!(
            "\n--- {} output:\n{}",
            o.label(),
            o.log().join("\n")
        ));
    }
    panic!("{report}");
}

fn spawn_rust(lab: &NetLab, node: Node, rust: &RustPeer, args: &PeerArgs) -> LabProcess {
    let mut argv: Vec<String> = args
        .env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    argv.push(rust.program.clone());
    argv.extend(rust.args.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.spawn(node, "env", &argv)
}

/// Runs `cell` once; see the module docs.
pub(crate) fn run_cell(cell: Cell, rust: &RustPeer) -> Option<Outcome> {
    let script = js_script();
    let deadline = Instant::now() + CELL_LIMIT;
    let lab = NetLab::start_with(cell.nat_a, cell.nat_b)?;
    let public = Node::Public.addr();

    // The DHT: npm hyperdht on the public side, for every cell.
    let host = public.to_string();
    let port = BOOTSTRAP_PORT.to_string();
    let mut dht = lab.spawn(
        Node::Public,
        "node",
        &[
            &script, "dht", "--host", &host, "--port", &port, "--nodes", "3",
        ],
    );
    let ready = expect(&mut dht, &mut [], deadline, "DHT", &["ready"]);
    let bootstrap_s = str_field(&ready, "bootstrap");
    let bootstrap: SocketAddrV4 = bootstrap_s
        .parse()
        .unwrap_or_else(|e| panic!("bootstrap {bootstrap_s}: {e}"));

    // The relay, if any.
    let rust_args = |role, node: Node, relay: RelayChoice, seed, key| PeerArgs {
        role,
        host: node.addr(),
        bootstrap,
        seed,
        key,
        bytes: TRANSFER_BYTES,
        relay,
        relay_host: (cell.relay != Relay::None).then_some(public),
        timeout: deadline.saturating_duration_since(Instant::now()),
    };
    let mut relay_proc = match cell.relay {
        Relay::None => None,
        Relay::Npm => Some(lab.spawn(
            Node::Public,
            "node",
            &[
                &script,
                "relay",
                "--bootstrap",
                &bootstrap_s,
                "--host",
                &host,
            ],
        )),
        Relay::Ours | Relay::OursFound => Some(spawn_rust(
            &lab,
            Node::Public,
            rust,
            &rust_args(
                Role::Relay,
                Node::Public,
                RelayChoice::Disabled,
                RELAY_SEED,
                None,
            ),
        )),
    };
    let relay_key = relay_proc.as_mut().map(|p| {
        let v = expect(p, &mut [], deadline, "relay", &["relay"]);
        str_field(&v, "publicKey")
    });
    let relay_choice = match (cell.relay, &relay_key) {
        (Relay::Npm | Relay::Ours, Some(k)) => {
            RelayChoice::Pinned(k.parse().unwrap_or_else(|e| panic!("relay key {k}: {e:?}")))
        }
        (Relay::OursFound, _) => RelayChoice::Auto,
        _ => RelayChoice::Disabled,
    };
    // JS peers pin the relay with --relay-through (they cannot find one by themselves).
    let mut js_relay: Vec<String> = Vec::new();
    if let Some(k) = &relay_key {
        js_relay = vec![
            "--relay-through".into(),
            k.clone(),
            "--relay-host".into(),
            host.clone(),
        ];
    }
    let bytes = TRANSFER_BYTES.to_string();

    // The server behind NAT B.
    let server_key = KeyPair::from_seed(SERVER_SEED).public_key();
    let mut server = match cell.server {
        Imp::Js => {
            let seed = hex::encode(SERVER_SEED);
            let mut argv = vec![
                script.as_str(),
                "server",
                "--bootstrap",
                &bootstrap_s,
                "--seed",
                &seed,
                "--bytes",
                &bytes,
                "--each-way",
            ];
            argv.extend(js_relay.iter().map(String::as_str));
            lab.spawn(Node::HostB, "node", &argv)
        }
        Imp::Rust => spawn_rust(
            &lab,
            Node::HostB,
            rust,
            &rust_args(
                Role::Server,
                Node::HostB,
                relay_choice.clone(),
                SERVER_SEED,
                None,
            ),
        ),
    };
    let listening = expect(&mut server, &mut [], deadline, "server", &["listening"]);
    assert_eq!(
        listening["firewalled"], true,
        "server behind NAT must be firewalled: {listening}"
    );

    // The client behind NAT A.
    let mut client = match cell.client {
        Imp::Js => {
            let key = server_key.to_hex();
            let timeout_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .to_string();
            let mut argv = vec![
                script.as_str(),
                "client",
                "--bootstrap",
                &bootstrap_s,
                "--key",
                &key,
                "--bytes",
                &bytes,
                "--each-way",
                "--timeout-ms",
                &timeout_ms,
            ];
            argv.extend(js_relay.iter().map(String::as_str));
            lab.spawn(Node::HostA, "node", &argv)
        }
        Imp::Rust => spawn_rust(
            &lab,
            Node::HostA,
            rust,
            &rust_args(
                Role::Client,
                Node::HostA,
                relay_choice,
                [0; 32],
                Some(server_key),
            ),
        ),
    };
    let connected = expect(
        &mut client,
        &mut [&mut server],
        deadline,
        "client connect",
        &["connected"],
    );
    let client_done = expect(
        &mut client,
        &mut [&mut server],
        deadline,
        "client transfer",
        &["done"],
    );
    let server_conn = expect(
        &mut server,
        &mut [&mut client],
        deadline,
        "server accept",
        &["connected"],
    );
    let server_done = expect(
        &mut server,
        &mut [&mut client],
        deadline,
        "server transfer",
        &["done"],
    );
    assert_eq!(client_done["bytes"], TRANSFER_BYTES, "{client_done}");
    assert_eq!(server_done["bytes"], TRANSFER_BYTES, "{server_done}");
    assert_eq!(
        client_done["sentSha256"], server_done["receivedSha256"],
        "client → server hashes differ"
    );
    assert_eq!(
        server_done["sentSha256"], client_done["receivedSha256"],
        "server → client hashes differ"
    );
    let remote = match &connected["remote"] {
        Value::String(s) => s.clone(),
        v => format!("{}:{}", v["host"].as_str().unwrap_or("?"), v["port"]),
    };
    let ms = |v: &Value| v["ms"].as_u64().unwrap_or_else(|| panic!("no ms in {v}"));
    Some(Outcome {
        client_ms: ms(&connected),
        server_ms: ms(&server_conn),
        path: str_field(&connected, "path"),
        server_path: str_field(&server_conn, "path"),
        remote,
    })
}

/// Runs `cell` and checks the path both sides report and the address the client's stream runs
/// to (router B's public address when holepunched, the relay's when relayed).
pub(crate) fn check_cell(cell: Cell, rust: &RustPeer) {
    let Some(out) = run_cell(cell, rust) else {
        return;
    };
    let want = cell.expected_path();
    assert_eq!(out.path, want, "client path in {cell:?}: {out:?}");
    assert_eq!(out.server_path, want, "server path in {cell:?}: {out:?}");
    let want_host = match cell.relay {
        Relay::None => Node::RouterB.public_addr(),
        _ => Node::Public.addr(),
    };
    assert_eq!(
        out.remote.split(':').next(),
        Some(want_host.to_string().as_str()),
        "client's stream must run to {want_host}: {out:?}"
    );
    // Straight to stderr so the numbers show even for a passing test.
    let line = format!(
        "cell {} {} {}: connected {} ms after start (server {} ms), path {}\n",
        cell.nats(),
        cell.imps(),
        cell.relay.name(),
        out.client_ms,
        out.server_ms,
        out.path
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}
