//! The sans-io secret-stream protocol: Noise XX frames (stand-alone mode), the id+header exchange,
//! encrypted messages and keep-alives. No I/O and no clock: time comes in as `now`.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::SecretStreamError;
use super::cipher::{
    ABYTES, Decryptor, Encryptor, FAST_PATH_MIN_LEN, HEADER_LEN, ID_HEADER_LEN, ID_LEN, stream_id,
};
use super::frame::{FrameDecoder, MAX_FRAME_LEN, put_len};
use crate::keys::{KeyPair, PublicKey};
use crate::noise::{Handshake, NoiseConfig, NoiseHandshake, Step};

/// Largest plaintext of one message (`2^24 − 1 − 17`, as in secret-stream).
pub const MAX_MESSAGE_LEN: usize = MAX_FRAME_LEN - ABYTES;

/// Largest plaintext we put in one frame: big enough to amortise the per-frame cost, small
/// enough that a reader holds little and a JS reader gets frames of a sensible size.
pub const MAX_FRAME_PLAINTEXT: usize = 64 * 1024;
/// Extra plaintext a vectored write may put in one frame beyond [`MAX_FRAME_PLAINTEXT`], so an
/// application frame header and a 64 KiB payload travel as one message.
pub const VECTORED_SLACK: usize = 64;
/// The largest frame body our own writer produces: a byte write seals at most
/// [`MAX_FRAME_PLAINTEXT`], a vectored write (a transfer frame header with its 64 KiB chunk) at
/// most [`VECTORED_SLACK`] more, plus the 17-byte secretstream overhead. Protocol messages
/// (protomux, blind relay) are far smaller.
pub const LARGEST_SENT_FRAME: usize = MAX_FRAME_PLAINTEXT + VECTORED_SLACK + ABYTES;

/// The frame length accepted from a peer unless [`SecretStreamCore::set_max_frame_len`] says
/// otherwise: 256 KiB, about four times [`LARGEST_SENT_FRAME`] (room for a JS peer writing in 64 KiB
/// pieces with framing of its own, or a later, larger chunk size) yet 64 times less than the
/// protocol's 16 MiB, which a peer could otherwise make every connection buffer. A peer that
/// sends a longer frame fails the stream with [`SecretStreamError::FrameTooLong`]. Raise it (up
/// to [`MAX_FRAME_LEN`]) only for a peer known to write bigger messages, such as a generic JS
/// Hyperswarm application.
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024;

const _: () = assert!(DEFAULT_MAX_FRAME_LEN >= 2 * LARGEST_SENT_FRAME);
const _: () = assert!(DEFAULT_MAX_FRAME_LEN <= MAX_FRAME_LEN);

/// What [`SecretStreamCore::handle_input`] found.
#[derive(Debug)]
pub enum Input {
    /// Everything buffered was consumed; read more bytes from the raw stream.
    NeedMore,
    /// The remote static key was learned: answer with [`SecretStreamCore::handle_verdict`].
    Verdict(PublicKey),
    /// The peer's id+header arrived and checked out: the stream is open both ways.
    Open,
    /// One decrypted, non-empty message (keep-alives are filtered out).
    Message(BytesMut),
}

enum Phase {
    /// Running the stand-alone Noise XX handshake.
    Noise(Box<NoiseHandshake>),
    /// Our keys are set up; waiting for the peer's id+header message.
    AwaitHeader,
    /// Data flows both ways.
    Open,
    /// A fatal error happened.
    Failed,
}

/// The secret-stream protocol state of one connection (sans-io).
///
/// Calling contract: feed raw bytes into a `BytesMut` and call [`Self::handle_input`] until it
/// returns [`Input::NeedMore`]; answer [`Input::Verdict`] before anything else; after every call,
/// write out [`Self::transmit`] and [`Self::consume_transmit`] what was written; arm a timer at
/// [`Self::poll_timeout`] and call [`Self::handle_timeout`] when it fires.
pub struct SecretStreamCore {
    is_initiator: bool,
    phase: Phase,
    decoder: FrameDecoder,
    transmit: BytesMut,
    encryptor: Option<Encryptor>,
    decryptor: Option<Decryptor>,
    handshake: Option<Handshake>,
    keep_alive: Option<Duration>,
    last_send: Option<Instant>,
}

