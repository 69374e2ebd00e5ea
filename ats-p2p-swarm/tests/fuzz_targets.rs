//! The twins of the cargo-fuzz targets in `fuzz/`: the same bodies (`ats_p2p_swarm::fuzzing`)
//! on proptest inputs with fixed seeds, plus every committed corpus seed, so CI runs them on
//! the stable toolchain in a few seconds. Failures are persisted in
//! `proptest-regressions/integration.txt` (committed) and replayed first on every run.

use std::path::PathBuf;

use ats_p2p_swarm::fuzzing;
use proptest::prelude::*;

use crate::common::proptest_config as config;

/// The committed corpus of one fuzz target (`fuzz/corpus/<target>/`).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus")).join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus in {}", dir.display());
    inputs
}

fn run_corpus(target: &str, body: fn(&[u8])) {
    for (path, data) in corpus(target) {
        eprintln!("{}", path.display());
        body(&data);
    }
}

#[test]
fn corpora_replay() {
    run_corpus("compact_encoding", fuzzing::compact_encoding);
    run_corpus("udx_packet", fuzzing::udx_packets);
    run_corpus("dht_message", fuzzing::dht_messages);
    run_corpus("hyperdht_messages", fuzzing::hyperdht_messages);
    run_corpus("noise_ik", |data| {
        let _completed = fuzzing::noise_ik(data);
    });
    run_corpus("secret_stream", fuzzing::secret_stream);
}

/// An untampered msg1 completes the handshake (the success path the checks rely on is reached),
/// and an untampered message stream is delivered whole.
#[test]
fn honest_inputs_reach_the_success_paths() {
    // case 1, a well-formed payload (flags 0: with a UDX id, id 5), no edits, no truncation
    // or extension: refused it would panic ("an unmodified msg1 ... was refused").
    assert!(fuzzing::noise_ik(&[1 | 8, 5, 0, 5, 0, 0, 0, 0, 2]));
    // The same refused by the firewall, or with an empty payload (no Noise payload).
    assert!(!fuzzing::noise_ik(&[1 | 8 | 4, 5, 0, 5, 0, 0, 0, 0, 2]));
    assert!(!fuzzing::noise_ik(&[1, 0, 0, 2]));
    // Raw bytes that decode as a payload of another version complete the handshake (the
    // answer then carries VERSION_MISMATCH, as hyperdht does).
    assert!(fuzzing::noise_ik(&[1, 3, b'a', b'b', b'c', 0, 2]));
    // header + two messages, no edits, chunks of 7 bytes.
    fuzzing::secret_stream(&[1, 2, 3, b'x', b'y', b'z', 1, b'q', 0, 6]);
    // Long messages (flag 2): 1024 and 1000 bytes (the fast and the portable cipher path),
    // no edits, chunks of 200 bytes.
    fuzzing::secret_stream(&[3, 2, 0, 4, 1, b'a', 0xe8, 3, 1, b'b', 0, 199]);
}

proptest! {
    #![proptest_config(config(512, 0x5eed_1001))]

    #[test]
    fn compact_encoding(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::compact_encoding(&data);
    }

    #[test]
    fn hyperdht_messages(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::hyperdht_messages(&data);
    }
}

proptest! {
    #![proptest_config(config(128, 0x5eed_1002))]

    #[test]
    fn udx_packet(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::udx_packets(&data);
    }

    #[test]
    fn dht_message(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        fuzzing::dht_messages(&data);
    }

    /// Valid-looking DHT requests (right id byte and a LOOKUP/ANNOUNCE-sized body) go deeper
    /// than random bytes.
    #[test]
    fn dht_message_requests(
        bodies in prop::collection::vec((any::<u8>(), 0u8..16, prop::collection::vec(any::<u8>(), 9..120)), 1..8),
    ) {
        let mut data = Vec::new();
        for (head, command, mut body) in bodies {
            body[0] = 0x03; // REQUEST_ID
            body[1] = 0x08; // flags: target
            body[8] = command;
            data.push(head);
            data.extend_from_slice(&(body.len() as u16).to_le_bytes());
            data.extend_from_slice(&body);
        }
        fuzzing::dht_messages(&data);
    }
}

proptest! {
    #![proptest_config(config(64, 0x5eed_1003))]

    #[test]
    fn noise_ik(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _completed = fuzzing::noise_ik(&data);
    }

    /// A real msg1 with a random (raw or well-formed) payload and random edits: accepted only
    /// when unmodified, allowed and decodable.
    #[test]
    fn noise_ik_edited_msg1(
        payload in prop::collection::vec(any::<u8>(), 0..64),
        edits in prop::collection::vec((any::<u16>(), any::<u8>()), 0..4),
        tail in 0u8..4,
        allow in any::<bool>(),
        well_formed in any::<bool>(),
    ) {
        let case = 1 | if allow { 0 } else { 4 } | if well_formed { 8 } else { 0 };
        let mut data = vec![case, payload.len() as u8];
        data.extend_from_slice(&payload);
        data.push(edits.len() as u8);
        for (pos, xor) in edits {
            data.extend_from_slice(&pos.to_le_bytes());
            data.push(xor);
        }
        data.push(tail);
        data.extend_from_slice(&[0xff; 8]);
        let _completed = fuzzing::noise_ik(&data);
    }

    #[test]
    fn secret_stream(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        fuzzing::secret_stream(&data);
    }

    /// Real frames, then random edits and junk, in random chunk sizes.
    #[test]
    fn secret_stream_tampered(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..7),
        edits in prop::collection::vec((any::<u16>(), any::<u8>()), 0..4),
        chunk in any::<u8>(),
        junk in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut data = vec![1, messages.len() as u8];
        for m in &messages {
            data.push(m.len() as u8);
            data.extend_from_slice(m);
        }
        data.push(edits.len() as u8);
        for (pos, xor) in edits {
            data.extend_from_slice(&pos.to_le_bytes());
            data.push(xor);
        }
        data.push(chunk);
        data.extend_from_slice(&junk);
        fuzzing::secret_stream(&data);
    }
}
