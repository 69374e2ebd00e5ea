//! The UDX packet codec: a 20-byte little-endian header, optional SACK blocks, `data_offset`
//! padding and the payload. Byte-exact with libudx (`udx_write_header` / `process_packet`).

use std::fmt;

/// Size of the fixed UDX header.
pub const HEADER_SIZE: usize = 20;
/// First byte of every UDX packet.
pub const MAGIC: u8 = 0xFF;
/// Second byte of every UDX packet.
pub const VERSION: u8 = 1;
/// Size of one SACK block on the wire (two u32 LE).
pub const SACK_BLOCK_SIZE: usize = 8;
/// Most SACK blocks we put in one ACK, as libudx (`UDX_MAX_SACKS`).
pub const MAX_SACK_BLOCKS: usize = 50;

/// Packet type bit flags (byte 2 of the header).
pub mod flags {
    /// Stream data; consumes one sequence number.
    pub const DATA: u8 = 0x01;
    /// The sender's write side ends at this sequence number; consumes one.
    pub const END: u8 = 0x02;
    /// SACK blocks follow the header.
    pub const SACK: u8 = 0x04;
    /// Unreliable datagram; does not consume a sequence number.
    pub const MESSAGE: u8 = 0x08;
    /// Abort the stream.
    pub const DESTROY: u8 = 0x10;
    /// Probe; the receiver answers with an ACK.
    pub const HEARTBEAT: u8 = 0x20;
}

/// Rewrites the receiver stream id in the header of the UDX packet in `packet` (what a relay
/// does before forwarding). False when `packet` is shorter than a header.
pub fn set_stream_id(packet: &mut [u8], stream_id: u32) -> bool {
    if packet.len() < HEADER_SIZE {
        return false;
    }
    match packet.get_mut(4..8) {
        Some(field) => {
            field.copy_from_slice(&stream_id.to_le_bytes());
            true
        }
        None => false,
    }
}

/// The fixed 20-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Type bit flags, see [`flags`].
    pub flags: u8,
    /// Bytes between the header (for SACK packets: the start of the SACK area) and the payload.
    pub data_offset: u8,
    /// The receiver's stream id.
    pub stream_id: u32,
    /// The sender's receive window: bytes of space left.
    pub rwnd: u32,
    /// The packet's sequence number.
    pub seq: u32,
    /// The next sequence number the sender expects (cumulative ack).
    pub ack: u32,
}

impl Header {
    /// Encodes the header into its 20-byte wire form.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0] = MAGIC;
        b[1] = VERSION;
        b[2] = self.flags;
        b[3] = self.data_offset;
        b[4..8].copy_from_slice(&self.stream_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.rwnd.to_le_bytes());
        b[12..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.ack.to_le_bytes());
        b
    }

    /// Appends the header to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.to_bytes());
    }

    /// Decodes a header; `None` when `bytes` is not a UDX packet (too short, bad magic/version).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let head: &[u8; HEADER_SIZE] = bytes.get(..HEADER_SIZE)?.try_into().ok()?;
        if head[0] != MAGIC || head[1] != VERSION {
            return None;
        }
        let u32_at = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&head[i..i + 4]);
            u32::from_le_bytes(w)
        };
        Some(Self {
            flags: head[2],
            data_offset: head[3],
            stream_id: u32_at(4),
            rwnd: u32_at(8),
            seq: u32_at(12),
            ack: u32_at(16),
        })
    }

    /// True when any of `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Why a datagram could not be parsed as a UDX packet body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than 20 bytes, or wrong magic/version: not UDX at all.
    #[error("not a UDX packet")]
    NotUdx,
    /// `data_offset` points past the end of the datagram.
    #[error("data_offset {data_offset} past the end ({remaining} bytes after the header)")]
    BadDataOffset {
        /// The header's data_offset.
        data_offset: u8,
        /// Bytes after the header.
        remaining: usize,
    },
}

