//! HyperDHT message codecs (hyperdht 6.34 `lib/messages.js`).

use std::net::{SocketAddrV4, SocketAddrV6};

use crate::encoding::{DecodeError, Reader, Writer};

/// Most relay addresses kept per peer record (hyperdht truncates to 3 on store).
pub const MAX_RELAY_ADDRESSES: usize = 3;
/// Largest address array accepted in any HyperDHT message.
pub const MAX_ADDRESSES: usize = 64;
/// Largest peer array accepted in a lookup reply (nodes return at most 20).
pub const MAX_LOOKUP_PEERS: usize = 64;

/// A peer record: public key and relay addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// DHT nodes that relay handshakes to this peer.
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl PeerRecord {
    /// Encodes `fixed32 ‖ array(ipv4Address)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }

    fn write(&self, w: &mut Writer) {
        w.raw(&self.public_key).ipv4_array(&self.relay_addresses);
    }

    /// Reads one record.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            public_key: r.fixed32()?,
            relay_addresses: r.ipv4_array(MAX_ADDRESSES)?,
        })
    }

    /// Decodes one record.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        Self::read(&mut Reader::new(buf))
    }
}

/// ANNOUNCE / UNANNOUNCE value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announce {
    /// The record.
    pub peer: Option<PeerRecord>,
    /// Refresh token.
    pub refresh: Option<[u8; 32]>,
    /// Ed25519 signature.
    pub signature: Option<[u8; 64]>,
    /// Bump timestamp (0 = none).
    pub bump: u64,
}

impl Announce {
    /// Encodes the announce.
    pub fn encode(&self) -> Vec<u8> {
        let flags = u64::from(self.peer.is_some())
            | (u64::from(self.refresh.is_some()) << 1)
            | (u64::from(self.signature.is_some()) << 2)
            | (u64::from(self.bump != 0) << 3);
        let mut w = Writer::new();
        w.uint(flags);
        if let Some(p) = &self.peer {
            p.write(&mut w);
        }
        if let Some(r) = &self.refresh {
            w.raw(r);
        }
        if let Some(s) = &self.signature {
            w.raw(s);
        }
        if self.bump != 0 {
            w.uint(self.bump);
        }
        w.into_vec()
    }

    /// Decodes an announce.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        Ok(Self {
            peer: if flags & 1 != 0 {
                Some(PeerRecord::read(&mut r)?)
            } else {
                None
            },
            refresh: if flags & 2 != 0 {
                Some(r.fixed32()?)
            } else {
                None
            },
            signature: if flags & 4 != 0 {
                Some(r.fixed64()?)
            } else {
                None
            },
            bump: if flags & 8 != 0 { r.uint()? } else { 0 },
        })
    }
}

/// LOOKUP reply value: `array(peer) ‖ uint bump`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupReply {
    /// Records.
    pub peers: Vec<PeerRecord>,
    /// Bump.
    pub bump: u64,
}

impl LookupReply {
    /// Encodes from already-encoded records (as stored).
    pub fn encode_raw(records: &[&[u8]], bump: u64) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(records.len() as u64);
        for r in records {
            w.raw(r);
        }
        w.uint(bump);
        w.into_vec()
    }

    /// Decodes (bump only if bytes remain).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let n = r.array_len(MAX_LOOKUP_PEERS, 33)?;
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            peers.push(PeerRecord::read(&mut r)?);
        }
        let bump = if r.is_empty() { 0 } else { r.uint()? };
        Ok(Self { peers, bump })
    }
}

/// Relay mode of PEER_HANDSHAKE / PEER_HOLEPUNCH (`lib/router.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Client → relay (or server).
    FromClient,
    /// Server → relay.
    FromServer,
    /// Relay → server.
    FromRelay,
    /// Relay → second relay.
    FromSecondRelay,
    /// Relay → client (as a response).
    Reply,
    /// Any other value.
    Other(u64),
}

