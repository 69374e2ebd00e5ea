//! Runs every committed fuzz corpus input through the same logic as the fuzz targets, so CI
//! covers them on the stable toolchain.

// Test helpers outside #[test] functions unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ats_p2p_wire::fuzzing;

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
fn frame_decoder_corpus() {
    for (path, data) in corpus("frame_decoder") {
        eprintln!("{}", path.display());
        fuzzing::frame_decoder(&data);
    }
}

#[test]
fn receiver_corpus() {
    let mut completed = 0;
    for (path, data) in corpus("receiver") {
        eprintln!("{}", path.display());
        if fuzzing::receiver(&data) == fuzzing::RunOutcome::Completed {
            completed += 1;
        }
    }
    // The seeds include honest transfers: the success path is exercised, not only failures.
    assert!(
        completed >= 3,
        "only {completed} corpus inputs complete a transfer"
    );
}

#[test]
fn receiver_external_hash_corpus() {
    let mut completed = 0;
    for (path, data) in corpus("receiver_external_hash") {
        eprintln!("{}", path.display());
        if fuzzing::receiver_external_hash(&data) == fuzzing::RunOutcome::Completed {
            completed += 1;
        }
    }
    assert!(
        completed >= 3,
        "only {completed} corpus inputs complete a transfer"
    );
}
