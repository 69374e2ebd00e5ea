//! Hostile input to the sans-io core: random and truncated datagrams, wrong stream ids, forged
//! acks and SACKs, huge SACK counts, data_offset past the end. Never a panic, never unbounded
//! memory, and forged acknowledgements for unsent data change nothing.

// Helpers outside #[test] fns may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common::sim;

use std::net::SocketAddr;
use std::time::Instant;

use ats_p2p_swarm::udx::packet::{Header, flags};
use ats_p2p_swarm::udx::{
    CloseReason, DEFAULT_RWND_MAX, Endpoint, RECV_SLACK, Routed, StreamConfig,
};
use proptest::prelude::*;
use sim::{Link, Pair};

fn peer() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn connected() -> (Endpoint, Instant) {
    let now = Instant::now();
    let mut ep = Endpoint::new();
    ep.create_stream(5, StreamConfig::default(), now).unwrap();
    assert!(ep.connect(5, 6, peer(), now));
    let s = ep.stream(5).unwrap();
    s.write(&[7u8; 100_000]).unwrap();
    let mut buf = Vec::new();
    while s.poll_transmit(now, &mut buf).is_some() {
        buf.clear();
    }
    (ep, now)
}

fn packet(h: Header, tail: &[u8]) -> Vec<u8> {
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(tail);
    v
}

fn assert_bounded(ep: &mut Endpoint) {
    let s = ep.stream(5).unwrap();
    assert!(s.recv_held() <= DEFAULT_RWND_MAX as usize + RECV_SLACK);
    assert!(s.recv_out_of_order() <= 65_536);
    let mut buf = Vec::new();
    let mut n = 0;
    while s.poll_transmit(Instant::now(), &mut buf).is_some() {
        buf.clear();
        n += 1;
        assert!(n < 100_000, "poll_transmit does not terminate");
    }
    while s.poll_event().is_some() {}
}

#[test]
fn wrong_ids_short_and_bad_magic_are_not_udx() {
    let (mut ep, now) = connected();
    let h = Header {
        flags: flags::DATA,
        data_offset: 0,
        stream_id: 99,
        rwnd: 0,
        seq: 0,
        ack: 0,
    };
    assert_eq!(
        ep.handle_datagram(now, peer(), &packet(h, b"x")),
        Routed::NotUdx
    );
    assert_eq!(
        ep.handle_datagram(now, peer(), &[0xff, 1, 0]),
        Routed::NotUdx
    );
    let mut bad = packet(Header { stream_id: 5, ..h }, b"x");
    bad[0] = 0xfe;
    assert_eq!(ep.handle_datagram(now, peer(), &bad), Routed::NotUdx);
    bad[0] = 0xff;
    bad[1] = 2;
    assert_eq!(ep.handle_datagram(now, peer(), &bad), Routed::NotUdx);
}

#[test]
fn data_offset_past_the_end_is_dropped() {
    let (mut ep, now) = connected();
    let h = Header {
        flags: flags::DATA,
        data_offset: 200,
        stream_id: 5,
        rwnd: 0,
        seq: 0,
        ack: 0,
    };
    assert_eq!(
        ep.handle_datagram(now, peer(), &packet(h, &[1; 10])),
        Routed::Dropped
    );
    let s = ep.stream(5).unwrap();
    assert_eq!(s.recv_held(), 0);
}

#[test]
fn truncations_of_a_valid_packet_never_panic() {
    let (mut ep, now) = connected();
    let h = Header {
        flags: flags::DATA | flags::SACK,
        data_offset: 16,
        stream_id: 5,
        rwnd: 1000,
        seq: 0,
        ack: 3,
    };
    let mut tail = Vec::new();
    for x in [1u32, 3, 5, 9] {
        tail.extend_from_slice(&x.to_le_bytes());
    }
    tail.extend_from_slice(b"payload");
    let full = packet(h, &tail);
    for len in 0..=full.len() {
        let _ = ep.handle_datagram(now, peer(), &full[..len]);
        assert_bounded(&mut ep);
    }
}

