//! The receive side: [`RecvState`] (reassembly within the window, the read buffer, the peer's
//! END, ACK/SACK generation) and the [`Stream`] methods that use it.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, Bytes, BytesMut};

use super::Stream;
use crate::udx::packet::{Header, MAX_SACK_BLOCKS, flags};
use crate::udx::{CloseReason, ReadError};

/// Out-of-order packets are accepted at most this far ahead of the cumulative ack (libudx scans
/// 65536 seqs for SACKs).
const MAX_REORDER_DISTANCE: u32 = 65_536;
/// Bytes accepted beyond the advertised window before data is dropped (packets already in
/// flight when the window shrank).
pub const RECV_SLACK: usize = 256 * 1024;

/// The receive half of a stream.
#[derive(Debug)]
pub(super) struct RecvState {
    /// The next in-order packet expected (64-bit: never wraps).
    pub(super) next: u64,
    /// In-order bytes waiting for the application.
    buf: BytesMut,
    /// Packets ahead of `next`: flags and payload by extended sequence number.
    pub(super) ooo: BTreeMap<u64, (u8, Bytes)>,
    /// Payload bytes in `ooo`.
    ooo_bytes: usize,
    /// The peer's END arrived in order: nothing after it is delivered.
    pub(super) ended: bool,
    /// An ACK (or window update) is due.
    pub(super) ack_pending: bool,
    /// The window we last advertised.
    pub(super) last_adv_rwnd: u32,
    /// Unreliable MESSAGE datagrams received, not yet taken.
    pub(super) messages: VecDeque<Bytes>,
    /// Data or the END arrived since the application last heard: send `Readable`.
    pub(super) readable_event: bool,
}

/// What became of an incoming DATA/END packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Taken (in order or held out of order).
    Accepted,
    /// Dropped: too far ahead, beyond the window, or a duplicate.
    Dropped,
}

impl RecvState {
    pub(super) fn new(rwnd_max: u32) -> Self {
        Self {
            next: 0,
            buf: BytesMut::new(),
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            ended: false,
            ack_pending: false,
            last_adv_rwnd: rwnd_max,
            messages: VecDeque::new(),
            readable_event: false,
        }
    }

    /// The cumulative ack we send: the low 32 bits of `next`.
    pub(super) fn ack(&self) -> u32 {
        self.next as u32
    }

    /// Bytes held (read buffer plus out-of-order packets).
    pub(super) fn held(&self) -> usize {
        self.buf.len().saturating_add(self.ooo_bytes)
    }

    /// Space left in a window of `rwnd_max` bytes (what we advertise).
    pub(super) fn window(&self, rwnd_max: u32) -> u32 {
        let held = u32::try_from(self.held()).unwrap_or(u32::MAX);
        rwnd_max.saturating_sub(held)
    }

