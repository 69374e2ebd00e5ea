//! What a stream is configured with: [`StreamConfig`] and its defaults.

use std::time::Duration;

use super::MTU_MAX;
use crate::udx::CongestionControl;
use crate::udx::rtt::INITIAL_RTO;

/// Default receive window, bytes (libudx `UDX_DEFAULT_RWND_MAX`).
pub const DEFAULT_RWND_MAX: u32 = 4 * 1024 * 1024;
/// Default cap on bytes written but not yet acknowledged; above it `write` returns `Blocked`.
pub const DEFAULT_SEND_BUFFER: usize = 8 * 1024 * 1024;

/// Per-stream configuration.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Receive window advertised when the read buffer is empty, bytes.
    pub rwnd_max: u32,
    /// Cap on written-but-unacknowledged bytes.
    pub send_buffer: usize,
    /// Largest MTU to probe for (IP+UDP+UDX). Keep ≤ 1500 when the peer may be libudx.
    pub max_mtu: u16,
    /// Send a HEARTBEAT after this much idle time (off by default, like libudx).
    pub keepalive: Option<Duration>,
    /// First sequence number we send (libudx / hyperdht: 0).
    pub initial_seq: u32,
    /// Lower bound of the retransmission timeout (libudx: 1 s).
    pub min_rto: Duration,
    /// Congestion controller of the data we send (BBR by default; NewReno kept for
    /// comparison). Sender-side only: either works with any peer.
    pub congestion: CongestionControl,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            rwnd_max: DEFAULT_RWND_MAX,
            send_buffer: DEFAULT_SEND_BUFFER,
            max_mtu: MTU_MAX,
            keepalive: None,
            initial_seq: 0,
            min_rto: INITIAL_RTO,
            congestion: CongestionControl::default(),
        }
    }
}
