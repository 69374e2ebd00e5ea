//! HyperDHT namespaces, announce signatures and the holepunch secretbox.

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};

use super::messages::PeerRecord;
use crate::crypto::keyed_blake2b_256;
use crate::dht::{Id, hash, hash_batch};
use crate::keys::{KeyPair, PublicKey};

/// `hypercore-crypto.namespace("hyperswarm/dht", cmd)`: `H(H("hyperswarm/dht") ‖ u8 cmd)`.
pub fn namespace(cmd: u8) -> Id {
    let ns = hash(b"hyperswarm/dht");
    hash_batch(&[&ns, &[cmd]])
}

/// Namespaces by command.
pub mod ns {
    use super::{Id, namespace};
    use crate::hyperdht::commands;

    /// `NS_ANNOUNCE`.
    pub fn announce() -> Id {
        namespace(commands::ANNOUNCE as u8)
    }
    /// `NS_UNANNOUNCE`.
    pub fn unannounce() -> Id {
        namespace(commands::UNANNOUNCE as u8)
    }
    /// `NS_MUTABLE_PUT`.
    pub fn mutable_put() -> Id {
        namespace(commands::MUTABLE_PUT as u8)
    }
    /// `NS_PEER_HANDSHAKE` (the Noise prologue).
    pub fn peer_handshake() -> Id {
        namespace(commands::PEER_HANDSHAKE as u8)
    }
    /// `NS_PEER_HOLEPUNCH`.
    pub fn peer_holepunch() -> Id {
        namespace(commands::PEER_HOLEPUNCH as u8)
    }
    /// `NS_PLUGIN`.
    pub fn plugin() -> Id {
        namespace(commands::PLUGIN as u8)
    }
}

/// The 64 bytes an (un)announce signs:
/// `ns ‖ H(target ‖ nodeId ‖ token ‖ encode(peer) ‖ refresh)`.
pub fn announce_signable(
    ns: &Id,
    target: &Id,
    node_id: &Id,
    token: &Id,
    peer: &PeerRecord,
    refresh: Option<&Id>,
) -> [u8; 64] {
    let peer_bytes = peer.encode();
    let h = hash_batch(&[
        target,
        node_id,
        token,
        &peer_bytes,
        refresh.map_or(&[][..], |r| &r[..]),
    ]);
    let mut out = [0u8; 64];
    let (a, b) = out.split_at_mut(32);
    a.copy_from_slice(ns);
    b.copy_from_slice(&h);
    out
}

/// Signs an (un)announce with `key_pair`.
pub fn sign_announce(
    ns: &Id,
    target: &Id,
    node_id: &Id,
    token: &Id,
    peer: &PeerRecord,
    refresh: Option<&Id>,
    key_pair: &KeyPair,
) -> [u8; 64] {
    key_pair.sign(&announce_signable(
        ns, target, node_id, token, peer, refresh,
    ))
}

/// Verifies an (un)announce signature by `peer.public_key`.
pub fn verify_announce(
    ns: &Id,
    target: &Id,
    node_id: &Id,
    token: &Id,
    peer: &PeerRecord,
    refresh: Option<&Id>,
    signature: &[u8; 64],
) -> bool {
    PublicKey::from_bytes(peer.public_key).verify(
        &announce_signable(ns, target, node_id, token, peer, refresh),
        signature,
    )
}

/// `holepunchSecret = H_{handshakeHash}(NS_PEER_HOLEPUNCH)`.
pub fn holepunch_secret(handshake_hash: &[u8; 64]) -> Id {
    keyed_blake2b_256(handshake_hash, &[&ns::peer_holepunch()])
}

/// Why a secret box could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("holepunch payload does not authenticate")]
pub struct SecretBoxError;

/// `nonce(24) ‖ crypto_secretbox_easy(plain, nonce, key)`.
pub fn secretbox_seal(key: &Id, nonce: &[u8; 24], plain: &[u8]) -> Vec<u8> {
    let cipher = XSalsa20Poly1305::new(key.into());
    let mut out = nonce.to_vec();
    // Encryption of an in-memory buffer cannot fail for sizes below 2^38 bytes.
    if let Ok(ct) = cipher.encrypt(Nonce::from_slice(nonce), plain) {
        out.extend_from_slice(&ct);
    }
    out
}

/// Opens `nonce ‖ box`.
pub fn secretbox_open(key: &Id, sealed: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
    if sealed.len() < 24 + 16 {
        return Err(SecretBoxError);
    }
    let (nonce, ct) = sealed.split_at(24);
    XSalsa20Poly1305::new(key.into())
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| SecretBoxError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_namespaces() {
        assert_eq!(
            hex::encode(ns::announce()),
            "36386adddf9f6fd60db83a6f42fc159d1146aa8644037664230aaa1f0179d497"
        );
        assert_eq!(
            hex::encode(ns::unannounce()),
            "ded293cd93fb395e756ecf5fff426529e72c36eacc22e5ed944d9099a2561e32"
        );
        assert_eq!(
            hex::encode(ns::mutable_put()),
            "668e823edd5ce7f5338d68bf1161f4a3c28ce437ee2ab49efd30d99366039b1e"
        );
        assert_eq!(
            hex::encode(ns::peer_handshake()),
            "14d6d4b49214ab1033ed204976caa258bae9e1e8543b9ad1fd996a910b0c4e3a"
        );
        assert_eq!(
            hex::encode(ns::peer_holepunch()),
            "f1191cd5e67b10b54a507033280ed1ff0e12278268d5679c8f93d417210d168b"
        );
        assert_eq!(
            hex::encode(ns::plugin()),
            "6b8a2a8623f28c6c02a1e22abe515ce31cafd9af61d4b69970639aa7eb96a8d5"
        );
    }

    #[test]
    fn secretbox_round_trip() {
        let key = [9u8; 32];
        let sealed = secretbox_seal(&key, &[1; 24], b"hi");
        assert_eq!(sealed.len(), 24 + 16 + 2);
        assert_eq!(secretbox_open(&key, &sealed).unwrap(), b"hi");
        assert!(secretbox_open(&[8u8; 32], &sealed).is_err());
    }
}