impl std::fmt::Debug for SecretStreamCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStreamCore")
            .field("is_initiator", &self.is_initiator)
            .field("open", &self.is_open())
            .field("handshake", &self.handshake)
            .field("transmit", &self.transmit.len())
            .finish_non_exhaustive()
    }
}

impl SecretStreamCore {
    /// Stand-alone mode, the side that connects: runs Noise XX with `keypair` on the stream,
    /// our first message queued at once.
    pub fn xx_initiator(keypair: KeyPair) -> Result<Self, SecretStreamError> {
        Self::from_noise(NoiseHandshake::new(NoiseConfig::xx_initiator(keypair))?)
    }

    /// Stand-alone mode, the side that accepts: runs Noise XX with `keypair` on the stream.
    pub fn xx_responder(keypair: KeyPair) -> Result<Self, SecretStreamError> {
        Self::from_noise(NoiseHandshake::new(NoiseConfig::xx_responder(keypair))?)
    }

    /// Stand-alone mode with a caller-built XX handshake state (e.g. fixed ephemeral keys).
    pub fn from_noise(hs: NoiseHandshake) -> Result<Self, SecretStreamError> {
        let mut core = Self::empty(hs.is_initiator());
        core.phase = Phase::Noise(Box::new(hs));
        core.continue_noise()?;
        Ok(core)
    }

    /// Pre-made handshake (HyperDHT): only the id+header messages travel; ours is queued now.
    pub fn from_handshake(handshake: Handshake) -> Self {
        let mut core = Self::empty(handshake.is_initiator);
        core.setup(handshake, rand::rngs::OsRng);
        core
    }

    /// Pre-made handshake with a caller-chosen rng for the secretstream header (test vectors).
    pub fn from_handshake_with_rng(
        handshake: Handshake,
        rng: impl rand::RngCore + rand::CryptoRng,
    ) -> Self {
        let mut core = Self::empty(handshake.is_initiator);
        core.setup(handshake, rng);
        core
    }