#[test]
fn huge_sack_counts_are_bounded_work() {
    let (mut ep, now) = connected();
    let h = Header {
        flags: flags::SACK,
        data_offset: 0,
        stream_id: 5,
        rwnd: 1 << 20,
        seq: 0,
        ack: 0,
    };
    let mut tail = Vec::new();
    for _ in 0..8000 {
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            ep.handle_datagram(now, peer(), &packet(h, &tail)),
            Routed::Stream(5)
        );
    }
    assert!(started.elapsed().as_secs() < 5);
    assert_bounded(&mut ep);
}

#[test]
fn forged_acks_for_unsent_data_change_nothing_in_a_transfer() {
    // A lossy transfer into which an attacker injects acks and SACKs for sequence numbers the
    // sender never used: every byte must still arrive, because none of them is believed.
    let link = Link {
        loss: 0.05,
        ..Link::default()
    };
    let mut p = Pair::new(77, link, StreamConfig::default(), 2 * 1024 * 1024, 0);
    let b_addr = p.b.addr;
    let mut i: u32 = 0;
    for _ in 0..2_000_000 {
        if p.a.closed.is_some() && p.b.closed.is_some() {
            break;
        }
        i = i.wrapping_add(1);
        let sent = p.a.ep.stream(1).unwrap().stats().packets_sent as u32;
        let forged_ack = sent + 100 + (i % 1000);
        let h = Header {
            flags: flags::SACK,
            data_offset: 0,
            stream_id: 1,
            rwnd: u32::MAX,
            seq: i,
            ack: forged_ack,
        };
        let mut tail = Vec::new();
        tail.extend_from_slice(&(sent + 1).to_le_bytes());
        tail.extend_from_slice(&(sent + 50_000).to_le_bytes());
        let now = p.now;
        let _ = p.a.ep.handle_datagram(now, b_addr, &packet(h, &tail));
        // also a SACK covering nothing valid below the cumulative ack
        let h2 = Header { ack: 0, ..h };
        let _ = p.a.ep.handle_datagram(now, b_addr, &packet(h2, &tail));
        if !p.step() {
            break;
        }
    }
    assert_eq!(p.b.read, 2 * 1024 * 1024);
    assert_eq!(p.a.closed, Some(CloseReason::Finished));
    assert_eq!(p.b.closed, Some(CloseReason::Finished));
}

proptest! {
    #![proptest_config(crate::common::proptest_config(256, 0x5eed_3002))]

    #[test]
    fn random_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let (mut ep, now) = connected();
        let _ = ep.handle_datagram(now, peer(), &data);
        assert_bounded(&mut ep);
    }

    /// Random packets that do reach the stream (valid magic, version and id): any flags, seq,
    /// ack, rwnd, data_offset and body, many in a row.
    #[test]
    fn random_packets_for_the_stream_stay_bounded(
        pkts in proptest::collection::vec(
            (any::<u8>(), any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>(),
             proptest::collection::vec(any::<u8>(), 0..1500), any::<bool>()),
            1..64),
    ) {
        let (mut ep, mut now) = connected();
        for (f, off, rwnd, seq, ack, body, small_seq) in pkts {
            let seq = if small_seq { seq % 70_000 } else { seq };
            let h = Header { flags: f & 0x3f, data_offset: off, stream_id: 5, rwnd, seq, ack };
            let _ = ep.handle_datagram(now, peer(), &packet(h, &body));
            now += std::time::Duration::from_millis(7);
            ep.handle_timeout(now);
            assert_bounded(&mut ep);
        }
    }
}

#[test]
fn many_small_out_of_order_packets_stay_bounded() {
    let (mut ep, now) = connected();
    for seq in (1..200_000u32).step_by(2) {
        let h = Header {
            flags: flags::DATA,
            data_offset: 0,
            stream_id: 5,
            rwnd: 0,
            seq,
            ack: 0,
        };
        let _ = ep.handle_datagram(now, peer(), &packet(h, &[1u8; 100]));
    }
    assert_bounded(&mut ep);
    let s = ep.stream(5).unwrap();
    assert!(s.recv_out_of_order() <= 32_768);
    assert_eq!(s.close_reason(), None);
}
