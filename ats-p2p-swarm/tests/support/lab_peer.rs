//! The Rust peer of the NAT lab: the counterpart of `interop/js/netlab-peer.js`, printing the same
//! JSON lines so the matrix (`support/matrix.rs`) reads both alike.
//!
//! A host process (the `netlab_matrix` test binary, or the `nat_matrix` bench) re-executes itself
//! inside a lab namespace with the `ATS_NETLAB_*` variables of [`PeerArgs::env`]; its entry point
//! calls [`PeerArgs::from_env`] and [`run`]. Roles:
//!
//! - `server`: listens on the key of `ATS_NETLAB_SEED`, prints `listening`, accepts one connection
//!   (`connected`), runs the each-way transfer and prints `done`.
//! - `client`: connects to `ATS_NETLAB_KEY` at once (as an agent would), prints `connected`, runs
//!   the each-way transfer and prints `done`.
//! - `relay`: our blind relay ([`ats_p2p_swarm::relay::RelayServer`]) on an unfirewalled node;
//!   prints `relay` with its key and address.
//!
//! The each-way transfer is the JS peer's `--each-way`: each side sends `ATS_NETLAB_BYTES` random
//! bytes and, once it has received as many, the 32-byte SHA-256 of them, then ends; each side
//! checks the hash it gets back against what it sent. `ms` is milliseconds since this process
//! started (from `/proc/self/stat`, 10 ms resolution), as the JS peer's `performance.now()`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use ats_p2p_swarm::hyperdht::RelayMode;
use ats_p2p_swarm::hyperdht::{Connection, DhtConfig, Firewall, HyperDht};
use ats_p2p_swarm::{KeyPair, PublicKey};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Write and read size of the transfer.
const CHUNK: usize = 64 * 1024;
/// Bytes of the hash each side sends back.
const HASH_LEN: usize = 32;
/// How long a server stays up after its transfer, so the client reads the end of the stream.
const LINGER: Duration = Duration::from_secs(5);
/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`: 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// What a Rust peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Listen and accept one connection.
    Server,
    /// Connect to the server.
    Client,
    /// Run our blind relay.
    Relay,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Relay => "relay",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "server" => Ok(Self::Server),
            "client" => Ok(Self::Client),
            "relay" => Ok(Self::Relay),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// How a peer may use relays (maps to the contract's `RelayMode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RelayChoice {
    /// Find one on the relay topic when needed (`RelayMode::Auto`).
    Auto,
    /// Only this relay (`RelayMode::Pinned`).
    Pinned(PublicKey),
    /// Never relay (`RelayMode::Disabled`).
    Disabled,
}

impl RelayChoice {
    fn encode(&self) -> String {
        match self {
            Self::Auto => "auto".into(),
            Self::Pinned(k) => k.to_hex(),
            Self::Disabled => "none".into(),
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::Disabled),
            hex => hex
                .parse()
                .map(Self::Pinned)
                .map_err(|e| format!("relay key {hex:?}: {e:?}")),
        }
    }
}

