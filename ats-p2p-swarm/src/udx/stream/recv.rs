//! Receive side of [`Stream`]: reassembly within the window, delivery, ACK/SACK generation.

use bytes::Bytes;

use super::{MAX_REORDER_DISTANCE, RECV_SLACK, Stream};
use crate::udx::packet::{Header, MAX_SACK_BLOCKS, flags};

impl Stream {
    pub(super) fn on_data(&mut self, h: Header, payload: &[u8], diff: u32) {
        if diff >= MAX_REORDER_DISTANCE {
            self.stats.dropped += 1;
            return;
        }
        let ext = self.recv_next + u64::from(diff);
        let held = self.recv_buf.len() + self.ooo_bytes;
        let cap = (self.cfg.rwnd_max as usize).saturating_add(RECV_SLACK);
        if held.saturating_add(payload.len()) > cap {
            self.stats.dropped += 1;
            self.ack_pending = true;
            return;
        }
        let data = if h.has(flags::DATA) { payload } else { &[] };
        if diff == 0 {
            self.deliver(h.flags, data);
            while let Some(entry) = self.ooo.first_entry() {
                if *entry.key() != self.recv_next {
                    break;
                }
                let (f, bytes) = entry.remove();
                self.ooo_bytes -= bytes.len();
                self.deliver(f, &bytes);
            }
        } else if let std::collections::btree_map::Entry::Vacant(v) = self.ooo.entry(ext) {
            self.ooo_bytes += data.len();
            v.insert((h.flags, Bytes::copy_from_slice(data)));
        } else {
            self.stats.dropped += 1;
        }
    }

    pub(super) fn deliver(&mut self, f: u8, data: &[u8]) {
        if self.remote_ended {
            // Nothing is delivered past the END.
            self.recv_next += 1;
            return;
        }
        if f & flags::DATA != 0 && !data.is_empty() {
            self.recv_buf.extend_from_slice(data);
            self.readable_event = true;
        }
        if f & flags::END != 0 {
            self.remote_end = Some(self.recv_next);
            self.remote_ended = true;
            self.readable_event = true;
        }
        self.recv_next += 1;
    }

    pub(super) fn maybe_window_update(&mut self) {
        let now_rwnd = self.recv_window();
        let half = self.cfg.rwnd_max / 2;
        if self.last_adv_rwnd < half && now_rwnd >= half && self.closed.is_none() {
            self.ack_pending = true;
        }
    }

    pub(super) fn write_ack(&mut self, remote_id: u32, buf: &mut Vec<u8>) {
        let mut blocks: Vec<(u32, u32)> = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        let limit = self.recv_next + u64::from(MAX_REORDER_DISTANCE);
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
        if let Some((s, e)) = run {
            if blocks.len() < MAX_SACK_BLOCKS {
                blocks.push((s as u32, e as u32));
            }
        }
        let f = if blocks.is_empty() { 0 } else { flags::SACK };
        let h = self.header(f, remote_id, 0);
        self.last_adv_rwnd = h.rwnd;
        h.write(buf);
        for (s, e) in blocks {
            buf.extend_from_slice(&s.to_le_bytes());
            buf.extend_from_slice(&e.to_le_bytes());
        }
    }
}
