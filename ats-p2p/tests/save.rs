//! Receiving files into a real directory: temporary files, never overwriting, cleanup on every
//! failure path, and a real full disk (a 1 MiB tmpfs) where mounting is permitted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ats_p2p::error::SaveError;
use ats_p2p::save::{
    IncomingFile, MAX_NAME_ATTEMPTS, STALE_TEMP_AGE, available_space, remove_stale_temp_files,
};

const TID: &str = "00112233445566778899aabbccddeeff";

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .collect();
    names.sort();
    names
}

#[test]
fn commit_moves_into_place_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = IncomingFile::create(dir.path(), TID, "report.csv").unwrap();
    assert_eq!(f.file_name(), "report.csv");
    assert!(f.is_empty());
    let temp = f.temp_path().to_path_buf();
    assert_eq!(temp.parent(), Some(dir.path()));
    let temp_name = temp.file_name().unwrap().to_str().unwrap();
    assert!(
        temp_name.starts_with(&format!(".ats-p2p-{TID}-")),
        "{temp_name}"
    );
    assert!(temp_name.ends_with(".part"));
    assert!(temp.exists());

    f.append(b"a,b\n").unwrap();
    f.append(b"1,2\n").unwrap();
    assert_eq!(f.len(), 8);
    let path = f.commit().unwrap();
    assert_eq!(path, dir.path().join("report.csv"));
    assert_eq!(fs::read(&path).unwrap(), b"a,b\n1,2\n");
    assert!(!temp.exists());
    assert_eq!(entries(dir.path()), ["report.csv"]);
}

#[test]
fn positioned_writes_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = IncomingFile::create(dir.path(), TID, "x.bin").unwrap();
    f.write_at(6, b"world").unwrap();
    assert_eq!(f.len(), 11);
    f.write_at(0, b"hello ").unwrap();
    assert_eq!(f.len(), 11);
    f.append(b"!").unwrap();
    let path = f.commit().unwrap();
    assert_eq!(fs::read(path).unwrap(), b"hello world!");
}

#[test]
fn never_overwrites_and_numbers_names() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("data.csv"), b"original").unwrap();
    fs::write(dir.path().join("data (1).csv"), b"first copy").unwrap();
    let mut paths = Vec::new();
    for i in 0..3u8 {
        let mut f = IncomingFile::create(dir.path(), TID, "data.csv").unwrap();
        f.append(&[i]).unwrap();
        paths.push(f.commit().unwrap());
    }
    assert_eq!(
        paths,
        [
            dir.path().join("data (2).csv"),
            dir.path().join("data (3).csv"),
            dir.path().join("data (4).csv")
        ]
    );
    assert_eq!(fs::read(dir.path().join("data.csv")).unwrap(), b"original");
    assert_eq!(
        fs::read(dir.path().join("data (1).csv")).unwrap(),
        b"first copy"
    );
    assert_eq!(fs::read(&paths[2]).unwrap(), [2]);
}

#[cfg(unix)]
#[test]
fn planted_symlinks_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("evil.txt")).unwrap();
    // A dangling link too: creating through it would write outside.
    std::os::unix::fs::symlink(
        outside.path().join("created"),
        dir.path().join("evil (1).txt"),
    )
    .unwrap();

    let mut f = IncomingFile::create(dir.path(), TID, "evil.txt").unwrap();
    f.append(b"payload").unwrap();
    let path = f.commit().unwrap();
    assert_eq!(path, dir.path().join("evil (2).txt"));
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    assert!(!outside.path().join("created").exists());
}

#[test]
fn hostile_names_stay_inside() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("incoming");
    for name in [
        "../escape.txt",
        "/etc/passwd",
        "..\\..\\win.ini",
        "..",
        "",
        ".hidden",
        "a\u{0}b",
        "CON",
    ] {
        let mut f = IncomingFile::create(&save, TID, name).unwrap();
        f.append(name.as_bytes()).unwrap();
        let path = f.commit().unwrap();
        assert_eq!(path.parent(), Some(save.as_path()), "{name:?} -> {path:?}");
    }
    assert_eq!(
        entries(&save),
        [
            "_CON",
            "a_b",
            "escape.txt",
            "file",
            "file (1)",
            "hidden",
            "passwd",
            "win.ini"
        ]
    );
    // Nothing was written next to the save directory.
    assert_eq!(entries(dir.path()), ["incoming"]);
}

