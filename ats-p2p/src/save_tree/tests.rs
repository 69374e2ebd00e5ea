//! Tests of receiving a directory: chunking, verification, hostile manifests, taken names
//! and resuming.

use super::*;
use crate::partial;
use ats_p2p_signal::manifest::ManifestFile;

const ID: &str = "5f0c5f0c5f0c5f0c5f0c5f0c5f0c5f0c";

fn manifest_of(files: &[(&str, &[u8])], dirs: &[&str]) -> Manifest {
    Manifest {
        dirs: dirs.iter().map(|d| (*d).to_owned()).collect(),
        files: files
            .iter()
            .map(|(p, c)| ManifestFile {
                path: (*p).to_owned(),
                size: c.len() as u64,
                sha256: Sha256::digest(c).into(),
            })
            .collect(),
    }
}

fn visible(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn files_arrive_across_any_chunking_and_appear_only_at_commit() {
    let files: &[(&str, &[u8])] = &[
        ("a/b/one.txt", b"hello"),
        ("a/empty.txt", b""),
        ("two.bin", &[9u8; 1000]),
        ("z/last", b""),
    ];
    let manifest = manifest_of(files, &["a", "a/b", "hollow"]);
    let stream: Vec<u8> = files.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    for chunk in [1usize, 3, 5, 7, 4096] {
        let save = tempfile::tempdir().unwrap();
        let mut tree = IncomingTree::create(save.path(), ID, "project", &manifest).unwrap();
        let mut offset = 0u64;
        for part in stream.chunks(chunk) {
            tree.write_at(offset, part).unwrap();
            offset += part.len() as u64;
        }
        assert_eq!(tree.finish().unwrap().0, manifest.digest(), "chunk {chunk}");
        assert!(tree.mismatched().is_empty());
        assert!(
            visible(save.path()).is_empty(),
            "nothing visible before commit"
        );
        let path = tree.commit().unwrap();
        assert_eq!(path, save.path().join("project"));
        assert_eq!(fs::read(path.join("a/b/one.txt")).unwrap(), b"hello");
        assert_eq!(fs::read(path.join("two.bin")).unwrap(), vec![9u8; 1000]);
        assert_eq!(fs::read(path.join("a/empty.txt")).unwrap(), b"");
        assert_eq!(fs::read(path.join("z/last")).unwrap(), b"");
        assert!(path.join("hollow").is_dir());
        assert_eq!(visible(save.path()), ["project"], "no temporary left");
    }
}

#[test]
fn a_wrong_file_changes_the_digest_and_names_the_file() {
    let manifest = manifest_of(&[("x", b"abc"), ("y", b"def")], &[]);
    let save = tempfile::tempdir().unwrap();
    let mut tree = IncomingTree::create(save.path(), ID, "d", &manifest).unwrap();
    tree.write_at(0, b"abcdeF").unwrap();
    assert_ne!(tree.finish().unwrap().0, manifest.digest());
    assert_eq!(tree.mismatched(), ["y"]);
    drop(tree);
    assert_eq!(
        fs::read_dir(save.path()).unwrap().count(),
        0,
        "dropped: removed"
    );
}

#[test]
fn more_bytes_than_the_manifest_or_a_gap_is_an_error() {
    let manifest = manifest_of(&[("x", b"abc")], &[]);
    let save = tempfile::tempdir().unwrap();
    let mut tree = IncomingTree::create(save.path(), ID, "d", &manifest).unwrap();
    assert!(tree.write_at(1, b"b").is_err(), "a gap");
    assert!(matches!(
        tree.write_at(0, b"abcd"),
        Err(SaveError::SizeLimit { .. })
    ));
    let short = IncomingTree::create(save.path(), ID, "d", &manifest)
        .unwrap()
        .finish();
    assert!(short.is_err(), "bytes missing at the end");
}

#[test]
fn hostile_manifests_are_refused_before_anything_is_written() {
    let save = tempfile::tempdir().unwrap();
    let target = save.path().join("incoming");
    for bad in ["../x", "/abs", "a/../../x", "CON", "sub/nul.txt", "a\\b"] {
        let manifest = manifest_of(&[(bad, b"evil")], &[]);
        let err = IncomingTree::create(&target, ID, "d", &manifest).unwrap_err();
        assert!(
            matches!(err, SaveError::UnsafePath { .. }),
            "{bad}: {err:?}"
        );
    }
    assert!(!target.exists(), "not even the save directory was made");
    assert!(!save.path().join("x").exists());
}

#[test]
fn a_taken_name_is_never_merged_into() {
    let save = tempfile::tempdir().unwrap();
    fs::create_dir(save.path().join("project")).unwrap();
    fs::write(save.path().join("project/mine.txt"), b"keep").unwrap();
    let manifest = manifest_of(&[("mine.txt", b"theirs")], &[]);
    let mut tree = IncomingTree::create(save.path(), ID, "project", &manifest).unwrap();
    tree.write_at(0, b"theirs").unwrap();
    tree.finish().unwrap();
    let path = tree.commit().unwrap();
    assert_eq!(path, save.path().join("project (1)"));
    assert_eq!(
        fs::read(save.path().join("project/mine.txt")).unwrap(),
        b"keep"
    );
    assert_eq!(fs::read(path.join("mine.txt")).unwrap(), b"theirs");
}

fn record_for(manifest: &Manifest) -> PartialRecord {
    PartialRecord {
        directory: true,
        ..partial::PartialKey {
            sender_key: [3; 32],
            name: "d".into(),
            size: manifest.total_size().unwrap(),
            sha256: FileHash(manifest.digest()),
        }
        .record(ID)
    }
}

/// A tree of three files with the middle one long enough for whole granules.
fn resumable() -> (Manifest, Vec<u8>) {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let files: &[(&str, &[u8])] = &[("a/one", b"first"), ("b/big", &big), ("c/last", b"end")];
    let stream = files.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    (manifest_of(files, &["a", "b", "c", "empty"]), stream)
}

#[test]
fn a_kept_directory_continues_after_its_verified_files_and_whole_granules() {
    let (manifest, stream) = resumable();
    let save = tempfile::tempdir().unwrap();
    let record = record_for(&manifest);
    let mut tree =
        IncomingTree::create_with_record(save.path(), ID, "d", &manifest, Some(&record)).unwrap();
    // The first file and 200,000 bytes of the big one arrive, then the peer goes.
    let cut = 5 + 200_000;
    tree.write_at(0, &stream[..cut]).unwrap();
    let temp = tree.temp_name().to_owned();
    tree.keep().unwrap();
    let kept = partial::list_partials(save.path()).unwrap();
    assert_eq!(kept.len(), 1, "listed as a partial");
    assert!(kept[0].record.directory);
    assert_eq!(kept[0].len, cut as u64);

    let mut tree = IncomingTree::adopt(save.path(), &temp, "d", &manifest).unwrap();
    // One whole file, then the big one's whole granules (three of 64 KiB).
    assert_eq!(tree.position(), 5 + 3 * 65_536);
    let at = tree.position() as usize;
    tree.write_at(tree.position(), &stream[at..]).unwrap();
    assert_eq!(tree.finish().unwrap().0, manifest.digest());
    let path = tree.commit().unwrap();
    assert_eq!(fs::read(path.join("b/big")).unwrap(), stream[5..300_005]);
    assert_eq!(fs::read(path.join("c/last")).unwrap(), b"end");
    assert!(path.join("empty").is_dir());
    assert_eq!(visible(save.path()), ["d"]);
    assert_eq!(
        fs::read_dir(save.path()).unwrap().count(),
        1,
        "the record went too"
    );
}

#[test]
fn a_damaged_kept_file_is_received_again_from_its_start() {
    let (manifest, stream) = resumable();
    let save = tempfile::tempdir().unwrap();
    let record = record_for(&manifest);
    let mut tree =
        IncomingTree::create_with_record(save.path(), ID, "d", &manifest, Some(&record)).unwrap();
    tree.write_at(0, &stream[..5 + 300_000 + 1]).unwrap();
    let temp = tree.temp_name().to_owned();
    tree.keep().unwrap();
    // Someone changed a byte of the first, complete file.
    fs::write(save.path().join(&temp).join("a/one"), b"First").unwrap();
    let mut tree = IncomingTree::adopt(save.path(), &temp, "d", &manifest).unwrap();
    assert_eq!(tree.position(), 0, "nothing after a wrong file is trusted");
    tree.write_at(0, &stream).unwrap();
    assert_eq!(tree.finish().unwrap().0, manifest.digest());

    // And a sender that does not resume makes the receiver start over.
    tree.restart().unwrap();
    assert_eq!(tree.position(), 0);
    tree.write_at(0, &stream).unwrap();
    assert_eq!(tree.finish().unwrap().0, manifest.digest());
    tree.commit().unwrap();
}

#[test]
fn a_kept_directory_held_by_a_live_receiver_is_not_taken() {
    let (manifest, _) = resumable();
    let save = tempfile::tempdir().unwrap();
    let record = record_for(&manifest);
    let tree =
        IncomingTree::create_with_record(save.path(), ID, "d", &manifest, Some(&record)).unwrap();
    let err = IncomingTree::adopt(save.path(), tree.temp_name(), "d", &manifest).unwrap_err();
    assert!(
        matches!(&err, SaveError::CreateTemp { source, .. } if source.kind() == io::ErrorKind::WouldBlock),
        "{err:?}"
    );
}
