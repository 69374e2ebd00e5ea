//! Shared helpers for the ats-p2p benchmarks: sizes, test files, SHA-256 of files, and resource
//! usage (peak RSS, CPU seconds) of a process and of its waited-for children.

pub mod delay_line;
pub mod delay_relay;
pub mod netns;
pub mod path_lab;
pub mod udx_path_peer;

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use nix::sys::resource::{UsageWho, getrusage};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Buffer for generating and hashing files: large reads and writes, small memory.
const FILE_BUF: usize = 1 << 20;

/// Parses a size as the `ats-p2p` command line does (the `bytesize` crate): plain bytes or a
/// number with a unit, `MB`/`GB` SI (powers of 1000), `MiB`/`GiB` binary (powers of 1024).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let size: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("bad size {s:?}: {e}"))?;
    if size.as_u64() == u64::MAX {
        bail!("size {s:?} overflows u64");
    }
    Ok(size.as_u64())
}

/// Writes `size` pseudo-random bytes (seeded) to `path` and returns their SHA-256.
pub fn make_file(path: &Path, size: u64, seed: u64) -> io::Result<[u8; 32]> {
    let mut out = BufWriter::with_capacity(FILE_BUF, File::create(path)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; FILE_BUF];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(FILE_BUF as u64)).unwrap_or(FILE_BUF);
        let chunk = &mut buf[..n];
        rng.fill_bytes(chunk);
        hasher.update(&*chunk);
        out.write_all(chunk)?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(hasher.finalize().into())
}

/// SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; FILE_BUF];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Peak resident memory and CPU time (user + system).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Peak resident set size, bytes.
    pub max_rss: u64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
}

fn usage(who: UsageWho) -> Usage {
    match getrusage(who) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            Usage {
                max_rss: u64::try_from(u.max_rss()).unwrap_or(0).saturating_mul(1024),
                cpu_s: tv(u.user_time()) + tv(u.system_time()),
            }
        }
        Err(_) => Usage::default(),
    }
}

/// This process's usage so far.
pub fn self_usage() -> Usage {
    usage(UsageWho::RUSAGE_SELF)
}

/// Usage of the children this process has waited for (peak RSS is the largest child's).
pub fn children_usage() -> Usage {
    usage(UsageWho::RUSAGE_CHILDREN)
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// `dir` (created if missing), or a fresh temporary directory that lives as long as the returned
/// guard.
pub fn work_dir(dir: Option<&Path>) -> io::Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Ok((d.to_path_buf(), None))
        }
        None => {
            let tmp = tempfile::tempdir()?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_mean_what_the_cli_says() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
