//! The sans-io UDX stream: reliable, ordered, flow- and congestion-controlled bytes plus
//! unreliable messages, over packets handed in and out by the caller.

//!
//! One file per job, as quinn-proto splits a connection's streams: [`send`] holds what we send
//! ([`SendState`]: sequence numbers, packets in flight, the app's write side), [`recv`] what we
//! receive ([`RecvState`]: reassembly, the read buffer, acks, the app's read side),
//! [`recovery`] loss detection and retransmission timeouts, [`mtu`] path-MTU probing,
//! [`transmit`] which datagram goes out next, [`timers`] the timer table, [`config`] and
//! [`stats`] the settings and counters. This file composes them into one [`Stream`]: its
//! lifecycle (connect, destroy, close), the packet input that feeds both halves, and the
//! events for the application.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod config;
mod mtu;
mod recovery;
mod recv;
mod send;
mod stats;
mod timers;
mod transmit;

pub use self::config::{DEFAULT_RWND_MAX, DEFAULT_SEND_BUFFER, StreamConfig};
use self::mtu::Mtu;
pub use self::mtu::{MTU_BASE, MTU_MAX, MTU_STEP};
pub use self::recv::RECV_SLACK;
use self::recv::RecvState;
use self::send::{SendState, SentState};
pub use self::stats::StreamStats;
use self::timers::{TIMER_COUNT, Timer};
use super::CloseReason;
use super::congestion::{Controller, Pacer};
use super::packet::{Packet, flags, seq_diff};
use super::rtt::RttEstimator;

/// Unreliable messages queued for sending or reading; more are dropped.
const MAX_QUEUED_MESSAGES: usize = 256;
/// How long a cleanly finished stream keeps answering retransmissions of the peer's END (its
/// final ack may have been lost); covers the peer's first RTO retransmissions (1 s each).
pub const FINISHED_LINGER: Duration = Duration::from_secs(3);

/// What a stream tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Data (or the end of the stream) can be read.
    Readable,
    /// Send-buffer space freed after a `Blocked` write.
    Writable,
    /// An unreliable MESSAGE datagram arrived.
    Message(Bytes),
    /// The stream closed; no more events follow.
    Closed(CloseReason),
}

/// One UDX stream, sans-io.
///
/// Calling order (quinn's contract, str0m's loop): feed input with [`Stream::handle_packet`] and
/// [`Stream::handle_timeout`] (time always passed in), apply application calls
/// ([`Stream::write`], [`Stream::read`], [`Stream::shutdown`], [`Stream::destroy`],
/// [`Stream::send_message`]), then drain [`Stream::poll_transmit`] until it returns `None`, read
/// [`Stream::poll_timeout`] and arm one timer for it, and drain [`Stream::poll_event`]. After any
/// change, repeat the draining. There is no clock and no randomness inside.
#[derive(Debug)]
pub struct Stream {
    local_id: u32,
    remote: Option<(u32, SocketAddr)>,
    cfg: StreamConfig,
    closed: Option<CloseReason>,
    closed_at: Option<Instant>,
    close_event_sent: bool,

    /// Destroyed while connected: one DESTROY packet is still to go out.
    destroy_pending: bool,
    /// A HEARTBEAT (keep-alive or zero-window probe) is due.
    heartbeat_pending: bool,
    /// Send-buffer space freed after a `Blocked` write: tell the application.
    writable_event: bool,

    // ---- the path: RTT, congestion, pacing, MTU, timers
    rtt: RttEstimator,
    cc: Controller,
    pacer: Pacer,
    pacing_wait: Option<Instant>,
    mtu: Mtu,
    timers: [Option<Instant>; TIMER_COUNT],
    last_activity: Instant,

    /// What we send: sequence numbers, packets in flight, retransmissions, our END.
    send: SendState,
    /// What we receive: reassembly, the read buffer, acknowledgements, the peer's END.
    recv: RecvState,

    stats: StreamStats,
}

impl Stream {
    /// A new, unconnected stream with local id `local_id`.
    pub fn new(local_id: u32, cfg: StreamConfig, now: Instant) -> Self {
        let mtu = Mtu::new(cfg.max_mtu);
        let mss = mtu.mss() as u64;
        Self {
            local_id,
            remote: None,
            send: SendState::new(cfg.initial_seq),
            recv: RecvState::new(cfg.rwnd_max),
            rtt: RttEstimator::new(cfg.min_rto),
            cc: Controller::new(cfg.congestion, mss, now),
            cfg,
            closed: None,
            closed_at: None,
            close_event_sent: false,
            destroy_pending: false,
            heartbeat_pending: false,
            writable_event: false,
            pacer: Pacer::default(),
            pacing_wait: None,
            mtu,
            timers: [None; TIMER_COUNT],
            last_activity: now,
            stats: StreamStats::default(),
        }
    }

    // ------------------------------------------------------------------ getters