    /// In-order bytes are waiting to be read.
    pub(super) fn has_data(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Hands up to `max` in-order bytes to `take`; returns how many.
    pub(super) fn take(&mut self, max: usize, take: impl FnOnce(&[u8])) -> usize {
        let n = max.min(self.buf.len());
        take(self.buf.get(..n).unwrap_or(&[]));
        self.buf.advance(n);
        n
    }

    /// A DATA/END packet `diff` packets ahead of `next`, in a window of `rwnd_max` bytes.
    pub(super) fn on_data(
        &mut self,
        h: Header,
        payload: &[u8],
        diff: u32,
        rwnd_max: u32,
    ) -> Arrival {
        if diff >= MAX_REORDER_DISTANCE {
            return Arrival::Dropped;
        }
        let ext = self.next + u64::from(diff);
        let cap = (rwnd_max as usize).saturating_add(RECV_SLACK);
        if self.held().saturating_add(payload.len()) > cap {
            self.ack_pending = true;
            return Arrival::Dropped;
        }
        let data = if h.has(flags::DATA) { payload } else { &[] };
        if diff == 0 {
            self.deliver(h.flags, data);
            while let Some(entry) = self.ooo.first_entry() {
                if *entry.key() != self.next {
                    break;
                }
                let (f, bytes) = entry.remove();
                self.ooo_bytes -= bytes.len();
                self.deliver(f, &bytes);
            }
            Arrival::Accepted
        } else if let std::collections::btree_map::Entry::Vacant(v) = self.ooo.entry(ext) {
            self.ooo_bytes += data.len();
            v.insert((h.flags, Bytes::copy_from_slice(data)));
            Arrival::Accepted
        } else {
            Arrival::Dropped
        }
    }

    fn deliver(&mut self, f: u8, data: &[u8]) {
        if self.ended {
            // Nothing is delivered past the END.
            self.next += 1;
            return;
        }
        if f & flags::DATA != 0 && !data.is_empty() {
            self.buf.extend_from_slice(data);
            self.readable_event = true;
        }
        if f & flags::END != 0 {
            self.ended = true;
            self.readable_event = true;
        }
        self.next += 1;
    }

    /// SACK blocks `[start, end)` for the out-of-order packets, at most [`MAX_SACK_BLOCKS`].
    pub(super) fn sack_blocks(&self) -> Vec<(u32, u32)> {
        let mut blocks: Vec<(u32, u32)> = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        let limit = self.next + u64::from(MAX_REORDER_DISTANCE);
        for &k in self.ooo.keys() {
            if k >= limit || blocks.len() >= MAX_SACK_BLOCKS {
                break;
            }
            run = match run {
                Some((s, e)) if e == k => Some((s, k + 1)),
                Some((s, e)) => {
                    blocks.push((s as u32, e as u32));
                    Some((k, k + 1))
                }
                None => Some((k, k + 1)),
            };
        }
        if let Some((s, e)) = run
            && blocks.len() < MAX_SACK_BLOCKS
        {
            blocks.push((s as u32, e as u32));
        }
        blocks
    }
}

impl Stream {
    /// Bytes held on the receive side (read buffer plus out-of-order packets); bounded by
    /// `rwnd_max` plus a small slack whatever the peer sends.
    pub fn recv_held(&self) -> usize {
        self.recv.held()
    }

    /// Out-of-order packets held (bounded by the reorder distance, 65536).
    pub fn recv_out_of_order(&self) -> usize {
        self.recv.ooo.len()
    }

    /// Bytes of space left in the receive window (what we advertise).
    pub fn recv_window(&self) -> u32 {
        self.recv.window(self.cfg.rwnd_max)
    }

    /// Reads in-order bytes. `Ok(0)` is the end of the stream (for a non-empty `buf`);
    /// `Blocked` means no data yet (wait for [`Event::Readable`](super::Event::Readable)).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.read_with(buf.len(), |src| {
            if let Some(dst) = buf.get_mut(..src.len()) {
                dst.copy_from_slice(src);
            }
        })
    }

    /// Like [`Stream::read`], but hands up to `max` in-order bytes to `take` (which must
    /// consume all of them) instead of copying into a slice: a caller with uninitialised
    /// buffer space copies once and never zero-fills it first.
    pub fn read_with(&mut self, max: usize, take: impl FnOnce(&[u8])) -> Result<usize, ReadError> {
        if max == 0 {
            return Ok(0);
        }
        if !self.recv.has_data() {
            if self.recv.ended {
                return Ok(0);
            }
            return Err(match self.closed {
                Some(CloseReason::Finished) => return Ok(0),
                Some(r) => ReadError::Closed(r),
                None => ReadError::Blocked,
            });
        }
        let n = self.recv.take(max, take);
        self.maybe_window_update();
        Ok(n)
    }

    pub(super) fn on_data(&mut self, h: Header, payload: &[u8], diff: u32) {
        if self.recv.on_data(h, payload, diff, self.cfg.rwnd_max) == Arrival::Dropped {
            self.stats.dropped += 1;
        }
    }

    pub(super) fn maybe_window_update(&mut self) {
        let now_rwnd = self.recv_window();
        let half = self.cfg.rwnd_max / 2;
        if self.recv.last_adv_rwnd < half && now_rwnd >= half && self.closed.is_none() {
            self.recv.ack_pending = true;
        }
    }

    pub(super) fn write_ack(&mut self, remote_id: u32, buf: &mut Vec<u8>) {
        let blocks = self.recv.sack_blocks();
        let f = if blocks.is_empty() { 0 } else { flags::SACK };
        let h = self.header(f, remote_id, 0);
        self.recv.last_adv_rwnd = h.rwnd;
        h.write(buf);
        for (s, e) in blocks {
            buf.extend_from_slice(&s.to_le_bytes());
            buf.extend_from_slice(&e.to_le_bytes());
        }
    }
}
