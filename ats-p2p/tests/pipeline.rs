//! The foundations together, as the node will use them: hash the source, receive it in chunks
//! (in any order) into a temporary file, verify, commit.

use std::fs;

use ats_p2p::hashing::sha256_file;
use ats_p2p::save::IncomingFile;
use ats_p2p::topic::transfer_topic;
use proptest::prelude::*;

/// Largest DATA frame payload (design.md): the chunk size the receiver sees.
const CHUNK: usize = 64 * 1024;

fn receive_in_order(order: &[usize], data: &[u8], dir: &std::path::Path) -> std::path::PathBuf {
    let tid = hex::encode([7u8; 16]);
    let mut incoming = IncomingFile::create(dir, &tid, "payload.bin").expect("create");
    for &i in order {
        let start = i * CHUNK;
        let end = (start + CHUNK).min(data.len());
        incoming
            .write_at(start as u64, &data[start..end])
            .expect("write");
    }
    assert_eq!(incoming.len(), data.len() as u64);
    incoming.commit().expect("commit")
}

proptest! {
    #![proptest_config(crate::proptest_config(24, 0x5eed_4001))]

    #[test]
    fn chunks_in_any_order_give_the_same_file(
        data in prop::collection::vec(any::<u8>(), 1..(5 * CHUNK)),
        seed in any::<u64>(),
    ) {
        let src_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("source.bin");
        fs::write(&src, &data).unwrap();
        let offered = sha256_file(&src, |_, _| {}).unwrap();

        let n = data.len().div_ceil(CHUNK);
        let mut order: Vec<usize> = (0..n).collect();
        // A deterministic shuffle from the case's seed.
        let mut s = seed;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }

        let save_dir = tempfile::tempdir().unwrap();
        let path = receive_in_order(&order, &data, save_dir.path());
        let received = sha256_file(&path, |_, _| {}).unwrap();
        prop_assert_eq!(received, offered);
        prop_assert_eq!(fs::read_dir(save_dir.path()).unwrap().count(), 1);
    }
}

#[test]
fn both_sides_agree_on_the_topic_from_the_hex_id() {
    let tid_hex = "5f0c5f0c5f0c5f0c5f0c5f0c5f0c5f0c";
    let mut a = [0u8; 16];
    hex::decode_to_slice(tid_hex, &mut a).unwrap();
    let mut b = [0u8; 16];
    hex::decode_to_slice(tid_hex.to_uppercase(), &mut b).unwrap();
    assert_eq!(transfer_topic(&a), transfer_topic(&b));
}
