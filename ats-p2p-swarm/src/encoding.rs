//! compact-encoding (npm `compact-encoding` 3.5) as a checked reader and a growable writer.
//!
//! Peer bytes only go through [`Reader`]: every read is bounds-checked and returns
//! [`DecodeError`] instead of panicking. The writer always picks the shortest varint form; the
//! reader accepts every form, as the JavaScript decoder does.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// Largest element count an encoded array may announce (compact-encoding rejects more).
pub const MAX_ARRAY_LEN: u64 = 0x10_0000;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// An array announced more elements than [`MAX_ARRAY_LEN`] or the caller's cap.
    #[error("array too long")]
    ArrayTooLong,
    /// A value does not fit the integer type it is read into.
    #[error("integer out of range")]
    OutOfRange,
    /// A string is not valid UTF-8.
    #[error("invalid utf-8")]
    InvalidUtf8,
}

/// A cursor over peer bytes; every read is checked (rustls `Reader` style).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub const fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when every byte has been read.
    pub const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| DecodeError::UnexpectedEnd)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array::<1>()?))
    }

    /// Little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array::<2>()?))
    }

    /// Little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array::<4>()?))
    }

    /// Little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array::<8>()?))
    }

    /// The compact-encoding varint (`uint`): one byte, or `fd`/`fe`/`ff` + 2/4/8 bytes LE.
    pub fn uint(&mut self) -> Result<u64, DecodeError> {
        match self.u8()? {
            0xfd => Ok(u64::from(self.u16()?)),
            0xfe => Ok(u64::from(self.u32()?)),
            0xff => self.u64(),
            b => Ok(u64::from(b)),
        }
    }

    /// A varint that must fit a `u32`.
    pub fn uint32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.uint()?).map_err(|_| DecodeError::OutOfRange)
    }

    /// `fixed32`: 32 raw bytes.
    pub fn fixed32(&mut self) -> Result<[u8; 32], DecodeError> {
        self.array::<32>()
    }

    /// `fixed64`: 64 raw bytes.
    pub fn fixed64(&mut self) -> Result<[u8; 64], DecodeError> {
        self.array::<64>()
    }

    /// `buffer`: varint length + bytes.
    pub fn buffer(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.uint()?).map_err(|_| DecodeError::UnexpectedEnd)?;
        self.take(len)
    }

    /// `string`: varint byte length + UTF-8.
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.buffer()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// The element count of an `array`, checked against [`MAX_ARRAY_LEN`], against `cap`, and
    /// against the bytes left (each element takes at least `min_elem_len` bytes), so a caller can
    /// reserve the returned count without trusting the peer.
    pub fn array_len(&mut self, cap: usize, min_elem_len: usize) -> Result<usize, DecodeError> {
        let n = self.uint()?;
        if n > MAX_ARRAY_LEN {
            return Err(DecodeError::ArrayTooLong);
        }
        let n = usize::try_from(n).map_err(|_| DecodeError::ArrayTooLong)?;
        if n > cap {
            return Err(DecodeError::ArrayTooLong);
        }
        if n.saturating_mul(min_elem_len) > self.remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(n)
    }

    /// `ipv4Address`: 4 address bytes + port as `u16` LE.
    pub fn ipv4_address(&mut self) -> Result<SocketAddrV4, DecodeError> {
        let ip = Ipv4Addr::from(self.array::<4>()?);
        let port = self.u16()?;
        Ok(SocketAddrV4::new(ip, port))
    }

    /// `array(ipv4Address)` with at most `cap` elements.
    pub fn ipv4_array(&mut self, cap: usize) -> Result<Vec<SocketAddrV4>, DecodeError> {
        let n = self.array_len(cap, 6)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.ipv4_address()?);
        }
        Ok(out)
    }

    /// `ipv6Address`: 16 address bytes (network order) + port as `u16` LE.
    pub fn ipv6_address(&mut self) -> Result<SocketAddrV6, DecodeError> {
        let ip = Ipv6Addr::from(self.array::<16>()?);
        let port = self.u16()?;
        Ok(SocketAddrV6::new(ip, port, 0, 0))
    }

    /// `array(ipv6Address)` with at most `cap` elements.
    pub fn ipv6_array(&mut self, cap: usize) -> Result<Vec<SocketAddrV6>, DecodeError> {
        let n = self.array_len(cap, 18)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.ipv6_address()?);
        }
        Ok(out)
    }
}

