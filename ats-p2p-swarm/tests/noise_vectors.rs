//! Known-answer tests against the JavaScript stack: `interop/js/noise-vectors.js` is run with
//! node at test time (so the vectors cannot drift from the installed packages) and every value
//! is recomputed in Rust: Ed25519 DH, XX and IK transcripts with fixed static and ephemeral
//! keys, libsodium secretstream messages and the secret-stream ids.
// Test helpers outside #[test] fns may unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;

use ats_p2p_swarm::noise::{self, NoiseConfig, NoiseHandshake, Pattern, Step};
use ats_p2p_swarm::secret_stream::cipher::{Decryptor, Encryptor};
use ats_p2p_swarm::secret_stream::stream_id;
use ats_p2p_swarm::{KeyPair, PublicKey};
use bytes::BytesMut;
use serde_json::Value;

fn vectors() -> Value {
    let dir = common::js_dir();
    let out = Command::new("node")
        .arg("noise-vectors.js")
        .current_dir(&dir)
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn h32(v: &Value) -> [u8; 32] {
    h(v).try_into().unwrap()
}

#[test]
fn js_known_answers() {
    let v = vectors();
    check_dh(&v["dh"]);
    check_transcript(&v["xx"], Pattern::XX);
    check_transcript(&v["ik"], Pattern::IK);
    check_secretstream(&v["secretstream"]);
    let ids = &v["stream_id"];
    let hash: [u8; 64] = h(&ids["hash"]).try_into().unwrap();
    assert_eq!(stream_id(&hash, true).to_vec(), h(&ids["initiator"]));
    assert_eq!(stream_id(&hash, false).to_vec(), h(&ids["responder"]));
}

fn check_dh(v: &Value) {
    for t in v["vectors"].as_array().unwrap() {
        let shared = noise::dh(&h32(&t["local_seed"]), &h32(&t["remote_public"])).unwrap();
        assert_eq!(shared.to_vec(), h(&t["shared"]));
    }
    let invalid = v["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 6);
    for t in invalid {
        let ours = noise::dh(&[1; 32], &h32(&t["public"])).is_ok();
        assert_eq!(
            ours,
            t["accepted"].as_bool().unwrap(),
            "point {}",
            t["public"]
        );
    }
}

fn check_transcript(v: &Value, pattern: Pattern) {
    let prologue = h(&v["prologue"]);
    let si = KeyPair::from_seed(h32(&v["initiator_seed"]));
    let sr = KeyPair::from_seed(h32(&v["responder_seed"]));
    let mk = |initiator: bool| {
        let (s, eph) = if initiator {
            (si.clone(), h32(&v["initiator_ephemeral_seed"]))
        } else {
            (sr.clone(), h32(&v["responder_ephemeral_seed"]))
        };
        NoiseHandshake::new(NoiseConfig {
            pattern,
            initiator,
            static_keypair: s,
            prologue: prologue.clone(),
            remote_static: (initiator && pattern == Pattern::IK).then(|| sr.public_key()),
            ephemeral_seed: Some(eph),
        })
        .unwrap()
    };
    let mut i = mk(true);
    let mut r = mk(false);
    let payloads: Vec<Vec<u8>> = v["payloads"].as_array().unwrap().iter().map(h).collect();
    for (n, m) in v["messages"].as_array().unwrap().iter().enumerate() {
        let (w, rd) = if n % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        if let Step::Verdict(_) = w.next_step() {
            w.handle_verdict(true).unwrap();
        }
        let payload = payloads.get(n).cloned().unwrap_or_default();
        let ours = w.write_message(&payload).unwrap();
        assert_eq!(
            hex::encode(&ours),
            m["message"].as_str().unwrap(),
            "{pattern:?} msg {n}"
        );
        // and read the JS bytes
        let got = rd.read_message(&h(&m["message"])).unwrap();
        assert_eq!(got, h(&m["payload"]));
        if let Step::Verdict(_) = rd.next_step() {
            rd.handle_verdict(true).unwrap();
        }
    }
    let hi = i.into_handshake().unwrap();
    let hr = r.into_handshake().unwrap();
    assert_eq!(hi.tx.to_vec(), h(&v["initiator_tx"]));
    assert_eq!(hi.rx.to_vec(), h(&v["initiator_rx"]));
    assert_eq!(hr.tx.to_vec(), h(&v["responder_tx"]));
    assert_eq!(hr.rx.to_vec(), h(&v["responder_rx"]));
    assert_eq!(hi.hash.to_vec(), h(&v["hash"]));
    assert_eq!(hr.hash.to_vec(), h(&v["responder_hash"]));
    assert_eq!(hi.remote_public_key, sr.public_key());
    assert_eq!(
        hr.remote_public_key,
        PublicKey::from_bytes(*si.public_key().as_bytes())
    );
}

fn check_secretstream(v: &Value) {
    let key = h32(&v["key"]);
    let header: [u8; 24] = h(&v["header"]).try_into().unwrap();
    let (mut enc, our_header) = Encryptor::new(&key, common::FixedRng(header.to_vec()));
    assert_eq!(our_header, header);
    let mut dec = Decryptor::new(&key, &header);
    // A second sender appends every frame to one buffer (frames sealed behind others).
    let (mut enc_all, _) = Encryptor::new(&key, common::FixedRng(header.to_vec()));
    let mut all = BytesMut::new();
    let mut expected_all = Vec::new();
    let messages = v["messages"].as_array().unwrap();
    // every length class: 0..=80 and each residue mod 16 around 64 KiB (both sealing paths)
    assert!(messages.len() >= 81 + 16);
    for m in messages {
        let plain = h(&m["plain"]);
        let cipher = h(&m["cipher"]);
        let mut frame = BytesMut::new();
        enc.encrypt_frame(&plain, &mut frame).unwrap();
        let len = cipher.len();
        assert_eq!(
            &frame[..3],
            &[len as u8, (len >> 8) as u8, (len >> 16) as u8]
        );
        assert_eq!(hex::encode(&frame[3..]), hex::encode(&cipher));
        let mut body = BytesMut::from(&cipher[..]);
        dec.decrypt(&mut body).unwrap();
        assert_eq!(&body[..], &plain[..]);
        enc_all.encrypt_frame(&plain, &mut all).unwrap();
        expected_all.extend_from_slice(&frame);
    }
    assert!(all[..] == expected_all[..], "frames appended to one buffer");
}
