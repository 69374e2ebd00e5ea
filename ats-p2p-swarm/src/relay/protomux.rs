//! Protomux (npm `protomux` 3.x) as a sans-io codec plus the state of one channel.
//!
//! Each protomux frame is exactly one message of the underlying message stream (one secret
//! stream message). A frame is `uint channel ‖ uint type ‖ body`. Channel 0 is the control
//! channel: type 0 batch, 1 open (`uint localId ‖ string protocol ‖ buffer id ‖ [handshake]`),
//! 2 reject (`uint remoteId`), 3 close (`uint localId`). Any other channel number is the
//! *sender's* local id of an open channel; the receiver maps it to its own channel.
//!
//! A batch (`0 ‖ 0 ‖ uint channel ‖ (uint len ‖ len bytes)* `, where `len = 0` is followed by a
//! new `uint channel`) carries several `uint type ‖ body` messages in one frame.
//!
//! [`Channel`] is the one channel a blind-relay client or server session needs: it matches the
//! peer's open of the same `(protocol, id)`, rejects every other open (protomux does the same
//! when nobody listens for that protocol), and turns frames into [`ChannelEvent`]s.

use crate::encoding::{DecodeError, Reader, Writer};

/// Control channel message types (channel 0).
pub mod control {
    /// Several messages in one frame.
    pub const BATCH: u64 = 0;
    /// Open a channel.
    pub const OPEN: u64 = 1;
    /// Refuse the peer's open.
    pub const REJECT: u64 = 2;
    /// Close a channel.
    pub const CLOSE: u64 = 3;
}

/// Most messages taken from one batch frame (a frame is at most one secret-stream message, so
/// this only bounds the work per frame; JS has no limit).
pub const MAX_BATCH_MESSAGES: usize = 1024;

/// Malformed protomux input. The session that sent it is closed (protomux destroys the stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtomuxError {
    /// A field could not be decoded.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// An empty frame where one was required (inside a batch).
    #[error("empty message")]
    Empty,
    /// A batch inside a batch.
    #[error("nested batch")]
    NestedBatch,
    /// A batch with more than [`MAX_BATCH_MESSAGES`] messages.
    #[error("batch of more than {MAX_BATCH_MESSAGES} messages")]
    BatchTooLong,
    /// An open for channel id 0 or an id that is already open (protomux: "Invalid open
    /// message").
    #[error("invalid open of channel {0}")]
    InvalidOpen(u64),
}

/// One decoded protomux message (batches are flattened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The peer opens its channel `local_id` for `(protocol, id)`.
    Open {
        /// The peer's id for the channel (it sends its messages with it).
        local_id: u64,
        /// Protocol name.
        protocol: &'a str,
        /// Channel id (the blind relay uses a public key).
        id: &'a [u8],
        /// Handshake bytes, empty when the protocol has none.
        handshake: &'a [u8],
    },
    /// The peer refuses our channel `local_id` (our id).
    Reject {
        /// Our channel id.
        local_id: u64,
    },
    /// The peer closes its channel `remote_id` (the peer's id).
    Close {
        /// The peer's channel id.
        remote_id: u64,
    },
    /// An unknown control message type (ignored, as protomux does).
    UnknownControl(u64),
    /// A channel message.
    Message {
        /// The peer's channel id.
        remote_id: u64,
        /// Message type within the channel's protocol.
        kind: u64,
        /// The encoded message.
        body: &'a [u8],
    },
}

/// Decodes one frame into its messages (a batch yields several). An empty frame yields none
/// (protomux ignores empty frames).
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Frame<'_>>, ProtomuxError> {
    let mut out = Vec::new();
    if frame.is_empty() {
        return Ok(out);
    }
    let mut r = Reader::new(frame);
    let channel = r.uint()?;
    decode_message(channel, &mut r, &mut out, false)?;
    Ok(out)
}

/// Decodes `uint type ‖ body` for `channel` (the rest of `r`).
fn decode_message<'a>(
    channel: u64,
    r: &mut Reader<'a>,
    out: &mut Vec<Frame<'a>>,
    in_batch: bool,
) -> Result<(), ProtomuxError> {
    let kind = r.uint()?;
    if channel != 0 {
        let body = r.take(r.remaining())?;
        out.push(Frame::Message {
            remote_id: channel,
            kind,
            body,
        });
        return Ok(());
    }
    match kind {
        control::BATCH if in_batch => return Err(ProtomuxError::NestedBatch),
        control::BATCH => {
            let mut channel = r.uint()?;
            let mut taken = 0usize;
            while !r.is_empty() {
                let len = usize::try_from(r.uint()?).map_err(|_| DecodeError::OutOfRange)?;
                if len == 0 {
                    channel = r.uint()?;
                    continue;
                }
                taken += 1;
                if taken > MAX_BATCH_MESSAGES {
                    return Err(ProtomuxError::BatchTooLong);
                }
                let mut inner = Reader::new(r.take(len)?);
                decode_message(channel, &mut inner, out, true)?;
            }
        }
        control::OPEN => {
            let local_id = r.uint()?;
            let protocol = r.string()?;
            let id = r.buffer()?;
            let handshake = r.take(r.remaining())?;
            out.push(Frame::Open {
                local_id,
                protocol,
                id,
                handshake,
            });
        }
        control::REJECT => out.push(Frame::Reject {
            local_id: r.uint()?,
        }),
        control::CLOSE => out.push(Frame::Close {
            remote_id: r.uint()?,
        }),
        other => out.push(Frame::UnknownControl(other)),
    }
    Ok(())
}