impl Mode {
    /// Wire value.
    pub fn to_u64(self) -> u64 {
        match self {
            Self::FromClient => 0,
            Self::FromServer => 1,
            Self::FromRelay => 2,
            Self::FromSecondRelay => 3,
            Self::Reply => 4,
            Self::Other(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u64(v: u64) -> Self {
        match v {
            0 => Self::FromClient,
            1 => Self::FromServer,
            2 => Self::FromRelay,
            3 => Self::FromSecondRelay,
            4 => Self::Reply,
            v => Self::Other(v),
        }
    }
}

/// PEER_HANDSHAKE value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Relay mode.
    pub mode: Mode,
    /// Noise message.
    pub noise: Vec<u8>,
    /// The other peer's address (meaning depends on mode).
    pub peer_address: Option<SocketAddrV4>,
    /// Relay address (second-relay routing).
    pub relay_address: Option<SocketAddrV4>,
}

impl Handshake {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let flags =
            u64::from(self.peer_address.is_some()) | (u64::from(self.relay_address.is_some()) << 1);
        let mut w = Writer::new();
        w.uint(flags).uint(self.mode.to_u64()).buffer(&self.noise);
        if let Some(a) = &self.peer_address {
            w.ipv4_address(a);
        }
        if let Some(a) = &self.relay_address {
            w.ipv4_address(a);
        }
        w.into_vec()
    }

    /// Decodes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        let mode = Mode::from_u64(r.uint()?);
        let noise = r.buffer()?.to_vec();
        Ok(Self {
            mode,
            noise,
            peer_address: if flags & 1 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
            relay_address: if flags & 2 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
        })
    }
}

/// PEER_HOLEPUNCH value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holepunch {
    /// Relay mode.
    pub mode: Mode,
    /// Server-side holepunch slot id.
    pub id: u64,
    /// Encrypted [`HolepunchPayload`].
    pub payload: Vec<u8>,
    /// The other peer's address.
    pub peer_address: Option<SocketAddrV4>,
}

impl Holepunch {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(u64::from(self.peer_address.is_some()))
            .uint(self.mode.to_u64())
            .uint(self.id)
            .buffer(&self.payload);
        if let Some(a) = &self.peer_address {
            w.ipv4_address(a);
        }
        w.into_vec()
    }

    /// Decodes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        Ok(Self {
            mode: Mode::from_u64(r.uint()?),
            id: r.uint()?,
            payload: r.buffer()?.to_vec(),
            peer_address: if flags & 1 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
        })
    }
}

/// One entry of the server's holepunch relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayInfo {
    /// The relay node.
    pub relay_address: SocketAddrV4,
    /// The server's address as that relay saw it.
    pub peer_address: SocketAddrV4,
}

/// Holepunch info in the Noise payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolepunchInfo {
    /// Slot id.
    pub id: u64,
    /// Relays.
    pub relays: Vec<RelayInfo>,
}

/// UDX info in the Noise payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdxInfo {
    /// Version (1).
    pub version: u64,
    /// Feature bit 0.
    pub reusable_socket: bool,
    /// Raw stream id.
    pub id: u64,
    /// Initial sequence (0).
    pub seq: u64,
}

/// Blind-relay info in the Noise payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayThroughInfo {
    /// Version (1).
    pub version: u64,
    /// Relay server key.
    pub public_key: [u8; 32],
    /// Pairing token.
    pub token: [u8; 32],
}

/// The payload carried inside the Noise IK handshake messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisePayload {
    /// Version; only 1 is decoded fully.
    pub version: u64,
    /// Error code.
    pub error: u64,
    /// Firewall type.
    pub firewall: u64,
    /// Holepunch info.
    pub holepunch: Option<HolepunchInfo>,
    /// IPv4 addresses.
    pub addresses4: Vec<SocketAddrV4>,
    /// IPv6 addresses.
    pub addresses6: Vec<SocketAddrV6>,
    /// UDX info.
    pub udx: Option<UdxInfo>,
    /// Secret stream version, if present.
    pub secret_stream: Option<u64>,
    /// Blind relay.
    pub relay_through: Option<RelayThroughInfo>,
    /// Relay addresses.
    pub relay_addresses: Option<Vec<SocketAddrV4>>,
}

impl NoisePayload {
    /// Encodes (version is always written as 1).
    pub fn encode(&self) -> Vec<u8> {
        let flags = u64::from(self.holepunch.is_some())
            | (u64::from(!self.addresses4.is_empty()) << 1)
            | (u64::from(!self.addresses6.is_empty()) << 2)
            | (u64::from(self.udx.is_some()) << 3)
            | (u64::from(self.secret_stream.is_some()) << 4)
            | (u64::from(self.relay_through.is_some()) << 5)
            | (u64::from(self.relay_addresses.is_some()) << 6);
        let mut w = Writer::new();
        w.uint(1).uint(flags).uint(self.error).uint(self.firewall);
        if let Some(h) = &self.holepunch {
            w.uint(h.id).uint(h.relays.len() as u64);
            for r in &h.relays {
                w.ipv4_address(&r.relay_address)
                    .ipv4_address(&r.peer_address);
            }
        }
        if !self.addresses4.is_empty() {
            w.ipv4_array(&self.addresses4);
        }
        if !self.addresses6.is_empty() {
            w.ipv6_array(&self.addresses6);
        }
        if let Some(u) = &self.udx {
            w.uint(1)
                .uint(u64::from(u.reusable_socket))
                .uint(u.id)
                .uint(u.seq);
        }
        if self.secret_stream.is_some() {
            w.uint(1);
        }
        if let Some(r) = &self.relay_through {
            w.uint(1).uint(0).raw(&r.public_key).raw(&r.token);
        }
        if let Some(a) = &self.relay_addresses {
            w.ipv4_array(a);
        }
        w.into_vec()
    }

