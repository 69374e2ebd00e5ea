//! Socket-level demultiplexing: routes datagrams to streams by stream id, hands everything else
//! (DHT RPC, holepunch probes) back to the caller, and surfaces the firewall hook.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::net::SocketAddr;
use std::time::Instant;

use super::packet::{Header, Packet};
use super::stream::{Stream, StreamConfig};
use super::{EndpointError, Transmit};

/// Largest datagram kept for replay while a stream waits for `connect` (a UDP datagram).
const MAX_STASHED_DATAGRAM: usize = 65_535;

/// What [`Endpoint::handle_datagram`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Processed by the stream with this local id.
    Stream(u32),
    /// First packet for a known stream that is not connected yet. The packet is kept; call
    /// [`Endpoint::connect`] with this address to accept it (it is then replayed), or ignore it.
    Firewall {
        /// Local stream id the packet was addressed to.
        local_id: u32,
        /// Where it came from.
        from: SocketAddr,
    },
    /// Not a UDX stream packet (short, bad magic/version, unknown or closed id): the caller's,
    /// e.g. for the DHT RPC sharing the socket.
    NotUdx,
    /// A UDX packet for a known stream that was dropped (malformed, or unconnected and already
    /// reported), or a relayed packet that could not be forwarded.
    Dropped,
    /// A packet for a relay entry: send the same bytes, with the header's stream id rewritten
    /// to `remote_id` ([`super::packet::set_stream_id`]), to `to`. Nothing else is read.
    Relay {
        /// The other side's peer.
        to: SocketAddr,
        /// The other side's stream id (what the peer there expects in the header).
        remote_id: u32,
    },
}

/// One side of a relayed pair of streams (libudx `udx_stream_relay_to`): packets that arrive
/// for `local_id` from `peer` leave, unread, for the other side's peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelaySide {
    /// Our id for this side (what its peer puts in the header).
    pub local_id: u32,
    /// The peer's own stream id (what we put in the header of packets to it).
    pub remote_id: u32,
    /// The peer's address when known; otherwise the first packet's source is taken (the
    /// firewall hook of a relay stream) and nothing from elsewhere is accepted after it.
    pub peer: Option<SocketAddr>,
}

/// Counters of all relay entries of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (UDX headers included).
    pub bytes: u64,
    /// Packets for relay entries that were dropped: wrong source, or the other side has no
    /// known peer yet.
    pub dropped: u64,
}

#[derive(Debug)]
struct RelayEntry {
    partner: u32,
    remote_id: u32,
    peer: Option<SocketAddr>,
}

#[derive(Debug)]
struct Entry {
    stream: Stream,
    stash: Option<(SocketAddr, Vec<u8>)>,
}

/// All streams on one UDP socket, sans-io.
#[derive(Debug, Default)]
pub struct Endpoint {
    streams: HashMap<u32, Entry>,
    relays: HashMap<u32, RelayEntry>,
    relay_counters: RelayCounters,
}

impl Endpoint {
    /// An endpoint with no streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a stream with local id `local_id`.
    pub fn create_stream(
        &mut self,
        local_id: u32,
        cfg: StreamConfig,
        now: Instant,
    ) -> Result<&mut Stream, EndpointError> {
        if self.relays.contains_key(&local_id) {
            return Err(EndpointError::IdInUse(local_id));
        }
        match self.streams.entry(local_id) {
            MapEntry::Occupied(_) => Err(EndpointError::IdInUse(local_id)),
            MapEntry::Vacant(v) => Ok(&mut v
                .insert(Entry {
                    stream: Stream::new(local_id, cfg, now),
                    stash: None,
                })
                .stream),
        }
    }

    /// Connects stream `local_id` to the peer's stream `remote_id` at `addr`. A packet held by
    /// the firewall hook from `addr` is replayed. Returns false if there is no such stream.
    pub fn connect(
        &mut self,
        local_id: u32,
        remote_id: u32,
        addr: SocketAddr,
        now: Instant,
    ) -> bool {
        let Some(e) = self.streams.get_mut(&local_id) else {
            return false;
        };
        e.stream.connect(remote_id, addr, now);
        if let Some((from, bytes)) = e.stash.take()
            && from == addr
            && let Ok(p) = Packet::parse(&bytes)
        {
            e.stream.handle_packet(now, &p);
        }
        true
    }

