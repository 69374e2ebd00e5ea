//! The twins of the cargo-fuzz targets `offer_accept` and `hub_body` in `fuzz/`: the same bodies
//! (`ats_p2p_signal::fuzzing`) on proptest inputs with fixed seeds, plus every committed corpus
//! seed, so CI runs them on the stable toolchain in a few seconds. Failures are persisted in
//! `proptest-regressions/fuzz_targets.txt` (committed) and replayed first on every run.

use std::path::PathBuf;

use ats_p2p_signal::fuzzing;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use serde_json::{Value, json};

/// Fixed seed, bounded cases, failures persisted beside this crate's sources.
fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz_targets.txt"
        )))),
        ..Config::default()
    }
}

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

#[test]
fn corpora_replay() {
    for (path, data) in corpus("offer_accept") {
        eprintln!("{}", path.display());
        fuzzing::offer_accept(&data);
    }
    for (path, data) in corpus("hub_body") {
        eprintln!("{}", path.display());
        fuzzing::hub_body(&data);
    }
}

fn offer_payload() -> Value {
    json!({
        "v": 1,
        "transfer_id": "00112233445566778899aabbccddeeff",
        "filename": "report.pdf",
        "size": 1234,
        "sha256": "ab".repeat(32),
        "sender_id": "agent-a",
        "recipient_id": "agent-b",
        "sender_key": "cd".repeat(32),
    })
}

/// A JSON value of bounded depth: what a peer may put in a field.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        "[0-9a-f]{0,70}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const OFFER_FIELDS: [&str; 8] = [
    "v",
    "transfer_id",
    "filename",
    "size",
    "sha256",
    "sender_id",
    "recipient_id",
    "sender_key",
];

/// Hub body fields the store reads.
const BODY_FIELDS: [&str; 12] = [
    "title",
    "description",
    "type",
    "channel",
    "priority",
    "payload",
    "lease_duration",
    "reason",
    "outputs",
    "parts",
    "slug",
    "name",
];

proptest! {
    #![proptest_config(config(512, 0x5eed_2001))]

    #[test]
    fn offer_accept_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::offer_accept(&data);
    }

    /// A valid offer with one field replaced by any JSON value.
    #[test]
    fn offer_with_one_field_replaced(field in 0usize..8, value in any_json()) {
        let mut payload = offer_payload();
        payload[OFFER_FIELDS[field]] = value;
        let mut data = vec![0];
        data.extend_from_slice(payload.to_string().as_bytes());
        fuzzing::offer_accept(&data);
    }

    /// An accept message with one field replaced by any JSON value.
    #[test]
    fn accept_with_one_field_replaced(field in 0usize..4, value in any_json()) {
        let mut accept = json!({
            "p2p": "accept",
            "v": 1,
            "transfer_id": "00112233445566778899aabbccddeeff",
            "receiver_key": "ef".repeat(32),
        });
        accept[["p2p", "v", "transfer_id", "receiver_key"][field]] = value;
        let mut data = vec![2];
        data.extend_from_slice(accept.to_string().as_bytes());
        fuzzing::offer_accept(&data);
    }
}

proptest! {
    #![proptest_config(config(256, 0x5eed_2002))]

    #[test]
    fn hub_body_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::hub_body(&data);
    }

    /// JSON object bodies with the fields the store reads, holding any JSON values, for every
    /// operation, task and actor.
    #[test]
    fn hub_body_objects(
        op in any::<u8>(),
        who in any::<u8>(),
        fields in prop::collection::vec((0usize..12, any_json()), 0..5),
    ) {
        let body: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(f, v)| (BODY_FIELDS[f].to_owned(), v))
            .collect();
        let mut data = vec![op, who];
        data.extend_from_slice(Value::Object(body).to_string().as_bytes());
        fuzzing::hub_body(&data);
    }
}
