//! Sans-io Noise handshakes as the Hyperswarm stack runs them: `Noise_XX_Ed25519_ChaChaPoly_BLAKE2b`
//! (stand-alone secret streams) and `Noise_IK_Ed25519_ChaChaPoly_BLAKE2b` (HyperDHT's handshake
//! over the DHT), byte-compatible with `noise-handshake` 4.2.0 + `noise-curve-ed` 2.1.0.
//!
//! The "Ed25519" DH is Edwards scalar multiplication on Ed25519 key pairs (see [`dh`]); ephemeral
//! keys are Ed25519 key pairs too. No I/O, no clock: the caller moves the messages.
//!
//! # Driving a handshake
//! Loop on [`NoiseHandshake::next_step`]:
//! - [`Step::Write`]: call [`NoiseHandshake::write_message`] and send the bytes;
//! - [`Step::Read`]: feed the peer's next message to [`NoiseHandshake::read_message`];
//! - [`Step::Verdict`]: the remote static key was just learned (and, in IK, the initiator's
//!   payload decrypted): the caller's key firewall decides with
//!   [`NoiseHandshake::handle_verdict`] before anything else happens, so a refused key never
//!   gets a session (an IK responder never answers, an XX initiator never sends message 3);
//! - [`Step::Complete`]: take the result with [`NoiseHandshake::into_handshake`];
//! - [`Step::Failed`]: give up (every error is final).
//!
//! ```
//! use ats_p2p_swarm::KeyPair;
//! use ats_p2p_swarm::noise::{NoiseConfig, NoiseHandshake, Step};
//!
//! let (client, server) = (KeyPair::generate(), KeyPair::generate());
//! let client_pk = client.public_key();
//! let prologue = b"NS_PEER_HANDSHAKE bytes";
//! let mut c = NoiseHandshake::new(NoiseConfig::ik_initiator(client, prologue, server.public_key()))?;
//! let mut s = NoiseHandshake::new(NoiseConfig::ik_responder(server, prologue))?;
//! let msg1 = c.write_message(b"client payload")?;
//! assert_eq!(s.read_message(&msg1)?, b"client payload");
//! assert!(matches!(s.next_step(), Step::Verdict(k) if k == client_pk));
//! s.handle_verdict(true)?; // the key firewall's decision, taken before any reply exists
//! let msg2 = s.write_message(b"server payload")?;
//! assert_eq!(c.read_message(&msg2)?, b"server payload");
//! let (hc, hs) = (c.into_handshake()?, s.into_handshake()?);
//! assert_eq!((hc.tx, hc.hash), (hs.rx, hs.hash));
//! # Ok::<(), ats_p2p_swarm::noise::NoiseError>(())
//! ```

mod crypto;

use std::fmt;

use zeroize::Zeroize;

use crypto::{CipherState, hash2, hkdf2};
pub use crypto::{DH_LEN, HASH_LEN, TAG_LEN, dh};

use crate::keys::{KeyPair, PublicKey};

/// Largest Noise message (the Noise spec's limit; `noise-handshake` enforces it on ciphertexts).
pub const MAX_MESSAGE_LEN: usize = 65535;

/// The handshake patterns Hyperswarm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `XX`: both static keys travel encrypted; used by stand-alone secret streams.
    XX,
    /// `IK`: the initiator knows the responder's static key; used by HyperDHT connects.
    IK,
}