    /// Decodes; a version other than 1 returns only the version.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.uint()?;
        let mut out = Self {
            version,
            error: 0,
            firewall: 0,
            holepunch: None,
            addresses4: Vec::new(),
            addresses6: Vec::new(),
            udx: None,
            secret_stream: None,
            relay_through: None,
            relay_addresses: None,
        };
        if version != 1 {
            return Ok(out);
        }
        let flags = r.uint()?;
        out.error = r.uint()?;
        out.firewall = r.uint()?;
        if flags & 1 != 0 {
            let id = r.uint()?;
            let n = r.array_len(MAX_ADDRESSES, 12)?;
            let mut relays = Vec::with_capacity(n);
            for _ in 0..n {
                relays.push(RelayInfo {
                    relay_address: r.ipv4_address()?,
                    peer_address: r.ipv4_address()?,
                });
            }
            out.holepunch = Some(HolepunchInfo { id, relays });
        }
        if flags & 2 != 0 {
            out.addresses4 = r.ipv4_array(MAX_ADDRESSES)?;
        }
        if flags & 4 != 0 {
            out.addresses6 = r.ipv6_array(MAX_ADDRESSES)?;
        }
        if flags & 8 != 0 {
            let version = r.uint()?;
            let features = r.uint()?;
            out.udx = Some(UdxInfo {
                version,
                reusable_socket: features & 1 != 0,
                id: r.uint()?,
                seq: r.uint()?,
            });
        }
        if flags & 16 != 0 {
            out.secret_stream = Some(r.uint()?);
        }
        if flags & 32 != 0 {
            let version = r.uint()?;
            let _flags = r.uint()?;
            out.relay_through = Some(RelayThroughInfo {
                version,
                public_key: r.fixed32()?,
                token: r.fixed32()?,
            });
        }
        if flags & 64 != 0 {
            out.relay_addresses = Some(r.ipv4_array(MAX_ADDRESSES)?);
        }
        Ok(out)
    }
}

/// The (decrypted) holepunch payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolepunchPayload {
    /// Error code.
    pub error: u64,
    /// Firewall type.
    pub firewall: u64,
    /// Round number.
    pub round: u64,
    /// The sender is connected.
    pub connected: bool,
    /// The sender is punching.
    pub punching: bool,
    /// Sender's addresses.
    pub addresses: Option<Vec<SocketAddrV4>>,
    /// The receiver's address as the sender sees it.
    pub remote_address: Option<SocketAddrV4>,
    /// Sender's token.
    pub token: Option<[u8; 32]>,
    /// Echo of the receiver's token.
    pub remote_token: Option<[u8; 32]>,
}

impl HolepunchPayload {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let flags = u64::from(self.connected)
            | (u64::from(self.punching) << 1)
            | (u64::from(self.addresses.is_some()) << 2)
            | (u64::from(self.remote_address.is_some()) << 3)
            | (u64::from(self.token.is_some()) << 4)
            | (u64::from(self.remote_token.is_some()) << 5);
        let mut w = Writer::new();
        w.uint(flags)
            .uint(self.error)
            .uint(self.firewall)
            .uint(self.round);
        if let Some(a) = &self.addresses {
            w.ipv4_array(a);
        }
        if let Some(a) = &self.remote_address {
            w.ipv4_address(a);
        }
        if let Some(t) = &self.token {
            w.raw(t);
        }
        if let Some(t) = &self.remote_token {
            w.raw(t);
        }
        w.into_vec()
    }

    /// Decodes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let flags = r.uint()?;
        Ok(Self {
            error: r.uint()?,
            firewall: r.uint()?,
            round: r.uint()?,
            connected: flags & 1 != 0,
            punching: flags & 2 != 0,
            addresses: if flags & 4 != 0 {
                Some(r.ipv4_array(MAX_ADDRESSES)?)
            } else {
                None
            },
            remote_address: if flags & 8 != 0 {
                Some(r.ipv4_address()?)
            } else {
                None
            },
            token: if flags & 16 != 0 {
                Some(r.fixed32()?)
            } else {
                None
            },
            remote_token: if flags & 32 != 0 {
                Some(r.fixed32()?)
            } else {
                None
            },
        })
    }
}
