//! A dht-rpc node's configuration and the protocol's timings and bounds (dht-rpc 6.27
//! defaults), one home for each.

use std::net::SocketAddrV4;
use std::time::Duration;

use super::limits::SourceLimits;

/// Per-transmission request timeout (dht-rpc default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// Retransmissions of a plain request (4 transmissions in all).
pub const DEFAULT_RETRIES: u32 = 3;
/// Congestion slot length and secret-rotation timer (dht-rpc `_drain`).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(750);
/// Token secrets rotate every this many drain ticks (7.5 s).
pub const ROTATE_SECRETS_TICKS: u32 = 10;
/// Background upkeep tick (dht-rpc `TICK_INTERVAL`).
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);
/// Sends allowed per congestion slot (dht-rpc `MAX_WINDOW`); twice that over the 4-slot window.
pub const MAX_WINDOW: usize = 80;
/// Most requests in flight at once (tids are 16-bit); beyond it requests fail with `Busy`.
pub const MAX_INFLIGHT: usize = 4096;
/// Most concurrent queries; beyond it `query` fails with `Busy`.
pub const MAX_QUERIES: usize = 256;
/// Most queued outgoing datagrams before the oldest are dropped (the driver drains per input).
pub const MAX_TRANSMITS: usize = 8192;
/// Most queued incoming application requests ([`Event::Request`](super::Event::Request)); beyond it they are dropped
/// and counted (the sender retransmits). Other events are never dropped: each answers a request
/// or query in flight, so they are bounded by [`MAX_INFLIGHT`] and [`MAX_QUERIES`] between two
/// drains (the driver drains after every input).
pub const MAX_EVENTS: usize = 8192;
/// Most delayed pings waiting (the rest are dropped).
pub const MAX_DELAYED_PINGS: usize = 64;
/// Largest DELAYED_PING delay honoured (dht-rpc `maxPingDelay`).
pub const MAX_PING_DELAY: Duration = Duration::from_secs(10);
/// Most concurrent liveness checks started by DOWN_HINTs.
pub const MAX_CHECKS: usize = 10;
/// Most concurrent pings of full-row incumbents.
pub const MAX_REPINGS: usize = 3;
/// DOWN_HINTs sent per tick at most.
pub const DOWN_HINTS_PER_TICK: usize = 50;
/// Ticks between refreshes when idle (~5 min).
pub const REFRESH_TICKS: u64 = 60;
/// A node that answered within this many ticks is "recent".
pub(crate) const RECENT_NODE: u64 = 12;
/// A node older than this many ticks is "old".
pub(crate) const OLD_NODE: u64 = 360;
/// Ticks (~20 min) of stable uptime before an adaptive node tests for persistence.
pub const STABLE_TICKS: u64 = 240;
/// Ticks before re-testing on the same network (~1 h).
pub const MORE_STABLE_TICKS: u64 = 3 * STABLE_TICKS;
/// A gap this long between ticks means the host slept (dht-rpc `SLEEPING_INTERVAL`).
pub const SLEEPING_INTERVAL: Duration = Duration::from_secs(15);
/// Nodes asked in a firewall check.
pub(crate) const FIREWALL_CHECK_NODES: usize = 5;

/// Configuration of a [`RpcNode`](super::RpcNode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// Bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Stay ephemeral (true) or become persistent after the firewall test (false).
    pub ephemeral: bool,
    /// With `ephemeral`: become persistent after [`STABLE_TICKS`] of stable uptime if the
    /// firewall test passes (dht-rpc's default "adaptive" mode).
    pub adaptive: bool,
    /// Known public address of the server socket: the node starts unfirewalled and, unless
    /// ephemeral, persistent with `id = H(public_addr)` (a bootstrapper).
    pub public_addr: Option<SocketAddrV4>,
    /// Local port of the server socket (sent in PING_NAT).
    pub server_port: u16,
    /// Start firewalled (dht-rpc default true).
    pub firewalled: bool,
    /// Query concurrency.
    pub concurrency: usize,
    /// Seed of the node's random generator (table id, tokens, tids).
    pub seed: [u8; 32],
    /// Per-source request rate and reply budget.
    pub limits: SourceLimits,
}

impl RpcConfig {
    /// Defaults: ephemeral, firewalled, concurrency 10.
    pub fn new(bootstrap: Vec<SocketAddrV4>, server_port: u16, seed: [u8; 32]) -> Self {
        Self {
            bootstrap,
            ephemeral: true,
            adaptive: false,
            public_addr: None,
            server_port,
            firewalled: true,
            concurrency: 10,
            seed,
            limits: SourceLimits::default(),
        }
    }
}