#[test]
fn drop_and_abort_remove_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = IncomingFile::create(dir.path(), TID, "a.txt").unwrap();
    f.append(b"partial").unwrap();
    let temp = f.temp_path().to_path_buf();
    assert!(temp.exists());
    drop(f);
    assert!(!temp.exists());

    let mut f = IncomingFile::create(dir.path(), TID, "a.txt").unwrap();
    f.append(b"partial").unwrap();
    f.abort().unwrap();
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn bad_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for tid in ["", "xyz", &"0".repeat(31), &"g".repeat(32), &"0".repeat(33)] {
        assert!(
            matches!(
                IncomingFile::create(dir.path(), tid, "a"),
                Err(SaveError::InvalidTransferId { .. })
            ),
            "{tid:?}"
        );
    }
    let file = dir.path().join("plain-file");
    fs::write(&file, b"").unwrap();
    assert!(matches!(
        IncomingFile::create(&file, TID, "a"),
        Err(SaveError::SaveDir { .. })
    ));

    let mut f = IncomingFile::create(dir.path(), TID, "a").unwrap();
    let err = f.write_at(u64::MAX, b"x").unwrap_err();
    assert!(matches!(err, SaveError::OffsetOverflow { .. }), "{err:?}");
    let err = f.write_at(i64::MAX as u64, b"x").unwrap_err();
    assert!(matches!(err, SaveError::OffsetOverflow { .. }), "{err:?}");
    drop(f);
    assert_eq!(entries(dir.path()), ["plain-file"]);
}

#[test]
fn size_limit_refuses_writes_past_the_offer() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = IncomingFile::create(dir.path(), TID, "a")
        .unwrap()
        .with_size_limit(10);
    f.append(b"0123456789").unwrap();
    let err = f.append(b"x").unwrap_err();
    assert!(
        matches!(err, SaveError::SizeLimit { end: 11, limit: 10 }),
        "{err:?}"
    );
    let err = f.write_at(5, b"012345").unwrap_err();
    assert!(matches!(err, SaveError::SizeLimit { .. }), "{err:?}");
    assert_eq!(f.len(), 10);
    f.write_at(5, b"abcde").unwrap();
    let path = f.commit().unwrap();
    assert_eq!(fs::read(path).unwrap(), b"01234abcde");
}

#[test]
fn gives_up_after_bounded_attempts() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("n"), b"").unwrap();
    for i in 1..MAX_NAME_ATTEMPTS {
        fs::write(dir.path().join(format!("n ({i})")), b"").unwrap();
    }
    let mut f = IncomingFile::create(dir.path(), TID, "n").unwrap();
    f.append(b"x").unwrap();
    let temp = f.temp_path().to_path_buf();
    let err = f.commit().unwrap_err();
    assert!(
        matches!(err, SaveError::NoFreeName { attempts, .. } if attempts == MAX_NAME_ATTEMPTS),
        "{err:?}"
    );
    assert!(!temp.exists(), "temp removed on failed commit");
    assert_eq!(entries(dir.path()).len(), MAX_NAME_ATTEMPTS as usize);
}

