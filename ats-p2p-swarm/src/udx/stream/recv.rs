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
/// How far a SACK block around a recent arrival is grown each way (blocks need not be maximal:
/// any received range is true; this bounds the work per ACK).
const RECENT_BLOCK_REACH: u64 = 256;
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
    /// Out-of-order arrivals since the last ACK, newest last (at most [`MAX_SACK_BLOCKS`]).
    recent: VecDeque<u64>,
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
            recent: VecDeque::new(),
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
            self.note_recent(ext);
            Arrival::Accepted
        } else {
            // A duplicate: the sender retransmitted what it could not see in our SACKs (the ACK
            // that reported it was lost, or it lay past the blocks we report). Report it now,
            // or it is retransmitted again every round trip.
            self.note_recent(ext);
            Arrival::Dropped
        }
    }

    /// Out-of-order packet `ext` arrived: the next ACK reports its block first.
    fn note_recent(&mut self, ext: u64) {
        if self.recent.len() >= MAX_SACK_BLOCKS {
            self.recent.pop_front();
        }
        self.recent.push_back(ext);
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

    /// SACK blocks `[start, end)` for the out-of-order packets, at most [`MAX_SACK_BLOCKS`]:
    /// first the ranges around the packets that arrived since the last ACK (newest first, as
    /// RFC 2018 asks), then the lowest ones. Reporting only the lowest 50 (as libudx does)
    /// hid every arrival beyond the 50th hole, and the sender's RACK retransmitted them;
    /// clears the record of recent arrivals.
    pub(super) fn take_sack_blocks(&mut self) -> Vec<(u32, u32)> {
        let mut recent: Vec<(u64, u64)> = Vec::new();
        for &k in self.recent.iter().rev() {
            let known = recent.iter().any(|&(s, e)| s <= k && k < e);
            if known || k < self.next || !self.ooo.contains_key(&k) {
                continue;
            }
            let mut start = k;
            while k - start < RECENT_BLOCK_REACH
                && start > self.next
                && self.ooo.contains_key(&(start - 1))
            {
                start -= 1;
            }
            let mut end = k + 1;
            while end - k < RECENT_BLOCK_REACH && self.ooo.contains_key(&end) {
                end += 1;
            }
            recent.push((start, end));
        }
        self.recent.clear();
        let mut blocks: Vec<(u32, u32)> =
            recent.iter().map(|&(s, e)| (s as u32, e as u32)).collect();
        for block in self.lowest_sack_blocks() {
            if blocks.len() >= MAX_SACK_BLOCKS {
                break;
            }
            if !blocks.contains(&block) {
                blocks.push(block);
            }
        }
        blocks
    }

    /// SACK blocks `[start, end)` for the lowest out-of-order runs, at most [`MAX_SACK_BLOCKS`].
    fn lowest_sack_blocks(&self) -> Vec<(u32, u32)> {
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
        let blocks = self.recv.take_sack_blocks();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: u32) -> Header {
        Header {
            flags: flags::DATA,
            data_offset: 0,
            stream_id: 1,
            rwnd: 0,
            seq,
            ack: 0,
        }
    }

    #[test]
    fn acks_report_recent_arrivals_beyond_the_lowest_fifty_holes() {
        let mut r = RecvState::new(1 << 30);
        // 100 holes: every odd packet arrived, every even one is missing.
        for seq in (1..200u32).step_by(2) {
            assert_eq!(r.on_data(data(seq), b"x", seq, 1 << 30), Arrival::Accepted);
        }
        let first = r.take_sack_blocks();
        assert_eq!(first.len(), MAX_SACK_BLOCKS);
        assert_eq!(first[0], (199, 200), "the newest arrival comes first");
        // One more arrival far beyond the 50th hole: it is reported, with the lowest blocks.
        assert_eq!(r.on_data(data(301), b"x", 301, 1 << 30), Arrival::Accepted);
        let blocks = r.take_sack_blocks();
        assert_eq!(blocks.len(), MAX_SACK_BLOCKS);
        assert_eq!(blocks[0], (301, 302));
        assert_eq!(blocks[1], (1, 2));
        assert_eq!(blocks[MAX_SACK_BLOCKS - 1], (97, 98));
        // Nothing new: just the lowest blocks.
        let idle = r.take_sack_blocks();
        assert_eq!(idle[0], (1, 2));
        // A recent arrival that joins a run is reported as the whole run.
        assert_eq!(r.on_data(data(302), b"x", 302, 1 << 30), Arrival::Accepted);
        assert_eq!(r.take_sack_blocks()[0], (301, 303));
        // A duplicate (a retransmission of something already held) is reported again at once.
        assert_eq!(r.on_data(data(151), b"x", 151, 1 << 30), Arrival::Dropped);
        assert_eq!(r.take_sack_blocks()[0], (151, 152));
    }
}