/// A growable compact-encoding writer.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// The bytes written so far.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Raw bytes, no length prefix.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// Little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// The varint `uint`, shortest form.
    pub fn uint(&mut self, v: u64) -> &mut Self {
        if v <= 0xfc {
            self.buf.extend_from_slice(&v.to_le_bytes()[..1]);
        } else if let Ok(v16) = u16::try_from(v) {
            self.u8(0xfd).u16(v16);
        } else if let Ok(v32) = u32::try_from(v) {
            self.u8(0xfe).u32(v32);
        } else {
            self.u8(0xff).raw(&v.to_le_bytes());
        }
        self
    }

    /// `buffer`: varint length + bytes.
    pub fn buffer(&mut self, bytes: &[u8]) -> &mut Self {
        self.uint(bytes.len() as u64).raw(bytes)
    }

    /// `string`: varint byte length + UTF-8.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.buffer(s.as_bytes())
    }

    /// `ipv4Address`.
    pub fn ipv4_address(&mut self, addr: &SocketAddrV4) -> &mut Self {
        self.raw(&addr.ip().octets()).u16(addr.port())
    }

    /// `array(ipv4Address)`.
    pub fn ipv4_array(&mut self, addrs: &[SocketAddrV4]) -> &mut Self {
        self.uint(addrs.len() as u64);
        for a in addrs {
            self.ipv4_address(a);
        }
        self
    }

    /// `ipv6Address`.
    pub fn ipv6_address(&mut self, addr: &SocketAddrV6) -> &mut Self {
        self.raw(&addr.ip().octets()).u16(addr.port())
    }

    /// `array(ipv6Address)`.
    pub fn ipv6_array(&mut self, addrs: &[SocketAddrV6]) -> &mut Self {
        self.uint(addrs.len() as u64);
        for a in addrs {
            self.ipv6_address(a);
        }
        self
    }
}

/// `ipv4Address` of `addr` as 6 bytes.
pub fn ipv4_bytes(addr: &SocketAddrV4) -> [u8; 6] {
    let o = addr.ip().octets();
    let p = addr.port().to_le_bytes();
    [o[0], o[1], o[2], o[3], p[0], p[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_forms() {
        for (v, bytes) in [
            (0u64, &[0u8][..]),
            (0xfc, &[0xfc]),
            (0xfd, &[0xfd, 0xfd, 0x00]),
            (300, &[0xfd, 0x2c, 0x01]),
            (70000, &[0xfe, 0x70, 0x11, 0x01, 0x00]),
            (1 << 40, &[0xff, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut w = Writer::new();
            w.uint(v);
            assert_eq!(w.into_vec(), bytes, "{v}");
            assert_eq!(Reader::new(bytes).uint().unwrap(), v);
        }
        // Non-shortest forms decode too.
        assert_eq!(Reader::new(&[0xfe, 5, 0, 0, 0]).uint().unwrap(), 5);
        assert_eq!(
            Reader::new(&[0xfd, 5]).uint(),
            Err(DecodeError::UnexpectedEnd)
        );
    }

    #[test]
    fn ipv4_le_port() {
        let a: SocketAddrV4 = "10.1.2.3:49737".parse().unwrap();
        assert_eq!(ipv4_bytes(&a), [10, 1, 2, 3, 0x49, 0xc2]);
        assert_eq!(Reader::new(&ipv4_bytes(&a)).ipv4_address().unwrap(), a);
    }

    #[test]
    fn array_caps() {
        let mut r = Reader::new(&[0xfe, 0x01, 0x00, 0x20, 0x00]);
        assert_eq!(r.array_len(usize::MAX, 0), Err(DecodeError::ArrayTooLong));
        let mut r = Reader::new(&[3, 1, 2, 3, 4, 5, 6]);
        assert_eq!(r.ipv4_array(10), Err(DecodeError::UnexpectedEnd));
        let mut r = Reader::new(&[3]);
        assert_eq!(r.ipv4_array(2), Err(DecodeError::ArrayTooLong));
    }
}