/// `open`: we open our channel `local_id` for `(protocol, id)` (no handshake when empty).
pub fn encode_open(local_id: u64, protocol: &str, id: &[u8], handshake: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(0).uint(control::OPEN).uint(local_id);
    w.string(protocol).buffer(id).raw(handshake);
    w.into_vec()
}

/// `reject`: we refuse the peer's channel `remote_id`.
pub fn encode_reject(remote_id: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(0).uint(control::REJECT).uint(remote_id);
    w.into_vec()
}

/// `close`: we close our channel `local_id`.
pub fn encode_close(local_id: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(0).uint(control::CLOSE).uint(local_id);
    w.into_vec()
}

/// A message of type `kind` on our channel `local_id`.
pub fn encode_message(local_id: u64, kind: u64, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(body.len() + 4);
    w.uint(local_id).uint(kind).raw(body);
    w.into_vec()
}

/// A batch: each entry is `(channel, uint type ‖ body)`; channel 0 entries are control messages.
/// Consecutive entries of one channel share its header, as protomux writes them.
pub fn encode_batch(entries: &[(u64, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(0).uint(control::BATCH);
    let mut current = None;
    for (channel, msg) in entries {
        match current {
            None => {
                w.uint(*channel);
            }
            Some(c) if c != *channel => {
                w.uint(0).uint(*channel);
            }
            Some(_) => {}
        }
        current = Some(*channel);
        w.buffer(msg);
    }
    w.into_vec()
}

/// Where our channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// We sent our open; the peer's has not arrived.
    Opening,
    /// Both opens crossed: messages flow.
    Open,
    /// Closed (by us, by the peer, or rejected).
    Closed,
}

/// What a frame did to the [`Channel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The peer opened the matching channel.
    Opened,
    /// A message of our protocol.
    Message {
        /// Message type.
        kind: u64,
        /// Encoded message.
        body: Vec<u8>,
    },
    /// The peer closed or rejected the channel.
    Closed,
    /// Send these bytes back (a reject of an open we don't serve).
    Reply(Vec<u8>),
}

/// Our local id for the one channel (protomux hands out 1 to the first channel of a mux).
pub const LOCAL_CHANNEL_ID: u64 = 1;

/// One protomux channel for `(protocol, id)` on a mux that carries nothing else.
#[derive(Debug, Clone)]
pub struct Channel {
    protocol: String,
    id: Vec<u8>,
    remote_id: Option<u64>,
    state: ChannelState,
}

impl Channel {
    /// A channel that is about to be opened; send [`Channel::open_frame`] first.
    pub fn new(protocol: &str, id: &[u8]) -> Self {
        Self {
            protocol: protocol.to_owned(),
            id: id.to_vec(),
            remote_id: None,
            state: ChannelState::Opening,
        }
    }

    /// Where the channel is.
    pub fn state(&self) -> ChannelState {
        self.state
    }

    /// Our `open` frame (no handshake).
    pub fn open_frame(&self) -> Vec<u8> {
        encode_open(LOCAL_CHANNEL_ID, &self.protocol, &self.id, &[])
    }

    /// A message frame on our channel (protomux lets a channel send right after its open).
    pub fn message_frame(&self, kind: u64, body: &[u8]) -> Vec<u8> {
        encode_message(LOCAL_CHANNEL_ID, kind, body)
    }

    /// Closes the channel; returns the `close` frame to send (once).
    pub fn close(&mut self) -> Option<Vec<u8>> {
        if self.state == ChannelState::Closed {
            return None;
        }
        self.state = ChannelState::Closed;
        Some(encode_close(LOCAL_CHANNEL_ID))
    }