#[test]
fn stale_temp_files_are_cleaned_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A crashed receiver's leftover: a real temp file, aged.
    let crashed = IncomingFile::create(d, TID, "x").unwrap();
    let stale = crashed.temp_path().to_path_buf();
    std::mem::forget(crashed);
    let old = std::time::SystemTime::now() - STALE_TEMP_AGE - std::time::Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A live transfer's temp file.
    let live = IncomingFile::create(d, TID, "y").unwrap();
    // Look-alikes that are not ours to delete.
    fs::write(d.join("ats-p2p-x.part"), b"").unwrap();
    fs::write(d.join(".ats-p2p-x.partial"), b"").unwrap();
    for name in ["ats-p2p-x.part", ".ats-p2p-x.partial"] {
        fs::File::options()
            .write(true)
            .open(d.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink("/nonexistent", d.join(".ats-p2p-link.part")).unwrap();

    let removed = remove_stale_temp_files(d, STALE_TEMP_AGE).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0], stale);
    assert!(!stale.exists());
    assert!(live.temp_path().exists());
    assert!(d.join("ats-p2p-x.part").exists());
    assert!(d.join(".ats-p2p-x.partial").exists());
    drop(live);
    assert!(
        remove_stale_temp_files(&d.join("missing"), STALE_TEMP_AGE)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn available_space_reads_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let free = available_space(dir.path()).unwrap();
    assert!(free > 0);
    // A save directory that does not exist yet is measured where it will be created.
    let later = available_space(&dir.path().join("missing").join("deeper")).unwrap();
    assert!(later > 0);
    assert!(!dir.path().join("missing").exists());
    assert!(available_space(Path::new("relative-missing-dir")).unwrap() > 0);
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct TmpfsMount {
    point: PathBuf,
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

/// Mounts a 1 MiB tmpfs on `point`, or returns why it cannot.
fn mount_tiny_tmpfs(point: &Path) -> Result<TmpfsMount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(point)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(TmpfsMount {
            point: point.to_path_buf(),
        })
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[test]
fn full_disk_fails_clearly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let point = dir.path().join("tiny");
    fs::create_dir(&point).unwrap();
    let mount = match mount_tiny_tmpfs(&point) {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED full_disk_fails_clearly_and_leaves_nothing: mount not permitted ({why})"
            );
            return;
        }
    };
    let free = available_space(&point).unwrap();
    assert!(free <= 1024 * 1024, "tmpfs reports {free} free bytes");
    assert_eq!(available_space(&point.join("not-yet")).unwrap(), free);

    let mut f = IncomingFile::create(&point, TID, "big.bin").unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut err = None;
    for _ in 0..64 {
        if let Err(e) = f.append(&chunk) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("writing 4 MiB into a 1 MiB tmpfs must fail");
    assert!(matches!(err, SaveError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().starts_with("no space left for "), "{err}");
    drop(f);
    assert!(
        entries(&point).is_empty(),
        "left behind: {:?}",
        entries(&point)
    );
    // The space is back.
    assert_eq!(available_space(&point).unwrap(), free);
    drop(mount);
}

/// Swaps `path` for a symlink to `target` the way an attacker who can write the directory
/// would: a new link under another name, renamed over `path` in one step.
#[cfg(unix)]
fn swap_for_symlink(path: &Path, target: &Path) {
    let staging = path.with_file_name("attacker-link");
    std::os::unix::fs::symlink(target, &staging).expect("plant the link");
    fs::rename(&staging, path).expect("swap it in");
}

#[cfg(unix)]
#[test]
fn a_symlink_swapped_for_the_temp_file_is_neither_written_nor_published() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    fs::write(&target, b"keep me").unwrap();

    let mut f = IncomingFile::create(dir.path(), TID, "report.txt").unwrap();
    f.append(b"first half, ").unwrap();
    let temp = f.temp_path().to_path_buf();
    // Between create and commit, for real: the temporary name now points outside.
    swap_for_symlink(&temp, &target);
    f.append(b"second half").unwrap();
    let err = f.commit().unwrap_err();
    assert!(matches!(err, SaveError::Publish { .. }), "{err:?}");

    // Nothing was written through the link, and the link was not published as the file.
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    assert!(!dir.path().join("report.txt").exists());
    assert!(
        fs::symlink_metadata(dir.path().join("report.txt")).is_err(),
        "{:?}",
        entries(dir.path())
    );
    // The attacker's own link is theirs; nothing else is left.
    assert_eq!(
        entries(dir.path()),
        [temp.file_name().unwrap().to_str().unwrap()]
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_swapped_for_the_save_dir_does_not_redirect_the_commit() {
    let parent = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let save = parent.path().join("incoming");
    let mut f = IncomingFile::create(&save, TID, "moved.txt").unwrap();
    f.append(b"bytes").unwrap();
    // The save directory is moved away and replaced by a symlink to another directory.
    fs::rename(&save, parent.path().join("moved-away")).unwrap();
    std::os::unix::fs::symlink(outside.path(), &save).unwrap();
    f.commit().unwrap();
    assert!(entries(outside.path()).is_empty());
    assert_eq!(
        fs::read(parent.path().join("moved-away").join("moved.txt")).unwrap(),
        b"bytes"
    );
}

#[cfg(unix)]
#[test]
fn partial_and_received_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut f = IncomingFile::create(dir.path(), TID, "private.txt").unwrap();
    f.append(b"secret").unwrap();
    let mode = fs::metadata(f.temp_path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "partial file mode {mode:o}");
    let path = f.commit().unwrap();
    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "received file mode {mode:o}");
}

#[cfg(target_os = "linux")]
#[test]
fn temp_files_nobody_holds_are_removed_at_once_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // What a killed receiver leaves: a fresh temporary file whose lock died with its process.
    let abandoned = d.join(".ats-p2p-00112233445566778899aabbccddeeff-0123456789abcdef.part");
    fs::write(&abandoned, b"half").unwrap();
    // A running receiver's file (it holds the lock), and a file that is not ours.
    let live = IncomingFile::create(d, TID, "y").unwrap();
    fs::write(d.join("keep.txt"), b"mine").unwrap();

    let removed = remove_stale_temp_files(d, STALE_TEMP_AGE).unwrap();
    assert_eq!(removed, std::slice::from_ref(&abandoned));
    assert!(!abandoned.exists());
    assert!(live.temp_path().exists());
    assert!(d.join("keep.txt").exists());
    // Once the receiver is gone, its file is fair game too (here it removes its own).
    drop(live);
    assert!(
        remove_stale_temp_files(d, STALE_TEMP_AGE)
            .unwrap()
            .is_empty()
    );
    assert_eq!(entries(d), ["keep.txt"]);
}