/// A parsed packet borrowing the datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The fixed header.
    pub header: Header,
    sacks: &'a [u8],
    /// The payload (after `data_offset`).
    pub payload: &'a [u8],
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("header", &self.header)
            .field("sack_blocks", &self.sack_count())
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl<'a> Packet<'a> {
    /// Parses a datagram exactly as libudx's `process_packet` does.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PacketError> {
        let header = Header::decode(bytes).ok_or(PacketError::NotUdx)?;
        let rest = bytes.get(HEADER_SIZE..).ok_or(PacketError::NotUdx)?;
        let off = usize::from(header.data_offset);
        let sacks = if header.has(flags::SACK) {
            let area = if off > 0 && off < rest.len() {
                off
            } else {
                rest.len()
            };
            let n = area / SACK_BLOCK_SIZE;
            rest.get(..n * SACK_BLOCK_SIZE).unwrap_or(&[])
        } else {
            &[]
        };
        let payload = rest.get(off..).ok_or(PacketError::BadDataOffset {
            data_offset: header.data_offset,
            remaining: rest.len(),
        })?;
        Ok(Self {
            header,
            sacks,
            payload,
        })
    }

    /// Number of SACK blocks carried.
    pub fn sack_count(&self) -> usize {
        self.sacks.len() / SACK_BLOCK_SIZE
    }

    /// The SACK blocks `[start, end)`, in wire order.
    pub fn sacks(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.sacks.chunks_exact(SACK_BLOCK_SIZE).map(|c| {
            let mut s = [0u8; 4];
            let mut e = [0u8; 4];
            s.copy_from_slice(&c[..4]);
            e.copy_from_slice(&c[4..]);
            (u32::from_le_bytes(s), u32::from_le_bytes(e))
        })
    }
}

/// Wrap-around sequence difference `a - b` as libudx's `seq_diff` (signed 32-bit).
pub fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_data_packet() {
        let h = Header {
            flags: flags::DATA,
            data_offset: 0,
            stream_id: 2,
            rwnd: 4_194_304,
            seq: 0,
            ack: 0,
        };
        let mut buf = Vec::new();
        h.write(&mut buf);
        buf.extend_from_slice(b"hello");
        assert_eq!(
            hex::encode(&buf),
            "ff0101000200000000004000000000000000000068656c6c6f"
        );
        let p = Packet::parse(&buf).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.payload, b"hello");
    }

    #[test]
    fn spec_example_sack() {
        let bytes =
            hex::decode("ff010400443322110000400000000000030000000400000009000000").unwrap();
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.header.flags, flags::SACK);
        assert_eq!(p.header.stream_id, 0x1122_3344);
        assert_eq!(p.header.ack, 3);
        assert_eq!(p.sacks().collect::<Vec<_>>(), vec![(4, 9)]);
        assert!(p.payload.len() == 8, "SACK area is also past data_offset 0");
    }

    #[test]
    fn message_and_end_examples() {
        let bytes = hex::decode("ff01080002000000000040000100000000000000646772616d").unwrap();
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.header.flags, flags::MESSAGE);
        assert_eq!(p.header.seq, 1);
        assert_eq!(p.payload, b"dgram");
        let end = hex::decode("ff01020002000000000040009c08000000000000").unwrap();
        let p = Packet::parse(&end).unwrap();
        assert_eq!(p.header.flags, flags::END);
        assert_eq!(p.header.seq, 2204);
    }

    #[test]
    fn data_offset_padding_and_errors() {
        let mut buf = Header {
            flags: flags::DATA,
            data_offset: 3,
            stream_id: 1,
            rwnd: 0,
            seq: 0,
            ack: 0,
        }
        .to_bytes()
        .to_vec();
        buf.extend_from_slice(&[0, 0, 0, 7, 8]);
        assert_eq!(Packet::parse(&buf).unwrap().payload, &[7, 8]);
        buf.truncate(22);
        assert!(matches!(
            Packet::parse(&buf),
            Err(PacketError::BadDataOffset { .. })
        ));
        assert_eq!(Packet::parse(&buf[..19]), Err(PacketError::NotUdx));
        buf[1] = 2;
        assert_eq!(Packet::parse(&buf), Err(PacketError::NotUdx));
    }
}