    fn empty(is_initiator: bool) -> Self {
        Self {
            is_initiator,
            phase: Phase::AwaitHeader,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_LEN),
            transmit: BytesMut::new(),
            encryptor: None,
            decryptor: None,
            handshake: None,
            keep_alive: None,
            last_send: None,
        }
    }

    /// Sets the largest frame body accepted from the peer (default [`DEFAULT_MAX_FRAME_LEN`],
    /// capped at the protocol's [`MAX_FRAME_LEN`], 2^24 − 1).
    pub fn set_max_frame_len(&mut self, max: usize) {
        self.decoder.set_max_len(max);
    }

    /// Sends an empty encrypted message whenever nothing was sent for `interval`; the clock
    /// starts at `now` if nothing was sent yet.
    pub fn set_keep_alive(&mut self, interval: Option<Duration>, now: Instant) {
        self.keep_alive = interval.filter(|d| !d.is_zero());
        if self.last_send.is_none() {
            self.last_send = Some(now);
        }
    }

    /// Whether we are the initiator.
    pub fn is_initiator(&self) -> bool {
        self.is_initiator
    }

    /// The handshake result, once known.
    pub fn handshake(&self) -> Option<&Handshake> {
        self.handshake.as_ref()
    }

    /// True once the handshake is done (we may send; the peer's header may still be on its way).
    pub fn can_send(&self) -> bool {
        self.encryptor.is_some() && !matches!(self.phase, Phase::Failed)
    }

    /// True once the peer's id+header has been verified.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// True between frames of the input (an EOF here is clean).
    pub fn input_at_boundary(&self, rx: &BytesMut) -> bool {
        self.decoder.at_boundary(rx)
    }

    /// Raw bytes waiting to be written to the raw stream.
    pub fn transmit(&self) -> &[u8] {
        &self.transmit
    }

    /// Marks `n` bytes of [`Self::transmit`] as written.
    pub fn consume_transmit(&mut self, n: usize) {
        let _ = self.transmit.split_to(n.min(self.transmit.len()));
    }

    /// The raw bytes waiting to be written, for a driver that takes them by splitting them off
    /// the front (no copy); whatever it leaves is still to be written.
    pub fn transmit_mut(&mut self) -> &mut BytesMut {
        &mut self.transmit
    }

    fn fail<T>(&mut self, err: SecretStreamError) -> Result<T, SecretStreamError> {
        self.phase = Phase::Failed;
        Err(err)
    }

    fn setup(&mut self, handshake: Handshake, rng: impl rand::RngCore + rand::CryptoRng) {
        let (encryptor, header) = Encryptor::new(&handshake.tx, rng);
        let id = stream_id(&handshake.hash, handshake.is_initiator);
        // ID_HEADER_LEN is a small constant: put_len cannot fail here.
        let _ = put_len(&mut self.transmit, ID_HEADER_LEN);
        self.transmit.extend_from_slice(&id);
        self.transmit.extend_from_slice(&header);
        self.encryptor = Some(encryptor);
        self.handshake = Some(handshake);
        self.phase = Phase::AwaitHeader;
    }

    /// Writes our Noise messages while it is our turn; finishes the handshake when complete.
    fn continue_noise(&mut self) -> Result<(), SecretStreamError> {
        loop {
            let Phase::Noise(hs) = &mut self.phase else {
                return Ok(());
            };
            match hs.next_step() {
                Step::Write => {
                    let msg = match hs.write_message(&[]) {
                        Ok(m) => m,
                        Err(e) => return self.fail(e.into()),
                    };
                    put_len(&mut self.transmit, msg.len())?;
                    self.transmit.extend_from_slice(&msg);
                }
                Step::Complete => {
                    let Phase::Noise(hs) = std::mem::replace(&mut self.phase, Phase::Failed) else {
                        return Err(SecretStreamError::Internal("phase"));
                    };
                    let handshake = hs.into_handshake()?;
                    self.setup(handshake, rand::rngs::OsRng);
                    return Ok(());
                }
                Step::Read | Step::Verdict(_) => return Ok(()),
                Step::Failed => return self.fail(SecretStreamError::Internal("noise failed")),
            }
        }
    }

    /// The key firewall's answer to [`Input::Verdict`].
    pub fn handle_verdict(&mut self, allow: bool) -> Result<(), SecretStreamError> {
        let Phase::Noise(hs) = &mut self.phase else {
            return Err(SecretStreamError::ApiMisuse(
                "verdict outside the handshake",
            ));
        };
        if let Err(e) = hs.handle_verdict(allow) {
            return self.fail(e.into());
        }
        self.continue_noise()
    }

    /// Consumes frames from `rx` until something happens (see [`Input`]).
    pub fn handle_input(&mut self, rx: &mut BytesMut) -> Result<Input, SecretStreamError> {
        loop {
            if let Phase::Noise(hs) = &self.phase
                && let Step::Verdict(pk) = hs.next_step()
            {
                return Ok(Input::Verdict(pk));
            }
            if matches!(self.phase, Phase::Failed) {
                return Err(SecretStreamError::Failed);
            }
            let mut frame = match self.decoder.decode(rx) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(Input::NeedMore),
                Err(e) => return self.fail(e),
            };
            match &mut self.phase {
                Phase::Noise(hs) => {
                    if let Err(e) = hs.read_message(&frame) {
                        return self.fail(e.into());
                    }
                    self.continue_noise()?;
                }
                Phase::AwaitHeader => {
                    self.receive_header(&frame)?;
                    return Ok(Input::Open);
                }
                Phase::Open => {
                    let Some(dec) = self.decryptor.as_mut() else {
                        return self.fail(SecretStreamError::Internal("open without decryptor"));
                    };
                    if let Err(e) = dec.decrypt(&mut frame) {
                        return self.fail(e);
                    }
                    if !frame.is_empty() {
                        return Ok(Input::Message(frame));
                    }
                    // an empty message is a keep-alive
                }
                Phase::Failed => return Err(SecretStreamError::Failed),
            }
        }
    }

    fn receive_header(&mut self, frame: &[u8]) -> Result<(), SecretStreamError> {
        if frame.len() != ID_HEADER_LEN {
            return self.fail(SecretStreamError::BadHeaderLength(frame.len()));
        }
        let Some(handshake) = self.handshake.as_ref() else {
            return self.fail(SecretStreamError::Internal("header before handshake"));
        };
        let expected = stream_id(&handshake.hash, !self.is_initiator);
        let (id, header) = frame.split_at(ID_LEN);
        if id != expected {
            return self.fail(SecretStreamError::WrongStreamId);
        }
        let header: [u8; HEADER_LEN] = header
            .try_into()
            .map_err(|_| SecretStreamError::Internal("header length"))?;
        self.decryptor = Some(Decryptor::new(&handshake.rx, &header));
        self.phase = Phase::Open;
        Ok(())
    }

    /// Queues one encrypted message (at most [`MAX_MESSAGE_LEN`] bytes; empty = keep-alive).
    pub fn send(&mut self, plaintext: &[u8], now: Instant) -> Result<(), SecretStreamError> {
        self.send_parts(&[plaintext], now)
    }

    /// Encrypts one message given in parts (concatenated) into the transmit buffer: a frame
    /// header and its payload become one encrypted message without first being joined.
    pub fn send_parts(&mut self, parts: &[&[u8]], now: Instant) -> Result<(), SecretStreamError> {
        if matches!(self.phase, Phase::Failed) {
            return Err(SecretStreamError::Failed);
        }
        let Some(enc) = self.encryptor.as_mut() else {
            return Err(SecretStreamError::ApiMisuse(
                "send before the handshake completed",
            ));
        };
        let len = parts
            .iter()
            .fold(0usize, |acc, p| acc.saturating_add(p.len()));
        if len > MAX_MESSAGE_LEN {
            return Err(SecretStreamError::MessageTooLong(len));
        }
        enc.encrypt_frame_parts(parts, &mut self.transmit)?;
        self.last_send = Some(now);
        Ok(())
    }

    /// Like [`Self::send_parts`] for the bytes of a byte stream, whose reader does not see
    /// message boundaries: a message of at least [`FAST_PATH_MIN_LEN`] bytes whose length is
    /// not a multiple of 8 goes out as two, the longest prefix that is (which the IETF AEAD
    /// seals, see [`Encryptor::encrypt_frame_parts`]) and a tail of at most 7 bytes.
    pub fn send_stream_parts(
        &mut self,
        parts: &[&[u8]],
        now: Instant,
    ) -> Result<(), SecretStreamError> {
        let len = parts
            .iter()
            .fold(0usize, |acc, p| acc.saturating_add(p.len()));
        let tail_len = len % 8;
        if len < FAST_PATH_MIN_LEN || tail_len == 0 {
            return self.send_parts(parts, now);
        }
        let mut head: Vec<&[u8]> = Vec::with_capacity(parts.len());
        let mut tail = [0u8; 8];
        let mut tail_at = 0;
        let mut left = len - tail_len;
        for part in parts {
            let take = part.len().min(left);
            left -= take;
            let (h, t) = part.split_at(take);
            if !h.is_empty() {
                head.push(h);
            }
            if let Some(dst) = tail.get_mut(tail_at..tail_at + t.len()) {
                dst.copy_from_slice(t);
                tail_at += t.len();
            }
        }
        self.send_parts(&head, now)?;
        self.send_parts(&[tail.get(..tail_at).unwrap_or_default()], now)
    }

    /// When the next keep-alive is due, if keep-alive is on and the handshake is done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.keep_alive?;
        if !self.can_send() {
            return None;
        }
        self.last_send.and_then(|t| t.checked_add(interval))
    }

    /// Sends a keep-alive if one is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SecretStreamError> {
        let Some(interval) = self.keep_alive else {
            return Ok(());
        };
        if !self.can_send() {
            return Ok(());
        }
        match self.last_send {
            Some(t) if t.checked_add(interval).is_none_or(|due| now < due) => Ok(()),
            Some(_) => self.send(&[], now),
            None => {
                // nothing sent since the handshake: start the clock now
                self.last_send = Some(now);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::Step;

    fn pair() -> (SecretStreamCore, SecretStreamCore) {
        let ki = KeyPair::from_seed([1; 32]);
        let kr = KeyPair::from_seed([2; 32]);
        let mut i =
            NoiseHandshake::new(NoiseConfig::ik_initiator(ki, b"", kr.public_key())).unwrap();
        let mut r = NoiseHandshake::new(NoiseConfig::ik_responder(kr, b"")).unwrap();
        r.read_message(&i.write_message(b"").unwrap()).unwrap();
        assert!(matches!(r.next_step(), Step::Verdict(_)));
        r.handle_verdict(true).unwrap();
        i.read_message(&r.write_message(b"").unwrap()).unwrap();
        (
            SecretStreamCore::from_handshake(i.into_handshake().unwrap()),
            SecretStreamCore::from_handshake(r.into_handshake().unwrap()),
        )
    }

    fn deliver(from: &mut SecretStreamCore, to: &mut SecretStreamCore) -> Vec<Vec<u8>> {
        let mut rx = BytesMut::from(from.transmit());
        from.consume_transmit(rx.len());
        let mut got = Vec::new();
        loop {
            match to.handle_input(&mut rx).unwrap() {
                Input::Message(m) => got.push(m.to_vec()),
                Input::Open => {}
                Input::NeedMore => return got,
                Input::Verdict(_) => panic!("unexpected verdict"),
            }
        }
    }

    #[test]
    fn keep_alive_timing_and_filtering() {
        let (mut a, mut b) = pair();
        let t0 = Instant::now();
        assert_eq!(a.poll_timeout(), None, "off by default");
        a.set_keep_alive(Some(Duration::from_secs(5)), t0);
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        assert!(deliver(&mut a, &mut b).is_empty()); // the id+header only
        assert!(b.is_open());
        a.handle_timeout(t0 + Duration::from_secs(4)).unwrap();
        assert!(a.transmit().is_empty(), "not due yet");
        a.send(b"data", t0 + Duration::from_secs(4)).unwrap();
        a.handle_timeout(t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(
            a.transmit().len(),
            3 + 17 + 4,
            "sending data postponed the keep-alive"
        );
        a.handle_timeout(t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(a.transmit().len(), 3 + 17 + 4 + 20, "a 20-byte keep-alive");
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(14)));
        assert_eq!(
            deliver(&mut a, &mut b),
            vec![b"data".to_vec()],
            "keep-alive filtered"
        );
        a.set_keep_alive(None, t0);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn send_limits() {
        let (mut a, _) = pair();
        let now = Instant::now();
        assert!(matches!(
            a.send(&vec![0u8; MAX_MESSAGE_LEN + 1], now),
            Err(SecretStreamError::MessageTooLong(_))
        ));
        let mut xx = SecretStreamCore::xx_responder(KeyPair::from_seed([3; 32])).unwrap();
        assert!(matches!(
            xx.send(b"early", now),
            Err(SecretStreamError::ApiMisuse(_))
        ));
        assert!(xx.handle_verdict(true).is_err());
    }
}
