//! UDX datagrams into a connected endpoint, the production datagram router.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::Cursor;
use crate::udx::packet::{HEADER_SIZE, Header, Packet, SACK_BLOCK_SIZE};
use crate::udx::{DEFAULT_RWND_MAX, Endpoint, RECV_SLACK, Routed, StreamConfig};

/// The stream id the fuzzed endpoint's connected stream has.
const UDX_LOCAL_ID: u32 = 5;

fn udx_peer() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9))
}

/// Parses the datagram as a UDX packet and checks what the parse promises.
fn check_packet_parse(bytes: &[u8]) {
    if let Ok(p) = Packet::parse(bytes) {
        assert!(bytes.len() >= HEADER_SIZE);
        assert_eq!(Header::decode(bytes), Some(p.header));
        let rest = bytes.len() - HEADER_SIZE;
        assert!(p.payload.len() <= rest);
        assert_eq!(
            p.payload.len(),
            rest - usize::from(p.header.data_offset),
            "payload does not start at data_offset"
        );
        assert!(p.sack_count() * SACK_BLOCK_SIZE <= rest);
        assert_eq!(p.sacks().count(), p.sack_count());
        assert_eq!(&p.header.to_bytes()[..], &bytes[..HEADER_SIZE]);
    }
}

/// An endpoint with stream 5 connected to the peer's stream 6, some data in flight.
fn udx_endpoint(now: Instant) -> Endpoint {
    let mut ep = Endpoint::new();
    if ep
        .create_stream(UDX_LOCAL_ID, StreamConfig::default(), now)
        .is_err()
    {
        unreachable!("a fresh endpoint has no stream 5");
    }
    assert!(ep.connect(UDX_LOCAL_ID, 6, udx_peer(), now));
    if let Some(s) = ep.stream(UDX_LOCAL_ID) {
        assert!(s.write(&[7u8; 8_000]).is_ok());
        let mut buf = Vec::new();
        while s.poll_transmit(now, &mut buf).is_some() {
            buf.clear();
        }
    }
    ep
}

/// Checks that the stream's buffers are bounded, drains its output and returns it.
fn udx_drain(ep: &mut Endpoint, now: Instant) {
    let Some(s) = ep.stream(UDX_LOCAL_ID) else {
        return;
    };
    assert!(s.recv_held() <= DEFAULT_RWND_MAX as usize + RECV_SLACK);
    assert!(s.recv_out_of_order() <= 65_536);
    let mut buf = Vec::new();
    let mut n = 0;
    while s.poll_transmit(now, &mut buf).is_some() {
        buf.clear();
        n += 1;
        assert!(n < 10_000, "poll_transmit does not terminate");
    }
    while s.poll_event().is_some() {}
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

/// Feeds a connected UDX endpoint (the production datagram router, [`Endpoint::handle_datagram`])
/// a sequence of datagrams, raw or with a valid header for its stream and fuzzer-chosen fields;
/// checks the packet parser's promises and that the stream's buffers stay bounded.
pub fn udx_packets(data: &[u8]) {
    let mut input = Cursor { data };
    let mut now = Instant::now();
    let mut ep = udx_endpoint(now);
    let mut packets = 0;
    while !input.is_empty() && packets < 256 {
        packets += 1;
        let kind = input.byte();
        let datagram = if kind & 1 == 0 {
            let len = usize::from(input.u16() % 1600);
            input.take(len).to_vec()
        } else {
            let h = Header {
                flags: input.byte(),
                data_offset: input.byte(),
                stream_id: if kind & 2 == 0 {
                    UDX_LOCAL_ID
                } else {
                    input.u32()
                },
                rwnd: input.u32(),
                seq: if kind & 4 == 0 {
                    u32::from(input.u16())
                } else {
                    input.u32()
                },
                ack: if kind & 8 == 0 {
                    u32::from(input.byte())
                } else {
                    input.u32()
                },
            };
            let len = usize::from(input.u16() % 1500);
            let mut d = h.to_bytes().to_vec();
            d.extend_from_slice(input.take(len));
            d
        };
        check_packet_parse(&datagram);
        if let Routed::Stream(id) = ep.handle_datagram(now, udx_peer(), &datagram) {
            assert_eq!(id, UDX_LOCAL_ID, "routed to a stream that does not exist");
        }
        if kind & 0x10 != 0 {
            now += Duration::from_millis(u64::from(kind >> 5) * 50);
            ep.handle_timeout(now);
        }
        udx_drain(&mut ep, now);
    }
}