    /// Forgets the packet held by the firewall hook for stream `local_id` (its
    /// [`Routed::Firewall`] could not be delivered): the peer's next packet raises the hook
    /// again instead of being dropped behind a stash nobody will replay.
    pub fn unstash(&mut self, local_id: u32) {
        if let Some(e) = self.streams.get_mut(&local_id) {
            e.stash = None;
        }
    }

    /// The stream with local id `id`.
    pub fn stream(&mut self, id: u32) -> Option<&mut Stream> {
        self.streams.get_mut(&id).map(|e| &mut e.stream)
    }

    /// Removes a stream (after it closed, or to forget it).
    pub fn remove(&mut self, id: u32) -> Option<Stream> {
        self.streams.remove(&id).map(|e| e.stream)
    }

    /// Local ids of all streams.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.streams.keys().copied()
    }

    /// Number of streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when there are no streams.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Creates a relayed pair: packets for `a.local_id` go to `b`'s peer and vice versa. Both
    /// ids must be free (no stream, no relay entry).
    pub fn create_relay(&mut self, a: RelaySide, b: RelaySide) -> Result<(), EndpointError> {
        for id in [a.local_id, b.local_id] {
            if self.streams.contains_key(&id) || self.relays.contains_key(&id) {
                return Err(EndpointError::IdInUse(id));
            }
        }
        if a.local_id == b.local_id {
            return Err(EndpointError::IdInUse(a.local_id));
        }
        for (side, partner) in [(a, b.local_id), (b, a.local_id)] {
            self.relays.insert(
                side.local_id,
                RelayEntry {
                    partner,
                    remote_id: side.remote_id,
                    peer: side.peer,
                },
            );
        }
        Ok(())
    }

    /// Removes the relayed pair that `local_id` is a side of. False if there is none.
    pub fn remove_relay(&mut self, local_id: u32) -> bool {
        let Some(e) = self.relays.remove(&local_id) else {
            return false;
        };
        self.relays.remove(&e.partner);
        true
    }

    /// Whether `local_id` is a side of a live relayed pair.
    pub fn has_relay(&self, local_id: u32) -> bool {
        self.relays.contains_key(&local_id)
    }

    /// Number of relay entries (two per pair).
    pub fn relay_entries(&self) -> usize {
        self.relays.len()
    }

    /// Counters over all relay entries so far.
    pub fn relay_counters(&self) -> RelayCounters {
        self.relay_counters
    }

    /// A packet for relay entry `h.stream_id` (known to exist).
    fn route_relay(&mut self, h: &Header, from: SocketAddr, len: usize) -> Routed {
        let Some(entry) = self.relays.get_mut(&h.stream_id) else {
            return Routed::NotUdx;
        };
        match entry.peer {
            Some(p) if p != from => {
                self.relay_counters.dropped += 1;
                return Routed::Dropped;
            }
            Some(_) => {}
            None => entry.peer = Some(from),
        }
        let partner = entry.partner;
        let Some(dest) = self.relays.get(&partner) else {
            self.relay_counters.dropped += 1;
            return Routed::Dropped;
        };
        let Some(to) = dest.peer else {
            // libudx drops too until the other side's stream connected (its first packet).
            self.relay_counters.dropped += 1;
            return Routed::Dropped;
        };
        let remote_id = dest.remote_id;
        self.relay_counters.packets += 1;
        self.relay_counters.bytes += len as u64;
        if h.flags & super::packet::flags::DESTROY != 0 {
            // libudx closes a relayed stream on DESTROY after forwarding it; the pair is done.
            self.remove_relay(h.stream_id);
        }
        Routed::Relay { to, remote_id }
    }

    /// Routes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Routed {
        let Some(h) = Header::decode(bytes) else {
            return Routed::NotUdx;
        };
        if self.relays.contains_key(&h.stream_id) {
            return self.route_relay(&h, from, bytes.len());
        }
        let Some(e) = self.streams.get_mut(&h.stream_id) else {
            return Routed::NotUdx;
        };
        if e.stream.is_closed() && e.stream.close_reason() != Some(super::CloseReason::Finished) {
            return Routed::NotUdx;
        }
        if !e.stream.is_connected() {
            if e.stash.is_some() || bytes.len() > MAX_STASHED_DATAGRAM {
                return Routed::Dropped;
            }
            e.stash = Some((from, bytes.to_vec()));
            return Routed::Firewall {
                local_id: h.stream_id,
                from,
            };
        }
        match Packet::parse(bytes) {
            Ok(p) => {
                e.stream.handle_packet(now, &p);
                Routed::Stream(h.stream_id)
            }
            Err(_) => Routed::Dropped,
        }
    }

    /// Fires expired timers on every stream.
    pub fn handle_timeout(&mut self, now: Instant) {
        for e in self.streams.values_mut() {
            if e.stream.poll_timeout().is_some_and(|t| t <= now) {
                e.stream.handle_timeout(now);
            }
        }
    }

    /// Earliest timer over all streams.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|e| e.stream.poll_timeout())
            .min()
    }

    /// The next datagram of stream `id` (see [`Stream::poll_transmit`]).
    pub fn poll_transmit(&mut self, id: u32, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.streams.get_mut(&id)?.stream.poll_transmit(now, buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::udx::packet::flags;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn packet(stream_id: u32, flag: u8) -> Vec<u8> {
        let h = Header {
            flags: flag,
            data_offset: 0,
            stream_id,
            rwnd: 1,
            seq: 0,
            ack: 0,
        };
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(b"ciphertext");
        b
    }

    #[test]
    fn relay_forwards_learns_and_drops() {
        let now = Instant::now();
        let mut e = Endpoint::new();
        let a = RelaySide {
            local_id: 10,
            remote_id: 100,
            peer: Some(addr(1)),
        };
        let b = RelaySide {
            local_id: 20,
            remote_id: 200,
            peer: None,
        };
        e.create_relay(a, b).unwrap();
        assert!(e.create_relay(a, b).is_err());
        assert!(e.create_stream(10, StreamConfig::default(), now).is_err());
        // b's peer unknown: a's packet cannot go anywhere yet
        assert_eq!(
            e.handle_datagram(now, addr(1), &packet(10, flags::DATA)),
            Routed::Dropped
        );
        // b's first packet teaches b's peer and goes to a's peer with a's id
        assert_eq!(
            e.handle_datagram(now, addr(2), &packet(20, flags::DATA)),
            Routed::Relay {
                to: addr(1),
                remote_id: 100
            }
        );
        assert_eq!(
            e.handle_datagram(now, addr(1), &packet(10, flags::DATA)),
            Routed::Relay {
                to: addr(2),
                remote_id: 200
            }
        );
        // strangers are dropped, DESTROY included
        assert_eq!(
            e.handle_datagram(now, addr(3), &packet(20, flags::DESTROY)),
            Routed::Dropped
        );
        assert_eq!(
            e.relay_counters(),
            RelayCounters {
                packets: 2,
                bytes: 60,
                dropped: 2
            }
        );
        // a DESTROY from the peer is forwarded and ends the pair
        assert!(matches!(
            e.handle_datagram(now, addr(1), &packet(10, flags::DESTROY)),
            Routed::Relay { .. }
        ));
        assert!(!e.has_relay(10) && !e.has_relay(20));
        assert_eq!(
            e.handle_datagram(now, addr(1), &packet(10, flags::DATA)),
            Routed::NotUdx
        );
    }

    #[test]
    fn an_undelivered_firewall_hook_is_raised_again() {
        let now = Instant::now();
        let mut e = Endpoint::new();
        e.create_stream(7, StreamConfig::default(), now).unwrap();
        let first = e.handle_datagram(now, addr(1), &packet(7, flags::DATA));
        assert_eq!(
            first,
            Routed::Firewall {
                local_id: 7,
                from: addr(1)
            }
        );
        // While the first packet is held, later ones are dropped.
        assert_eq!(
            e.handle_datagram(now, addr(1), &packet(7, flags::DATA)),
            Routed::Dropped
        );
        // The hook's event was lost: the retransmission raises it again.
        e.unstash(7);
        assert_eq!(
            e.handle_datagram(now, addr(1), &packet(7, flags::DATA)),
            first
        );
    }

    #[test]
    fn set_stream_id_rewrites_only_the_id() {
        let mut p = packet(10, flags::DATA);
        let orig = p.clone();
        assert!(crate::udx::packet::set_stream_id(&mut p, 0xdead_beef));
        assert_eq!(Header::decode(&p).unwrap().stream_id, 0xdead_beef);
        assert_eq!(p[..4], orig[..4]);
        assert_eq!(p[8..], orig[8..]);
        assert!(!crate::udx::packet::set_stream_id(&mut [0xff; 19], 1));
    }
}
