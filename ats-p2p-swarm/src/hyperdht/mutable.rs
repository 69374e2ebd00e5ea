//! Mutable and immutable values (hyperdht `lib/persistent.js`, `mutablePutRequest`,
//! `mutableGetResponse`, `mutableSignable`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::crypto::ns;
use crate::dht::{Id, hash};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::keys::{KeyPair, PublicKey};

/// Stored values expire after 48 h (hyperdht default).
pub const VALUE_MAX_AGE: Duration = Duration::from_secs(48 * 60 * 60);
/// Most stored mutable values, and separately immutable ones; the oldest is evicted when full.
pub const MAX_VALUES: usize = 4096;
/// Largest value stored (keeps the store under ~8 MiB each; hyperdht values fit one datagram).
pub const MAX_VALUE_LEN: usize = 2048;

/// A signed mutable value: `uint seq ‖ buffer value ‖ fixed64 signature` (a get reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableValue {
    /// Sequence number.
    pub seq: u64,
    /// The value.
    pub value: Vec<u8>,
    /// Ed25519 signature over [`mutable_signable`].
    pub signature: [u8; 64],
}

impl MutableValue {
    /// Encodes a get reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(self.seq).buffer(&self.value).raw(&self.signature);
        w.into_vec()
    }

    /// Decodes a get reply.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        Ok(Self {
            seq: r.uint()?,
            value: r.buffer()?.to_vec(),
            signature: r.fixed64()?,
        })
    }

    /// Signs `value` at `seq`.
    pub fn sign(key_pair: &KeyPair, seq: u64, value: Vec<u8>) -> Self {
        let signature = key_pair.sign(&mutable_signable(seq, &value));
        Self {
            seq,
            value,
            signature,
        }
    }

    /// Checks the signature against `public_key`.
    pub fn verify(&self, public_key: &[u8; 32]) -> bool {
        PublicKey::from_bytes(*public_key)
            .verify(&mutable_signable(self.seq, &self.value), &self.signature)
    }
}

/// `NS_MUTABLE_PUT ‖ H(uint seq ‖ buffer value)`.
pub fn mutable_signable(seq: u64, value: &[u8]) -> [u8; 64] {
    let mut w = Writer::new();
    w.uint(seq).buffer(value);
    let h = hash(&w.into_vec());
    let mut out = [0u8; 64];
    let (a, b) = out.split_at_mut(32);
    a.copy_from_slice(&ns::mutable_put());
    b.copy_from_slice(&h);
    out
}

/// MUTABLE_PUT value: `fixed32 publicKey ‖ uint seq ‖ buffer value ‖ fixed64 signature`.
pub fn encode_mutable_put(public_key: &[u8; 32], v: &MutableValue) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(public_key)
        .uint(v.seq)
        .buffer(&v.value)
        .raw(&v.signature);
    w.into_vec()
}

/// Decodes a MUTABLE_PUT value.
pub fn decode_mutable_put(buf: &[u8]) -> Result<([u8; 32], MutableValue), DecodeError> {
    let mut r = Reader::new(buf);
    let pk = r.fixed32()?;
    let seq = r.uint()?;
    let value = r.buffer()?.to_vec();
    let signature = r.fixed64()?;
    Ok((
        pk,
        MutableValue {
            seq,
            value,
            signature,
        },
    ))
}

/// Why a put was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutError {
    /// Malformed, unsigned, too large, or not matching the target: no reply.
    Drop,
    /// Same seq, different value (`SEQ_REUSED`).
    SeqReused,
    /// Lower seq than stored (`SEQ_TOO_LOW`).
    SeqTooLow,
}

#[derive(Debug, Clone)]
struct Stored<T> {
    value: T,
    stored: Instant,
}

/// Node-side storage of mutable and immutable values.
#[derive(Debug, Default)]
pub struct ValueStore {
    mutables: HashMap<Id, Stored<MutableValue>>,
    immutables: HashMap<Id, Stored<Vec<u8>>>,
}

fn insert_bounded<T>(map: &mut HashMap<Id, Stored<T>>, k: Id, v: Stored<T>) {
    if !map.contains_key(&k) && map.len() >= MAX_VALUES {
        let oldest = map.iter().min_by_key(|(_, s)| s.stored).map(|(k, _)| *k);
        if let Some(o) = oldest {
            map.remove(&o);
        }
    }
    map.insert(k, v);
}

impl ValueStore {
    /// Handles a MUTABLE_PUT for `target`.
    pub fn put_mutable(&mut self, now: Instant, target: &Id, value: &[u8]) -> Result<(), PutError> {
        let (pk, v) = decode_mutable_put(value).map_err(|_| PutError::Drop)?;
        if hash(&pk) != *target
            || v.value.is_empty()
            || v.value.len() > MAX_VALUE_LEN
            || !v.verify(&pk)
        {
            return Err(PutError::Drop);
        }
        if let Some(old) = self.get_mutable(now, target) {
            if old.seq == v.seq && old.value != v.value {
                return Err(PutError::SeqReused);
            }
            if v.seq < old.seq {
                return Err(PutError::SeqTooLow);
            }
        }
        insert_bounded(
            &mut self.mutables,
            *target,
            Stored {
                value: v,
                stored: now,
            },
        );
        Ok(())
    }

    /// The fresh mutable value for `target`.
    pub fn get_mutable(&self, now: Instant, target: &Id) -> Option<&MutableValue> {
        self.mutables
            .get(target)
            .filter(|s| now.saturating_duration_since(s.stored) < VALUE_MAX_AGE)
            .map(|s| &s.value)
    }

    /// Handles an IMMUTABLE_PUT for `target`.
    pub fn put_immutable(
        &mut self,
        now: Instant,
        target: &Id,
        value: &[u8],
    ) -> Result<(), PutError> {
        if value.is_empty() || value.len() > MAX_VALUE_LEN || hash(value) != *target {
            return Err(PutError::Drop);
        }
        insert_bounded(
            &mut self.immutables,
            *target,
            Stored {
                value: value.to_vec(),
                stored: now,
            },
        );
        Ok(())
    }

    /// The fresh immutable value for `target`.
    pub fn get_immutable(&self, now: Instant, target: &Id) -> Option<&[u8]> {
        self.immutables
            .get(target)
            .filter(|s| now.saturating_duration_since(s.stored) < VALUE_MAX_AGE)
            .map(|s| s.value.as_slice())
    }

    /// Drops expired values.
    pub fn expire(&mut self, now: Instant) {
        self.mutables
            .retain(|_, s| now.saturating_duration_since(s.stored) < VALUE_MAX_AGE);
        self.immutables
            .retain(|_, s| now.saturating_duration_since(s.stored) < VALUE_MAX_AGE);
    }

    /// (mutables, immutables) stored.
    pub fn sizes(&self) -> (usize, usize) {
        (self.mutables.len(), self.immutables.len())
    }
}