impl Pattern {
    /// The Noise protocol name, e.g. `Noise_XX_Ed25519_ChaChaPoly_BLAKE2b`.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Self::XX => "Noise_XX_Ed25519_ChaChaPoly_BLAKE2b",
            Self::IK => "Noise_IK_Ed25519_ChaChaPoly_BLAKE2b",
        }
    }

    fn messages(self) -> &'static [&'static [Token]] {
        use Token::{E, Ee, Es, S, Se, Ss};
        match self {
            Self::XX => &[&[E], &[E, Ee, S, Es], &[S, Se]],
            Self::IK => &[&[E, Es, S, Ss], &[E, Ee, Se]],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    E,
    S,
    Ee,
    Es,
    Se,
    Ss,
}

/// Everything that can go wrong in a handshake. Every error is final for that handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// The peer's message is shorter than its pattern requires.
    #[error("noise message truncated")]
    Truncated,
    /// The peer's message is longer than a Noise message may be.
    #[error("noise message longer than 65535 bytes")]
    TooLong,
    /// A ciphertext in the peer's message did not authenticate.
    #[error("noise message failed to decrypt")]
    Decrypt,
    /// The peer sent a public key that is not a valid prime-order Ed25519 point.
    #[error("invalid or small-order public key from peer")]
    InvalidPublicKey,
    /// The caller's key firewall refused the remote static key.
    #[error("remote static key {0} refused by the key firewall")]
    Rejected(PublicKey),
    /// IK needs the responder's static key up front.
    #[error("the IK initiator needs the responder's public key")]
    MissingRemoteKey,
    /// A method was called at the wrong step (a caller bug, never caused by peer bytes).
    #[error("handshake API misuse: {0}")]
    ApiMisuse(&'static str),
    /// The handshake already failed.
    #[error("handshake already failed")]
    Failed,
    /// 2^32 messages under one key (cannot happen in a handshake).
    #[error("nonce exhausted")]
    NonceExhausted,
    /// An internal invariant broke (a bug, reported instead of panicking).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What the caller must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Produce the next message with [`NoiseHandshake::write_message`].
    Write,
    /// Feed the peer's next message to [`NoiseHandshake::read_message`].
    Read,
    /// Decide on this remote static key with [`NoiseHandshake::handle_verdict`].
    Verdict(PublicKey),
    /// Done: [`NoiseHandshake::into_handshake`].
    Complete,
    /// An error happened; the handshake is dead.
    Failed,
}

/// The result of a completed handshake: what a secret stream needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Key for what we send (first output of the split for the initiator).
    pub tx: [u8; 32],
    /// Key for what we receive.
    pub rx: [u8; 32],
    /// The handshake hash `h` (64 bytes), the channel binding.
    pub hash: [u8; HASH_LEN],
    /// The peer's static (identity) key.
    pub remote_public_key: PublicKey,
    /// Whether we were the initiator.
    pub is_initiator: bool,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("remote_public_key", &self.remote_public_key)
            .field("is_initiator", &self.is_initiator)
            .field("hash", &hex::encode(self.hash))
            .finish_non_exhaustive()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.tx.zeroize();
        self.rx.zeroize();
    }
}

/// How to start a handshake.
#[derive(Clone)]
pub struct NoiseConfig {
    /// XX or IK.
    pub pattern: Pattern,
    /// Whether we send the first message.
    pub initiator: bool,
    /// Our static (identity) key pair.
    pub static_keypair: KeyPair,
    /// Bytes mixed into the hash before the first message (empty for secret streams,
    /// `NS_PEER_HANDSHAKE` for HyperDHT).
    pub prologue: Vec<u8>,
    /// The responder's static key, required for the IK initiator, ignored otherwise.
    pub remote_static: Option<PublicKey>,
    /// Seed of the ephemeral key pair; `None` draws one from the OS (set only for test vectors).
    pub ephemeral_seed: Option<[u8; 32]>,
}

impl fmt::Debug for NoiseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseConfig")
            .field("pattern", &self.pattern)
            .field("initiator", &self.initiator)
            .field("static_keypair", &self.static_keypair)
            .field("prologue", &hex::encode(&self.prologue))
            .field("remote_static", &self.remote_static)
            .field("ephemeral_seed", &self.ephemeral_seed.map(|_| "<fixed>"))
            .finish()
    }
}

impl NoiseConfig {
    /// Stand-alone secret stream, the side that sends first: XX, empty prologue, random
    /// ephemeral key.
    pub fn xx_initiator(static_keypair: KeyPair) -> Self {
        Self::with(Pattern::XX, true, static_keypair, &[], None)
    }

