//! UDX: reliable, congestion-controlled streams multiplexed over one UDP socket, byte-compatible
//! with libudx / npm `udx-native` 1.21.3.
//!
//! # Layers
//! - [`packet`]: the wire codec (20-byte LE header, SACK blocks, `data_offset`).
//! - [`Stream`]: one stream as a sans-io state machine (quinn-proto style): packets, time and
//!   application calls go in; datagrams, events and the next timer come out. No sockets, no
//!   clock, no randomness inside.
//! - [`Endpoint`]: the socket-level demultiplexer. It routes datagrams by stream id, returns
//!   everything that is not a UDX stream packet to the caller ([`Routed::NotUdx`]) and surfaces
//!   the firewall hook ([`Routed::Firewall`]) for the first packet to an unconnected stream.
//!   It also holds relay entries ([`Endpoint::create_relay`], libudx `udx_stream_relay_to`):
//!   pairs of ids whose packets are forwarded unread to the other side's peer with the stream
//!   id rewritten ([`Routed::Relay`]); the blind relay ([`crate::relay`]) uses them.
//! - [`UdxSocket`] / [`UdxStream`]: the thin tokio driver — one task per UDP socket owning the
//!   [`Endpoint`]; streams are `AsyncRead + AsyncWrite`.
//!
//! # The canonical loop (sans-io)
//! ```text
//! loop {
//!     endpoint.handle_datagram(now, from, bytes)   // for each received datagram
//!     endpoint.handle_timeout(now)                 // when the timer fired
//!     for each stream: while let Some(t) = stream.poll_transmit(now, &mut buf) { send(t) }
//!     for each stream: while let Some(ev) = stream.poll_event() { .. }
//!     sleep until endpoint.poll_timeout()
//! }
//! ```
//! After any input or application call, drain `poll_transmit` until `None` before sleeping.
//!
//! # Behaviour, and where it differs from libudx
//! - Wire format, sequence/ack/SACK semantics, `data_offset`, MESSAGE, DESTROY, HEARTBEAT, END
//!   and the firewall hook follow libudx exactly (checked against `udx-native` 1.21.3 in
//!   `tests/udx_interop.rs`).
//! - Loss recovery: RFC 6298 RTO (1 s floor, 30 s cap, closed after 6 expiries without
//!   progress), RACK-style time-based loss detection from ACK/SACK, tail loss probes at 2·srtt.
//! - Congestion control: BBR by default, like libudx (bottleneck rate from delivery-rate
//!   samples, min RTT, gain cycling; random loss does not shrink it), or the earlier
//!   NewReno-style window with [`StreamConfig::congestion`] = [`CongestionControl::NewReno`];
//!   see the `congestion` module. Congestion control is sender-local, so either interoperates
//!   with any peer. The pacer hands out a next-send time and lets a 2 ms burst through at the
//!   current rate, so a 1 ms driver timer cannot cap throughput.
//! - ACKs: one per received batch of datagrams (the driver reads up to 256 per turn) rather than
//!   one per packet; cumulative ack plus up to 50 SACK blocks, as libudx, but the blocks around
//!   packets that arrived since the last ACK come first, then the lowest ones (libudx sends only
//!   the lowest, which hides every arrival past the 50th hole from the sender's RACK).
//! - Path MTU: probes from 1200 to 1500 bytes in steps of 32 with `data_offset` padding, like
//!   libudx; [`StreamConfig::max_mtu`] may raise the ceiling for peers known to read larger
//!   datagrams (libudx reads into 2048-byte buffers).
//! - A cleanly finished stream lingers for [`FINISHED_LINGER`] to re-ack the peer's END.
//! - The driver batches sends with UDP GSO and receives with GRO (`quinn-udp`), falling back to
//!   one datagram per call where the OS lacks them. Loopback, one stream, 512 MiB, 2 shared
//!   cores: ~1.4–1.8 GB/s on a current-thread runtime, ~0.6–0.9 GB/s on a two-worker
//!   multi-thread runtime (`examples/udx-bench.rs`).
//!
//! # Design note for the layers above
//! The DHT RPC and the holepunch probes share the UDP socket with UDX, exactly as in the
//! JavaScript stack. The DHT will sit on top of the driver through
//! [`UdxSocket::send_to`] and the bounded [`SocketEvent::Datagram`] channel (every datagram that
//! is not a packet for a live UDX stream). Holepunching uses [`SocketEvent::Firewall`]: the first
//! packet for a created-but-unconnected stream reports its source address so the caller can
//! `connect` the stream to it (hyperdht's firewall callback). The secret stream runs on top of
//! [`UdxStream`] through `AsyncRead`/`AsyncWrite`.

mod congestion;
mod driver;
mod endpoint;
pub mod packet;
mod rtt;
mod stream;

use std::net::SocketAddr;

pub use congestion::CongestionControl;
pub use driver::{
    CLOSE_FLUSH_TIMEOUT, DEFAULT_EVENT_QUEUE, SocketConfig, SocketEvent, UdxSocket, UdxStream,
};
pub use endpoint::{Endpoint, RelayCounters, RelaySide, Routed};
pub use packet::{Header, Packet, PacketError};
pub use stream::{
    DEFAULT_RWND_MAX, DEFAULT_SEND_BUFFER, Event, FINISHED_LINGER, MTU_BASE, MTU_MAX, MTU_STEP,
    RECV_SLACK, Stream, StreamConfig, StreamStats,
};

/// A datagram to send; its bytes are the first `size` bytes of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Length in bytes.
    pub size: usize,
}

impl Transmit {
    fn new(destination: SocketAddr, size: usize) -> Self {
        Self { destination, size }
    }
}

/// Why a stream closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// Both sides ended and every END was acknowledged.
    #[error("stream finished")]
    Finished,
    /// The peer sent DESTROY.
    #[error("stream reset by peer")]
    Reset,
    /// We destroyed it.
    #[error("stream destroyed locally")]
    Destroyed,
    /// Too many retransmission timeouts without progress.
    #[error("stream timed out")]
    TimedOut,
}

/// Errors of [`Stream::write`], [`Stream::shutdown`] and [`Stream::send_message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The send buffer is full: wait for [`Event::Writable`] (backpressure, not a failure).
    #[error("send buffer full")]
    Blocked,
    /// The write side was already shut down.
    #[error("stream already ended")]
    Ended,
    /// The stream is closed.
    #[error("stream closed: {0}")]
    Closed(CloseReason),
}

/// Errors of [`Stream::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No data yet: wait for [`Event::Readable`].
    #[error("no data available")]
    Blocked,
    /// The stream closed before its end was read.
    #[error("stream closed: {0}")]
    Closed(CloseReason),
}

/// Errors of [`Endpoint`] operations and the driver.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A stream with this local id exists already.
    #[error("stream id {0} already in use")]
    IdInUse(u32),
    /// The socket driver has stopped.
    #[error("UDX socket closed")]
    SocketClosed,
    /// An OS error on the UDP socket.
    #[error("UDP socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<CloseReason> for std::io::Error {
    fn from(r: CloseReason) -> Self {
        let kind = match r {
            CloseReason::Finished => std::io::ErrorKind::NotConnected,
            CloseReason::Reset => std::io::ErrorKind::ConnectionReset,
            CloseReason::Destroyed => std::io::ErrorKind::ConnectionAborted,
            CloseReason::TimedOut => std::io::ErrorKind::TimedOut,
        };
        Self::new(kind, r)
    }
}