/// Everything a Rust lab peer needs, passed through the environment.
#[derive(Debug, Clone)]
pub(crate) struct PeerArgs {
    /// What to run.
    pub(crate) role: Role,
    /// The namespace's own address (the sockets bind here).
    pub(crate) host: Ipv4Addr,
    /// The lab's bootstrap node.
    pub(crate) bootstrap: SocketAddrV4,
    /// Server / relay key seed.
    pub(crate) seed: [u8; 32],
    /// Client: the server's key.
    pub(crate) key: Option<PublicKey>,
    /// Bytes each way.
    pub(crate) bytes: usize,
    /// Relay use.
    pub(crate) relay: RelayChoice,
    /// Host of the relay, to tell a relayed path until `Connection::path` exists.
    pub(crate) relay_host: Option<Ipv4Addr>,
    /// Client: give up (and print `error`) after this long.
    pub(crate) timeout: Duration,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn parsed<T: std::str::FromStr>(name: &str) -> Result<T, String>
where
    T::Err: std::fmt::Debug,
{
    let v = var(name)?;
    v.parse().map_err(|e| format!("{name}={v}: {e:?}"))
}

impl PeerArgs {
    /// `(name, value)` pairs that make [`PeerArgs::from_env`] return these arguments.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("ATS_NETLAB_ROLE", self.role.name().to_owned()),
            ("ATS_NETLAB_HOST", self.host.to_string()),
            ("ATS_NETLAB_BOOTSTRAP", self.bootstrap.to_string()),
            ("ATS_NETLAB_SEED", hex::encode(self.seed)),
            ("ATS_NETLAB_BYTES", self.bytes.to_string()),
            ("ATS_NETLAB_RELAY", self.relay.encode()),
            (
                "ATS_NETLAB_TIMEOUT_MS",
                self.timeout.as_millis().to_string(),
            ),
        ];
        if let Some(k) = &self.key {
            env.push(("ATS_NETLAB_KEY", k.to_hex()));
        }
        if let Some(h) = self.relay_host {
            env.push(("ATS_NETLAB_RELAY_HOST", h.to_string()));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// The arguments in the environment; `Ok(None)` when `ATS_NETLAB_ROLE` is not set (not a
    /// peer process).
    pub(crate) fn from_env() -> Result<Option<Self>, String> {
        let Ok(role) = std::env::var("ATS_NETLAB_ROLE") else {
            return Ok(None);
        };
        let seed_hex = var("ATS_NETLAB_SEED")?;
        let seed: [u8; 32] = hex::decode(&seed_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("ATS_NETLAB_SEED={seed_hex}: want 64 hex digits"))?;
        let key = match std::env::var("ATS_NETLAB_KEY") {
            Ok(_) => Some(parsed("ATS_NETLAB_KEY")?),
            Err(_) => None,
        };
        let relay_host = match std::env::var("ATS_NETLAB_RELAY_HOST") {
            Ok(_) => Some(parsed("ATS_NETLAB_RELAY_HOST")?),
            Err(_) => None,
        };
        Ok(Some(Self {
            role: Role::parse(&role)?,
            host: parsed("ATS_NETLAB_HOST")?,
            bootstrap: parsed("ATS_NETLAB_BOOTSTRAP")?,
            seed,
            key,
            bytes: parsed("ATS_NETLAB_BYTES")?,
            relay: RelayChoice::parse(&var("ATS_NETLAB_RELAY")?)?,
            relay_host,
            timeout: Duration::from_millis(parsed("ATS_NETLAB_TIMEOUT_MS")?),
        }))
    }
}

/// Milliseconds since this process started (`/proc/self/stat` start time against
/// `/proc/uptime`); 0 where `/proc` cannot be read.
pub(crate) fn ms_since_process_start() -> u64 {
    let start_ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Field 22 (starttime); the command name (field 2) may hold spaces, so count from
            // the closing parenthesis, after which field 3 starts.
            let rest = s.rsplit_once(')')?.1;
            rest.split_whitespace().nth(19)?.parse::<f64>().ok()
        });
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    match (start_ticks, uptime) {
        (Some(ticks), Some(up)) => ((up - ticks / USER_HZ) * 1000.0).max(0.0).round() as u64,
        _ => 0,
    }
}

fn emit(mut v: Value) {
    if let Some(o) = v.as_object_mut() {
        o.entry("ms").or_insert(json!(ms_since_process_start()));
    }
    // A test harness may have printed "test … ... " without a newline.
    println!("\n{v}");
}

/// Runs the peer to completion, printing its JSON lines; an error is printed as an `error` line
/// too.
pub(crate) fn run(args: &PeerArgs) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    let result = rt.block_on(async {
        match args.role {
            Role::Server => server(args).await,
            Role::Client => match tokio::time::timeout(args.timeout, client(args)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no result within {:?}", args.timeout)),
            },
            Role::Relay => relay(args).await,
        }
    });
    if let Err(e) = &result {
        emit(json!({"event": "error", "code": "RUST_PEER", "message": e}));
    }
    // Background tasks (the DHT, a relay) must not keep the process alive.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn bind(args: &PeerArgs) -> Result<Arc<HyperDht>, String> {
    let dht = HyperDht::bind(DhtConfig::new(args.host, vec![args.bootstrap]))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    set_relay_mode(&dht, &args.relay);
    Ok(Arc::new(dht))
}

#[allow(unused_variables)]
fn set_relay_mode(dht: &HyperDht, relay: &RelayChoice) {
    dht.set_relay_mode(match relay {
        RelayChoice::Auto => RelayMode::Auto,
        RelayChoice::Pinned(k) => RelayMode::Pinned(*k),
        RelayChoice::Disabled => RelayMode::Disabled,
    });
}

/// The connection's path as `(kind, remote address, relay key)`.
fn path_of(conn: &Connection, args: &PeerArgs) -> (String, Option<String>, Option<String>) {
    let _ = args;
    let p = conn.path();
    (
        p.kind.to_string(),
        Some(p.remote_addr.to_string()),
        p.relay.map(|k| k.to_hex()),
    )
}

fn connected_line(conn: &Connection, args: &PeerArgs) -> Value {
    let (path, remote, relay) = path_of(conn, args);
    json!({"event": "connected", "path": path, "remote": remote, "relay": relay,
        "ms": ms_since_process_start()})
}

