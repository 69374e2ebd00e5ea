//! dht-rpc request and response datagrams (dht-rpc 6.27 `lib/io.js`, protocol version 3).

use std::net::SocketAddrV4;

use crate::encoding::{DecodeError, Reader, Writer};

/// First byte of a request: `(0 << 4) | 3`.
pub const REQUEST_ID: u8 = 0x03;
/// First byte of a response: `(1 << 4) | 3`.
pub const RESPONSE_ID: u8 = 0x13;
/// Largest closer-nodes array we accept in a response (k = 20, with slack for other versions).
pub const MAX_CLOSER_NODES: usize = 64;

/// A 32-byte node id, target, or token.
pub type Id = [u8; 32];

/// A dht-rpc request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Transaction id, echoed by the response.
    pub tid: u16,
    /// The address the request is sent to, as the sender sees it.
    pub to: SocketAddrV4,
    /// The sender's node id (only persistent nodes on their server socket send it).
    pub id: Option<Id>,
    /// A token previously received from the recipient.
    pub token: Option<Id>,
    /// True for dht-rpc's own commands, false for application (HyperDHT) commands.
    pub internal: bool,
    /// The command number.
    pub command: u64,
    /// The query target.
    pub target: Option<Id>,
    /// The command's value.
    pub value: Option<Vec<u8>>,
}

/// A dht-rpc response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Transaction id of the request.
    pub tid: u16,
    /// The requester's address as the responder saw it (a NAT sample).
    pub to: SocketAddrV4,
    /// The responder's node id.
    pub id: Option<Id>,
    /// A token for later requests to the responder.
    pub token: Option<Id>,
    /// Nodes closer to the target.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code, 0 for none.
    pub error: u64,
    /// The reply value.
    pub value: Option<Vec<u8>>,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Request {
    /// Encodes the datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            11 + 96 + self.value.as_ref().map_or(0, |v| v.len().saturating_add(9)),
        );
        let flags = u64::from(self.id.is_some())
            | (u64::from(self.token.is_some()) << 1)
            | (u64::from(self.internal) << 2)
            | (u64::from(self.target.is_some()) << 3)
            | (u64::from(self.value.is_some()) << 4);
        w.u8(REQUEST_ID)
            .uint(flags)
            .u16(self.tid)
            .ipv4_address(&self.to);
        if let Some(id) = &self.id {
            w.raw(id);
        }
        if let Some(t) = &self.token {
            w.raw(t);
        }
        w.uint(self.command);
        if let Some(t) = &self.target {
            w.raw(t);
        }
        if let Some(v) = &self.value {
            w.buffer(v);
        }
        w.into_vec()
    }
}

impl Response {
    /// Encodes the datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            11 + 64
                + self.closer_nodes.len().saturating_mul(6)
                + self.value.as_ref().map_or(0, |v| v.len().saturating_add(9)),
        );
        let flags = u64::from(self.id.is_some())
            | (u64::from(self.token.is_some()) << 1)
            | (u64::from(!self.closer_nodes.is_empty()) << 2)
            | (u64::from(self.error > 0) << 3)
            | (u64::from(self.value.is_some()) << 4);
        w.u8(RESPONSE_ID)
            .uint(flags)
            .u16(self.tid)
            .ipv4_address(&self.to);
        if let Some(id) = &self.id {
            w.raw(id);
        }
        if let Some(t) = &self.token {
            w.raw(t);
        }
        if !self.closer_nodes.is_empty() {
            w.ipv4_array(&self.closer_nodes);
        }
        if self.error > 0 {
            w.uint(self.error);
        }
        if let Some(v) = &self.value {
            w.buffer(v);
        }
        w.into_vec()
    }
}

impl Message {
    /// Decodes a datagram. Trailing bytes are ignored, as dht-rpc does.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        match r.u8()? {
            REQUEST_ID => {
                let flags = r.uint()?;
                let tid = r.u16()?;
                let to = r.ipv4_address()?;
                let id = if flags & 1 != 0 {
                    Some(r.fixed32()?)
                } else {
                    None
                };
                let token = if flags & 2 != 0 {
                    Some(r.fixed32()?)
                } else {
                    None
                };
                let internal = flags & 4 != 0;
                let command = r.uint()?;
                let target = if flags & 8 != 0 {
                    Some(r.fixed32()?)
                } else {
                    None
                };
                let value = if flags & 16 != 0 {
                    Some(r.buffer()?.to_vec())
                } else {
                    None
                };
                Ok(Self::Request(Request {
                    tid,
                    to,
                    id,
                    token,
                    internal,
                    command,
                    target,
                    value,
                }))
            }
            RESPONSE_ID => {
                let flags = r.uint()?;
                let tid = r.u16()?;
                let to = r.ipv4_address()?;
                let id = if flags & 1 != 0 {
                    Some(r.fixed32()?)
                } else {
                    None
                };
                let token = if flags & 2 != 0 {
                    Some(r.fixed32()?)
                } else {
                    None
                };
                let closer_nodes = if flags & 4 != 0 {
                    r.ipv4_array(MAX_CLOSER_NODES)?
                } else {
                    Vec::new()
                };
                let error = if flags & 8 != 0 { r.uint()? } else { 0 };
                let value = if flags & 16 != 0 {
                    Some(r.buffer()?.to_vec())
                } else {
                    None
                };
                Ok(Self::Response(Response {
                    tid,
                    to,
                    id,
                    token,
                    closer_nodes,
                    error,
                    value,
                }))
            }
            _ => Err(DecodeError::OutOfRange),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_is_eleven_bytes() {
        let req = Request {
            tid: 0x0102,
            to: "127.0.0.1:49737".parse().unwrap(),
            id: None,
            token: None,
            internal: true,
            command: 0,
            target: None,
            value: None,
        };
        let bytes = req.encode();
        assert_eq!(bytes, [3, 4, 2, 1, 127, 0, 0, 1, 0x49, 0xc2, 0]);
        assert_eq!(Message::decode(&bytes).unwrap(), Message::Request(req));
    }

    #[test]
    fn response_round_trip() {
        let res = Response {
            tid: 7,
            to: "1.2.3.4:5".parse().unwrap(),
            id: Some([1; 32]),
            token: Some([2; 32]),
            closer_nodes: vec!["9.9.9.9:9".parse().unwrap()],
            error: 2,
            value: Some(vec![1, 2, 3]),
        };
        assert_eq!(
            Message::decode(&res.encode()).unwrap(),
            Message::Response(res)
        );
    }
}
