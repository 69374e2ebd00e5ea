//! What a stream counts: [`StreamStats`], and a one-line dump of its state for failing tests.

use super::Stream;

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// DATA/END packets sent for the first time.
    pub packets_sent: u64,
    /// Retransmitted packets (loss, TLP, RTO).
    pub retransmits: u64,
    /// Packets received (any type).
    pub packets_received: u64,
    /// Incoming packets dropped (duplicates, beyond the window, malformed).
    pub dropped: u64,
    /// RTO expiries.
    pub rto_expiries: u64,
    /// Tail loss probes sent.
    pub tlp_probes: u64,
    /// Congestion events (window reductions on loss).
    pub loss_events: u64,
    /// `poll_transmit` calls that had data but waited for the pacer.
    pub pacing_waits: u64,
    /// `poll_transmit` calls that had data but the congestion window was full.
    pub cwnd_waits: u64,
    /// `poll_transmit` calls that had data but the peer's receive window was full.
    pub rwnd_waits: u64,
    /// Smoothed RTT in microseconds.
    pub srtt_us: u64,
    /// Current MTU (IP + UDP + UDX).
    pub mtu: u16,
    /// Current congestion window, bytes.
    pub cwnd: u64,
    /// The congestion controller's state (`startup`, `probe-bw`, … or NewReno's
    /// `slow-start`/`avoidance`).
    pub cc_state: &'static str,
    /// BBR's bottleneck bandwidth estimate, bytes/s (0 for NewReno or before a sample).
    pub bandwidth: u64,
}

impl Stream {
    /// Counters.
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            mtu: self.mtu.mtu,
            cwnd: self.cc.window(),
            cc_state: self.cc.state_name(),
            bandwidth: self.cc.bandwidth().unwrap_or(0),
            srtt_us: self.rtt.srtt().map_or(0, |d| d.as_micros() as u64),
            ..self.stats
        }
    }

    /// A one-line dump of the send/receive state, for failing tests.
    #[doc(hidden)]
    pub fn debug_summary(&self) -> String {
        let states: Vec<String> = self
            .send
            .sent
            .iter()
            .take(8)
            .map(|p| format!("{:?}{}", p.state, if p.retransmitted { "R" } else { "" }))
            .collect();
        format!(
            "id={} seq={} remote_acked={} sent={} first={:?} retransmit={:?} inflight={} cwnd={} rwnd={} timers={:?} pacing={:?} recv_next={} ooo={} closed={:?} rto_count={} tlp_in_flight={} srtt={:?}",
            self.local_id,
            self.send.seq,
            self.send.acked,
            self.send.sent.len(),
            states,
            self.send.retransmit.iter().take(8).collect::<Vec<_>>(),
            self.send.inflight_bytes,
            self.cc.window(),
            self.send.peer_rwnd,
            self.timers,
            self.pacing_wait,
            self.recv.next,
            self.recv.ooo.len(),
            self.closed,
            self.send.rto_count,
            self.send.tlp_in_flight,
            self.rtt.srtt(),
        )
    }
}
