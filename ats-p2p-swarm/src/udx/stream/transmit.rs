//! What the stream sends next: one datagram per [`Stream::poll_transmit`] call, control
//! packets (DESTROY, ACK, HEARTBEAT, MESSAGE) first, then tail loss probes, then (as pacing,
//! the congestion window and the peer's window allow) retransmissions and new data.

use std::net::SocketAddr;
use std::time::Instant;

use super::Stream;
use super::send::{Sent, SentState};
use crate::udx::Transmit;
use crate::udx::packet::{Header, flags};

impl Stream {
    /// The next datagram to send, **appended** to `buf` (so a driver can build a GSO train in
    /// place); it is the last [`Transmit::size`] bytes of `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let start = buf.len();
        let t = self.poll_transmit_inner(now, buf);
        match t {
            Some(dest) => Some(Transmit::new(dest, buf.len() - start)),
            None => {
                buf.truncate(start);
                None
            }
        }
    }

    fn poll_transmit_inner(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (remote_id, dest) = self.remote?;
        if self.destroy_pending {
            self.destroy_pending = false;
            self.header(flags::DESTROY, remote_id, 0).write(buf);
            self.send.seq = self.send.seq.wrapping_add(1);
            return Some(dest);
        }
        if self.closed.is_some() && !self.recv.ack_pending {
            return None;
        }
        if self.recv.ack_pending {
            self.recv.ack_pending = false;
            self.write_ack(remote_id, buf);
            self.check_finished();
            return Some(dest);
        }
        if self.closed.is_some() {
            return None;
        }
        if self.heartbeat_pending {
            self.heartbeat_pending = false;
            self.header(flags::HEARTBEAT, remote_id, 0).write(buf);
            return Some(dest);
        }
        if let Some(msg) = self.send.messages.pop_front() {
            self.header(flags::MESSAGE, remote_id, 0).write(buf);
            buf.extend_from_slice(&msg);
            return Some(dest);
        }
        if let Some(seq) = self.send.tlp_probe.take() {
            // A tail loss probe ignores cwnd and pacing: it exists to elicit an ack.
            if self.resend(now, seq, remote_id, buf, false) {
                return Some(dest);
            }
        }
        self.pacing_wait = None;
        if let Some(release) = self.pacer.delay_until(now) {
            if self.has_sendable() {
                self.pacing_wait = Some(release);
                self.stats.pacing_waits += 1;
            }
            return None;
        }
        while let Some(&seq) = self.send.retransmit.front() {
            let idx = seq.wrapping_sub(self.send.acked) as usize;
            let lost = matches!(self.send.sent.get(idx), Some(p) if p.state == SentState::Lost);
            if !lost {
                self.send.retransmit.pop_front();
                continue;
            }
            let size = self.send.sent.get(idx).map_or(0, Sent::wire_len);
            if self.send.inflight_bytes > 0 && self.send.inflight_bytes + size > self.cc.window() {
                self.send.cwnd_limited = true;
                return None;
            }
            self.send.retransmit.pop_front();
            if self.resend(now, seq, remote_id, buf, true) {
                return Some(dest);
            }
        }
        self.send_new(now, remote_id, dest, buf)
    }

    pub(super) fn header(&self, flags: u8, remote_id: u32, data_offset: u8) -> Header {
        Header {
            flags,
            data_offset,
            stream_id: remote_id,
            rwnd: self.recv_window(),
            seq: self.send.seq,
            ack: self.ack(),
        }
    }

    pub(super) fn has_sendable(&self) -> bool {
        self.remote.is_some() && self.send.has_sendable()
    }
}