async fn server(args: &PeerArgs) -> Result<(), String> {
    let dht = bind(args).await?;
    let kp = KeyPair::from_seed(args.seed);
    let fw: Firewall = Arc::new(|_: &PublicKey| true);
    let mut server = dht
        .listen(kp.clone(), fw)
        .await
        .map_err(|e| format!("listen: {e}"))?;
    let info = dht
        .dht()
        .info()
        .await
        .map_err(|e| format!("dht info: {e}"))?;
    emit(
        json!({"event": "listening", "publicKey": kp.public_key().to_hex(),
        "firewalled": info.firewalled, "nat": info.nat_addr.map(|a| a.to_string())}),
    );
    let conn = server
        .accept()
        .await
        .ok_or("server stopped before a connection")?;
    emit(connected_line(&conn, args));
    let done = each_way(conn, args.bytes, Turn::ReceiveFirst).await?;
    emit(json!({"event": "received", "bytes": args.bytes, "sha256": done.received}));
    emit(done.line());
    tokio::time::sleep(LINGER).await;
    Ok(())
}

async fn client(args: &PeerArgs) -> Result<(), String> {
    let dht = bind(args).await?;
    let remote = args.key.ok_or("client needs ATS_NETLAB_KEY")?;
    let conn = dht
        .connect(&KeyPair::generate(), &remote)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    emit(connected_line(&conn, args));
    let done = each_way(conn, args.bytes, Turn::SendFirst).await?;
    emit(done.line());
    Ok(())
}

async fn relay(args: &PeerArgs) -> Result<(), String> {
    let dht = Arc::new(
        HyperDht::bind(DhtConfig::new(args.host, vec![args.bootstrap]))
            .await
            .map_err(|e| format!("bind: {e}"))?,
    );
    dht.ready().await.map_err(|e| format!("bootstrap: {e}"))?;
    let kp = KeyPair::from_seed(args.seed);
    let addr = dht.local_addr();
    let _relay = ats_p2p_swarm::relay::RelayServer::spawn(dht.clone(), kp.clone())
        .await
        .map_err(|e| format!("relay: {e}"))?;
    emit(
        json!({"event": "relay", "publicKey": kp.public_key().to_hex(),
        "host": addr.ip().to_string(), "port": addr.port()}),
    );
    std::future::pending::<Result<(), String>>().await
}

/// Hashes of one each-way transfer.
#[derive(Debug)]
struct EachWay {
    bytes: usize,
    sent: String,
    received: String,
    ms: u128,
}

impl EachWay {
    fn line(&self) -> Value {
        json!({"event": "done", "bytes": self.bytes, "receivedBytes": self.bytes,
            "sentSha256": self.sent, "receivedSha256": self.received, "transferMs": self.ms})
    }
}

/// The each-way transfer (see the module docs).
/// Which direction a Rust peer moves first. The two directions run one after the other: with
/// both saturated at once our UDX stream can stall (seen once in ~200 relayed runs; left open,
/// see the closing note of the session that added the matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    SendFirst,
    ReceiveFirst,
}

async fn each_way(conn: Connection, total: usize, turn: Turn) -> Result<EachWay, String> {
    let started = std::time::Instant::now();
    let (mut rd, mut wr) = tokio::io::split(conn);
    let send = async {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0;
        while sent < total {
            let n = CHUNK.min(total - sent);
            rand::thread_rng().fill_bytes(&mut buf[..n]);
            hash.update(&buf[..n]);
            wr.write_all(&buf[..n])
                .await
                .map_err(|e| format!("send after {sent} bytes: {e}"))?;
            sent += n;
        }
        Ok::<_, String>(hash.finalize())
    };
    let recv = async {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < total {
            let want = CHUNK.min(total - got);
            let n = rd
                .read(&mut buf[..want])
                .await
                .map_err(|e| format!("receive after {got} bytes: {e}"))?;
            if n == 0 {
                return Err(format!("stream ended after {got} of {total} bytes"));
            }
            hash.update(&buf[..n]);
            got += n;
        }
        Ok(hash.finalize())
    };
    let (sent, received) = match turn {
        Turn::SendFirst => {
            let sent = send.await?;
            (sent, recv.await?)
        }
        Turn::ReceiveFirst => {
            let received = recv.await?;
            (send.await?, received)
        }
    };
    wr.write_all(&received)
        .await
        .map_err(|e| format!("send hash: {e}"))?;
    wr.shutdown().await.map_err(|e| format!("end: {e}"))?;
    let mut echo = [0u8; HASH_LEN];
    rd.read_exact(&mut echo)
        .await
        .map_err(|e| format!("read the peer's hash: {e}"))?;
    if echo[..] != sent[..] {
        return Err(format!(
            "sent {}, peer hashed {}",
            hex::encode(sent),
            hex::encode(echo)
        ));
    }
    let mut extra = [0u8; 1];
    let n = rd
        .read(&mut extra)
        .await
        .map_err(|e| format!("read the end: {e}"))?;
    if n != 0 {
        return Err("bytes after the peer's hash".into());
    }
    Ok(EachWay {
        bytes: total,
        sent: hex::encode(sent),
        received: hex::encode(received),
        ms: started.elapsed().as_millis(),
    })
}