    /// Handles one received frame. Messages for other channels, and anything after the close,
    /// are ignored; an open of another protocol/id is rejected.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<Vec<ChannelEvent>, ProtomuxError> {
        let mut events = Vec::new();
        for f in decode_frame(frame)? {
            match f {
                Frame::Open {
                    local_id,
                    protocol,
                    id,
                    ..
                } => {
                    if local_id == 0 {
                        // protomux answers an open of the control channel with a reject of 0
                        events.push(ChannelEvent::Reply(encode_reject(0)));
                        continue;
                    }
                    if self.remote_id == Some(local_id) {
                        return Err(ProtomuxError::InvalidOpen(local_id));
                    }
                    let ours = protocol == self.protocol && id == self.id.as_slice();
                    if ours && self.remote_id.is_none() && self.state == ChannelState::Opening {
                        self.remote_id = Some(local_id);
                        self.state = ChannelState::Open;
                        events.push(ChannelEvent::Opened);
                    } else {
                        events.push(ChannelEvent::Reply(encode_reject(local_id)));
                    }
                }
                Frame::Reject { local_id } => {
                    if local_id == LOCAL_CHANNEL_ID && self.state == ChannelState::Opening {
                        self.state = ChannelState::Closed;
                        events.push(ChannelEvent::Closed);
                    }
                }
                Frame::Close { remote_id } => {
                    if self.remote_id == Some(remote_id) && self.state != ChannelState::Closed {
                        self.state = ChannelState::Closed;
                        events.push(ChannelEvent::Closed);
                    }
                }
                Frame::UnknownControl(_) => {}
                Frame::Message {
                    remote_id,
                    kind,
                    body,
                } => {
                    if self.remote_id == Some(remote_id) && self.state == ChannelState::Open {
                        events.push(ChannelEvent::Message {
                            kind,
                            body: body.to_vec(),
                        });
                    }
                }
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn open_message_close_roundtrip() {
        let mut server = Channel::new("blind-relay", &[7; 32]);
        let mut client = Channel::new("blind-relay", &[7; 32]);
        assert_eq!(
            client.handle_frame(&server.open_frame()).unwrap(),
            vec![ChannelEvent::Opened]
        );
        assert_eq!(
            server.handle_frame(&client.open_frame()).unwrap(),
            vec![ChannelEvent::Opened]
        );
        let ev = server
            .handle_frame(&client.message_frame(0, b"hi"))
            .unwrap();
        assert_eq!(
            ev,
            vec![ChannelEvent::Message {
                kind: 0,
                body: b"hi".to_vec()
            }]
        );
        let close = client.close().unwrap();
        assert!(client.close().is_none());
        assert_eq!(
            server.handle_frame(&close).unwrap(),
            vec![ChannelEvent::Closed]
        );
        // after the close, messages are ignored
        assert!(
            server
                .handle_frame(&client.message_frame(0, b"late"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn foreign_opens_are_rejected_and_reopen_is_an_error() {
        let mut ch = Channel::new("blind-relay", &[1; 32]);
        let ev = ch
            .handle_frame(&encode_open(5, "other", &[1; 32], &[]))
            .unwrap();
        assert_eq!(ev, vec![ChannelEvent::Reply(encode_reject(5))]);
        let ev = ch
            .handle_frame(&encode_open(6, "blind-relay", &[2; 32], &[]))
            .unwrap();
        assert_eq!(ev, vec![ChannelEvent::Reply(encode_reject(6))]);
        let ev = ch
            .handle_frame(&encode_open(0, "blind-relay", &[1; 32], &[]))
            .unwrap();
        assert_eq!(ev, vec![ChannelEvent::Reply(encode_reject(0))]);
        assert_eq!(
            ch.handle_frame(&encode_open(3, "blind-relay", &[1; 32], &[]))
                .unwrap(),
            vec![ChannelEvent::Opened]
        );
        assert_eq!(
            ch.handle_frame(&encode_open(3, "blind-relay", &[1; 32], &[])),
            Err(ProtomuxError::InvalidOpen(3))
        );
    }

    #[test]
    fn batch_flattens_and_bounds() {
        let open = encode_open(1, "p", &[], &[]);
        let msg = [0u8, 9, 9];
        let b = encode_batch(&[(0, &open[1..]), (1, &msg), (1, &msg)]);
        let frames = decode_frame(&b).unwrap();
        assert_eq!(frames.len(), 3);
        assert!(matches!(frames[0], Frame::Open { local_id: 1, .. }));
        assert_eq!(
            frames[2],
            Frame::Message {
                remote_id: 1,
                kind: 0,
                body: &[9, 9]
            }
        );
        let nested = encode_batch(&[(0, &b[1..])]);
        assert_eq!(decode_frame(&nested), Err(ProtomuxError::NestedBatch));
        let many: Vec<(u64, &[u8])> = (0..=MAX_BATCH_MESSAGES).map(|_| (1, &msg[..])).collect();
        assert_eq!(
            decode_frame(&encode_batch(&many)),
            Err(ProtomuxError::BatchTooLong)
        );
        // truncated
        assert!(decode_frame(&b[..b.len() - 1]).is_err());
        assert!(decode_frame(&[]).unwrap().is_empty());
    }
}
