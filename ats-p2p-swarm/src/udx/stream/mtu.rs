//! Path MTU discovery of a [`Stream`](super::Stream), as libudx does it: full-size DATA packets
//! padded up to the next probe size; a delivered probe raises the MTU, three lost ones end the
//! search.

use std::net::SocketAddr;

/// Starting MTU (IP + UDP + UDX headers included), libudx `UDX_MTU_BASE`.
pub const MTU_BASE: u16 = 1200;
/// Largest MTU probed by default, libudx `UDX_MTU_MAX` (libudx reads into 2048-byte buffers).
pub const MTU_MAX: u16 = 1500;
/// MTU probe step, libudx `UDX_MTU_STEP`.
pub const MTU_STEP: u16 = 32;
/// Failed probes that end the MTU search, libudx `UDX_MTU_MAX_PROBES`.
const MTU_MAX_PROBES: u8 = 3;
/// IPv4 + UDP + UDX header bytes.
const IPV4_OVERHEAD: u16 = 20 + 8 + 20;
/// IPv6 + UDP + UDX header bytes.
const IPV6_OVERHEAD: u16 = 40 + 8 + 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MtuState {
    /// Nothing acknowledged yet: no probing.
    Base,
    /// Probing upwards.
    Search,
    /// Done: the maximum was reached or probes kept failing.
    Complete,
}

/// The MTU search state.
#[derive(Debug)]
pub(super) struct Mtu {
    pub(super) state: MtuState,
    /// Current MTU (IP + UDP + UDX).
    pub(super) mtu: u16,
    max: u16,
    /// IP + UDP + UDX header bytes on this path.
    pub(super) overhead: u16,
    /// The probe in flight: its sequence number and size.
    pub(super) probe: Option<(u32, u16)>,
    failures: u8,
}

impl Mtu {
    /// A search from [`MTU_BASE`] up to `max_mtu` (at least [`MTU_BASE`]), IPv4 until told.
    pub(super) fn new(max_mtu: u16) -> Self {
        let max = max_mtu.max(MTU_BASE);
        Self {
            state: MtuState::Base,
            mtu: MTU_BASE.min(max),
            max,
            overhead: IPV4_OVERHEAD,
            probe: None,
            failures: 0,
        }
    }

    /// Sets the header overhead for the peer's address family.
    pub(super) fn set_path(&mut self, peer: SocketAddr) {
        self.overhead = if peer.is_ipv6() {
            IPV6_OVERHEAD
        } else {
            IPV4_OVERHEAD
        };
    }

    /// Payload bytes per packet.
    pub(super) fn mss(&self) -> usize {
        usize::from(self.mtu.saturating_sub(self.overhead).max(1))
    }

    /// The size of the next probe, if one may be sent now.
    pub(super) fn next_probe(&self) -> Option<u16> {
        let next = self.mtu.saturating_add(MTU_STEP).min(self.max);
        (self.state == MtuState::Search && self.probe.is_none() && next > self.mtu).then_some(next)
    }

    /// Packet `seq` was delivered; true when that raised the MTU (the MSS changed).
    pub(super) fn on_delivered(&mut self, seq: u32, retransmitted: bool) -> bool {
        let Some((probe_seq, size)) = self.probe else {
            return false;
        };
        if probe_seq != seq {
            return false;
        }
        self.probe = None;
        if retransmitted {
            // Delivered, but maybe only as the unpadded retransmission: probe again.
            return false;
        }
        self.mtu = size;
        self.failures = 0;
        if self.next_probe().is_none() {
            self.state = MtuState::Complete;
        }
        true
    }

    /// Packet `seq` was declared lost; true when it was the probe (which is not congestion).
    pub(super) fn on_lost(&mut self, seq: u32) -> bool {
        match self.probe {
            Some((probe_seq, _)) if probe_seq == seq => {
                self.probe = None;
                self.failures += 1;
                if self.failures >= MTU_MAX_PROBES {
                    self.state = MtuState::Complete;
                }
                true
            }
            _ => false,
        }
    }
}
