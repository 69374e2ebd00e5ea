//! Fuzz target bodies, shared by `fuzz/` and by this crate's property tests
//! (`tests/fuzz_targets.rs`), so that CI runs the same checks on the stable toolchain.
//!
//! Each function takes arbitrary bytes, drives the entry point production uses for peer bytes,
//! and panics only if an invariant is broken. Not part of the API.
//!
//! One file per target family (`encoding`, `udx`, `dht`, `hyperdht`, `noise`, `secret_stream`);
//! this file holds the byte cursor they read their input with.

mod dht;
mod encoding;
mod hyperdht;
mod noise;
mod secret_stream;
mod udx;

pub use self::dht::dht_messages;
pub use self::encoding::compact_encoding;
pub use self::hyperdht::hyperdht_messages;
pub use self::noise::noise_ik;
pub use self::secret_stream::secret_stream;
pub use self::udx::udx_packets;

/// Reads the fuzz input as a byte cursor; reads past the end give zeros / empty slices.
#[derive(Debug)]
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