    /// Stand-alone secret stream, the side that answers: XX, empty prologue, random ephemeral
    /// key.
    pub fn xx_responder(static_keypair: KeyPair) -> Self {
        Self::with(Pattern::XX, false, static_keypair, &[], None)
    }

    /// IK, the side that sends first and knows the responder's static key up front (HyperDHT's
    /// connect), with the given prologue.
    pub fn ik_initiator(
        static_keypair: KeyPair,
        prologue: &[u8],
        remote_static: PublicKey,
    ) -> Self {
        Self::with(
            Pattern::IK,
            true,
            static_keypair,
            prologue,
            Some(remote_static),
        )
    }

    /// IK, the responder (HyperDHT's server), with the given prologue.
    pub fn ik_responder(static_keypair: KeyPair, prologue: &[u8]) -> Self {
        Self::with(Pattern::IK, false, static_keypair, prologue, None)
    }

    fn with(
        pattern: Pattern,
        initiator: bool,
        static_keypair: KeyPair,
        prologue: &[u8],
        remote_static: Option<PublicKey>,
    ) -> Self {
        Self {
            pattern,
            initiator,
            static_keypair,
            prologue: prologue.to_vec(),
            remote_static,
            ephemeral_seed: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Verdict(PublicKey),
    Complete,
    Failed,
}

/// A Noise handshake in progress (sans-io). See the [module docs](self) for the driving loop.
pub struct NoiseHandshake {
    pattern: Pattern,
    initiator: bool,
    s: KeyPair,
    e: KeyPair,
    rs: Option<[u8; DH_LEN]>,
    re: Option<[u8; DH_LEN]>,
    h: [u8; HASH_LEN],
    ck: [u8; HASH_LEN],
    cipher: CipherState,
    /// Index of the next pattern message.
    index: usize,
    status: Status,
    result: Option<Handshake>,
}

impl fmt::Debug for NoiseHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseHandshake")
            .field("pattern", &self.pattern)
            .field("initiator", &self.initiator)
            .field("index", &self.index)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl NoiseHandshake {
    /// Initialises the symmetric state (protocol name, prologue, pre-shared keys).
    pub fn new(config: NoiseConfig) -> Result<Self, NoiseError> {
        let e = match config.ephemeral_seed {
            Some(seed) => KeyPair::from_seed(seed),
            None => KeyPair::generate(),
        };
        let name = config.pattern.protocol_name().as_bytes();
        let mut h = [0u8; HASH_LEN];
        if name.len() <= HASH_LEN {
            h[..name.len()].copy_from_slice(name);
        } else {
            h = hash2(&[], name);
        }
        let mut hs = Self {
            pattern: config.pattern,
            initiator: config.initiator,
            s: config.static_keypair,
            e,
            rs: None,
            re: None,
            h,
            ck: h,
            cipher: CipherState::default(),
            index: 0,
            status: Status::Running,
            result: None,
        };
        hs.mix_hash(&config.prologue);
        if hs.pattern == Pattern::IK {
            // pre-message: <- s
            let rs = if hs.initiator {
                let rs = config.remote_static.ok_or(NoiseError::MissingRemoteKey)?;
                hs.rs = Some(*rs.as_bytes());
                *rs.as_bytes()
            } else {
                *hs.s.public_key().as_bytes()
            };
            hs.mix_hash(&rs);
        }
        Ok(hs)
    }

    /// What the caller must do next.
    pub fn next_step(&self) -> Step {
        match self.status {
            Status::Failed => Step::Failed,
            Status::Complete => Step::Complete,
            Status::Verdict(pk) => Step::Verdict(pk),
            Status::Running if self.our_turn() => Step::Write,
            Status::Running => Step::Read,
        }
    }

    /// Whether we are the initiator.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// The remote static key once known (pre-shared in IK, or learned from a message).
    pub fn remote_static(&self) -> Option<PublicKey> {
        self.rs.map(PublicKey::from_bytes)
    }

    /// Our ephemeral public key.
    pub fn ephemeral_public_key(&self) -> PublicKey {
        self.e.public_key()
    }

    /// The current handshake hash (final once complete).
    pub fn hash(&self) -> &[u8; HASH_LEN] {
        &self.h
    }

    fn our_turn(&self) -> bool {
        self.index.is_multiple_of(2) == self.initiator
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash2(&self.h, data);
    }

    fn mix_key(&mut self, token: Token) -> Result<(), NoiseError> {
        let (local_static, remote_static) = match token {
            Token::Ee => (false, false),
            Token::Es => (!self.initiator, self.initiator),
            Token::Se => (self.initiator, !self.initiator),
            Token::Ss => (true, true),
            Token::E | Token::S => return Err(NoiseError::Internal("mix_key on a key token")),
        };
        let local = if local_static {
            self.s.seed()
        } else {
            self.e.seed()
        };
        let remote = if remote_static { self.rs } else { self.re };
        let remote = remote.ok_or(NoiseError::Internal("DH before the remote key is known"))?;
        let mut shared = dh(&local, &remote)?;
        let (ck, mut k) = hkdf2(&self.ck, &shared)?;
        shared.zeroize();
        self.ck = ck;
        self.cipher.initialise_key(&k[..32]);
        k.zeroize();
        Ok(())
    }

    fn fail<T>(&mut self, err: NoiseError) -> Result<T, NoiseError> {
        self.status = Status::Failed;
        Err(err)
    }

    /// Produces our next message carrying `payload` (empty for secret streams).
    pub fn write_message(&mut self, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
        match self.next_step() {
            Step::Write => {}
            Step::Failed => return Err(NoiseError::Failed),
            _ => {
                return Err(NoiseError::ApiMisuse(
                    "write_message when it is not our turn",
                ));
            }
        }
        match self.write_inner(payload) {
            Ok(msg) => Ok(msg),
            Err(e) => self.fail(e),
        }
    }

    fn write_inner(&mut self, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let tokens = self
            .pattern
            .messages()
            .get(self.index)
            .ok_or(NoiseError::Internal("no message left"))?;
        let mut out = Vec::with_capacity(2 * DH_LEN + 2 * TAG_LEN + payload.len());
        for token in tokens.iter() {
            match token {
                Token::E => {
                    let e = *self.e.public_key().as_bytes();
                    self.mix_hash(&e);
                    out.extend_from_slice(&e);
                }
                Token::S => {
                    let mut buf = self.s.public_key().as_bytes().to_vec();
                    self.encrypt_and_hash(&mut buf)?;
                    out.extend_from_slice(&buf);
                }
                t => self.mix_key(*t)?,
            }
        }
        let mut buf = payload.to_vec();
        self.encrypt_and_hash(&mut buf)?;
        out.extend_from_slice(&buf);
        if out.len() > MAX_MESSAGE_LEN {
            return Err(NoiseError::ApiMisuse(
                "payload makes the message exceed 65535 bytes",
            ));
        }
        self.index += 1;
        self.after_message(false)?;
        Ok(out)
    }

    /// Processes the peer's next message and returns its payload.
    ///
    /// If the message revealed the remote static key, [`Self::next_step`] is then
    /// [`Step::Verdict`].
    pub fn read_message(&mut self, message: &[u8]) -> Result<Vec<u8>, NoiseError> {
        match self.next_step() {
            Step::Read => {}
            Step::Failed => return Err(NoiseError::Failed),
            _ => {
                return Err(NoiseError::ApiMisuse(
                    "read_message when it is not the peer's turn",
                ));
            }
        }
        match self.read_inner(message) {
            Ok(p) => Ok(p),
            Err(e) => self.fail(e),
        }
    }

    fn read_inner(&mut self, message: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if message.len() > MAX_MESSAGE_LEN {
            return Err(NoiseError::TooLong);
        }
        let tokens = self
            .pattern
            .messages()
            .get(self.index)
            .ok_or(NoiseError::Internal("no message left"))?;
        let mut rest = message;
        let mut learned_static = false;
        for token in tokens.iter() {
            match token {
                Token::E => {
                    let (re, tail) = split_key(rest)?;
                    rest = tail;
                    self.mix_hash(&re);
                    self.re = Some(re);
                }
                Token::S => {
                    let len = if self.cipher.has_key() {
                        DH_LEN + TAG_LEN
                    } else {
                        DH_LEN
                    };
                    if rest.len() < len {
                        return Err(NoiseError::Truncated);
                    }
                    let (ct, tail) = rest.split_at(len);
                    rest = tail;
                    let plain = self.decrypt_and_hash(ct)?;
                    let rs: [u8; DH_LEN] = plain
                        .as_slice()
                        .try_into()
                        .map_err(|_| NoiseError::Internal("static key length"))?;
                    self.rs = Some(rs);
                    learned_static = true;
                }
                t => self.mix_key(*t)?,
            }
        }
        let payload = self.decrypt_and_hash(rest)?;
        self.index += 1;
        self.after_message(learned_static)?;
        Ok(payload)
    }

    fn after_message(&mut self, learned_static: bool) -> Result<(), NoiseError> {
        if learned_static {
            let rs = self
                .remote_static()
                .ok_or(NoiseError::Internal("learned key missing"))?;
            self.status = Status::Verdict(rs);
            return Ok(());
        }
        self.advance()
    }

    fn advance(&mut self) -> Result<(), NoiseError> {
        if self.index < self.pattern.messages().len() {
            self.status = Status::Running;
            return Ok(());
        }
        let (mut k1, mut k2) = hkdf2(&self.ck, &[])?;
        let mut tx = [0u8; 32];
        let mut rx = [0u8; 32];
        let (t, r) = if self.initiator {
            (&k1, &k2)
        } else {
            (&k2, &k1)
        };
        tx.copy_from_slice(&t[..32]);
        rx.copy_from_slice(&r[..32]);
        k1.zeroize();
        k2.zeroize();
        self.ck.zeroize();
        let remote_public_key = self
            .remote_static()
            .ok_or(NoiseError::Internal("complete without a remote key"))?;
        self.result = Some(Handshake {
            tx,
            rx,
            hash: self.h,
            remote_public_key,
            is_initiator: self.initiator,
        });
        self.status = Status::Complete;
        Ok(())
    }

    /// The key firewall's decision on the remote static key of [`Step::Verdict`]. Refusing fails
    /// the handshake with [`NoiseError::Rejected`].
    pub fn handle_verdict(&mut self, allow: bool) -> Result<(), NoiseError> {
        let Status::Verdict(pk) = self.status else {
            return Err(NoiseError::ApiMisuse(
                "handle_verdict without a pending verdict",
            ));
        };
        if !allow {
            return self.fail(NoiseError::Rejected(pk));
        }
        match self.advance() {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// The completed handshake, or an error if it is not complete.
    pub fn into_handshake(mut self) -> Result<Handshake, NoiseError> {
        match self.status {
            Status::Complete => self
                .result
                .take()
                .ok_or(NoiseError::Internal("complete without a result")),
            Status::Failed => Err(NoiseError::Failed),
            _ => Err(NoiseError::ApiMisuse("into_handshake before completion")),
        }
    }

    fn encrypt_and_hash(&mut self, buf: &mut Vec<u8>) -> Result<(), NoiseError> {
        let h = self.h;
        self.cipher.encrypt(&h, buf)?;
        self.mix_hash(buf);
        Ok(())
    }

    fn decrypt_and_hash(&mut self, ct: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let h = self.h;
        let plain = self.cipher.decrypt(&h, ct)?;
        self.mix_hash(ct);
        Ok(plain)
    }
}

impl Drop for NoiseHandshake {
    fn drop(&mut self) {
        self.ck.zeroize();
    }
}

fn split_key(buf: &[u8]) -> Result<([u8; DH_LEN], &[u8]), NoiseError> {
    if buf.len() < DH_LEN {
        return Err(NoiseError::Truncated);
    }
    let (k, rest) = buf.split_at(DH_LEN);
    let k: [u8; DH_LEN] = k.try_into().map_err(|_| NoiseError::Truncated)?;
    Ok((k, rest))
}

#[cfg(test)]
mod tests;