    /// Our stream id (the id the peer writes into its packets).
    pub fn local_id(&self) -> u32 {
        self.local_id
    }

    /// The peer's stream id and address, once connected.
    pub fn remote(&self) -> Option<(u32, SocketAddr)> {
        self.remote
    }

    /// True once [`Stream::connect`] was called.
    pub fn is_connected(&self) -> bool {
        self.remote.is_some()
    }

    /// Why the stream closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// True once closed and the closing packet (if any) was handed out.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some() && !self.destroy_pending
    }

    /// True when the stream is closed and no longer needed on the socket (a finished stream
    /// lingers for [`FINISHED_LINGER`] after the last packet it saw or sent).
    pub fn is_drained(&self, now: Instant) -> bool {
        match (self.closed, self.closed_at) {
            (Some(CloseReason::Finished), Some(at)) => {
                !self.recv.ack_pending && now >= at.max(self.last_activity) + FINISHED_LINGER
            }
            (Some(_), _) => !self.destroy_pending,
            (None, _) => false,
        }
    }

    /// True when a control packet (ACK, window update, DESTROY, HEARTBEAT, MESSAGE) is waiting
    /// for [`Stream::poll_transmit`].
    pub fn has_pending_control(&self) -> bool {
        self.recv.ack_pending
            || self.destroy_pending
            || self.heartbeat_pending
            || !self.send.messages.is_empty()
    }

    // ------------------------------------------------------------ app commands

    /// Binds the stream to the peer's stream id and address. Data written before is sent now.
    pub fn connect(&mut self, remote_id: u32, addr: SocketAddr, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.remote = Some((remote_id, addr));
        self.mtu.set_path(addr);
        self.cc.set_mss(self.mtu.mss() as u64);
        self.last_activity = now;
        self.arm_keepalive(now);
    }

    /// Aborts the stream: one DESTROY packet (if connected), then closed.
    pub fn destroy(&mut self) {
        if self.closed.is_some() {
            return;
        }
        self.destroy_pending = self.remote.is_some();
        self.close(CloseReason::Destroyed);
    }

    // ------------------------------------------------------------------ input

    /// Handles one packet addressed to this stream (already routed by stream id).
    pub fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) {
        self.stats.packets_received += 1;
        if let Some(reason) = self.closed {
            // A finished stream lingers to re-ack a retransmitted END whose ack was lost.
            if reason == CloseReason::Finished && packet.header.has(flags::DATA | flags::END) {
                self.recv.ack_pending = true;
            }
            return;
        }
        let h = packet.header;
        self.last_activity = self.last_activity.max(now);
        if h.has(flags::HEARTBEAT) {
            self.recv.ack_pending = true;
            return;
        }

        let diff = seq_diff(h.seq, self.ack());
        if diff >= 0 {
            if h.has(flags::DATA | flags::END) {
                self.on_data(h, packet.payload, diff.unsigned_abs());
            }
            if h.has(flags::DESTROY) {
                self.close(CloseReason::Reset);
                return;
            }
        } else if h.has(flags::DATA | flags::END) {
            self.stats.dropped += 1;
            self.recv.ack_pending = true; // duplicate: re-ack so the sender learns
        }
        if h.has(flags::MESSAGE) {
            if self.recv.messages.len() < MAX_QUEUED_MESSAGES {
                self.recv
                    .messages
                    .push_back(Bytes::copy_from_slice(packet.payload));
            } else {
                self.stats.dropped += 1;
            }
        }

        if !self.on_ack(now, packet) {
            return; // acks something never sent: forged or stale
        }
        if h.has(flags::DATA | flags::END) {
            self.recv.ack_pending = true;
        }
        self.check_finished();
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(m) = self.recv.messages.pop_front() {
            return Some(Event::Message(m));
        }
        if self.recv.readable_event {
            self.recv.readable_event = false;
            return Some(Event::Readable);
        }
        if self.writable_event {
            self.writable_event = false;
            return Some(Event::Writable);
        }
        if let Some(r) = self.closed
            && !self.close_event_sent
        {
            self.close_event_sent = true;
            return Some(Event::Closed(r));
        }
        None
    }

    // --------------------------------------------------------------- internals

    fn ack(&self) -> u32 {
        self.recv.ack()
    }
    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        tracing::debug!(id = self.local_id, ?reason, "udx stream closed");
        self.closed = Some(reason);
        self.closed_at = Some(self.last_activity);
        self.timers = [None; TIMER_COUNT];
        self.heartbeat_pending = false;
        self.send.stop(reason != CloseReason::Finished);
        if reason != CloseReason::Finished {
            self.recv.ack_pending = false;
        }
        self.recv.readable_event = true;
        self.writable_event = true;
    }

    fn check_finished(&mut self) {
        if self.closed.is_none() && self.send.end_acked && self.recv.ended && !self.recv.ack_pending
        {
            self.close(CloseReason::Finished);
        }
    }
}
