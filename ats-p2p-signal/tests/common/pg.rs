//! A throwaway PostgreSQL cluster for this test binary: `initdb` and `pg_ctl` in a temporary
//! directory (as `nobody` when the tests run as root), on a free loopback port, trust
//! authentication. A watchdog process stops it and removes the directory once this process has
//! exited. One database per hub directory, so a hub restarted on the same directory (or a second
//! instance beside it) finds the same data.
//!
//! Where no cluster can be started, [`cluster`] says why and PostgreSQL tests print `SKIP:`; with
//! `ATS_P2P_REQUIRE_PG=1` (set by `.ci/run`) they fail instead.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use ats_p2p_signal::hub::{DbLocation, parse_db_location};

/// The variable that turns a skipped PostgreSQL test into a failure.
pub const REQUIRE_PG: &str = "ATS_P2P_REQUIRE_PG";

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    port: u16,
    bin: PathBuf,
    user: Option<String>,
    created: Mutex<HashSet<String>>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster of this test binary, started on first use; or why there is none.
pub fn cluster() -> Result<&'static Cluster, String> {
    CLUSTER.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// Whether a PostgreSQL test may skip: not when [`REQUIRE_PG`] is set.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var_os(REQUIRE_PG).is_some_and(|v| v != "0") {
        panic!("{test}: PostgreSQL is required ({REQUIRE_PG} is set) but unavailable: {why}");
    }
    println!("SKIP: {test} on PostgreSQL: {why}");
}

fn find_bin() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL installed (/usr/lib/postgresql: {e})"))?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    /// The URL of the database for hub directory `dir`, created on first use.
    pub fn database_for(&self, dir: &Path) -> DbLocation {
        let mut h = DefaultHasher::new();
        dir.hash(&mut h);
        let name = format!("hub_{:016x}", h.finish());
        let mut created = self.created.lock().unwrap();
        if !created.contains(&name) {
            let port = self.port.to_string();
            run(
                self.command("createdb")
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                    .arg(&name),
                "createdb",
            )
            .unwrap();
            created.insert(name.clone());
        }
        parse_db_location(&format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
        .unwrap()
    }
}

fn start() -> Result<Cluster, String> {
    let bin = find_bin()?;
    let root = tempfile::Builder::new()
        .prefix("ats-p2p-pg-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?
        .keep();
    // PostgreSQL refuses to run as root: run it as nobody.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let user = is_root.then(|| "nobody".to_owned());
    if let Some(u) = &user {
        run(Command::new("chown").arg(u).arg(&root), "chown")?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    let cluster = Cluster {
        port,
        bin,
        user,
        created: Mutex::new(HashSet::new()),
    };
    let data = root.join("data");
    run(
        cluster
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg("-D")
            .arg(&data),
        "initdb",
    )?;
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=300",
        root.display()
    );
    run(
        cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(root.join("log"))
            .arg("start"),
        "pg_ctl start",
    )?;
    // Stop and remove the cluster once this test process is gone.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {ctl} -D {data} stop -m immediate; \
         rm -rf {root}",
        pid = std::process::id(),
        ctl = match &cluster.user {
            Some(u) => format!("runuser -u {u} -- {}", cluster.bin.join("pg_ctl").display()),
            None => cluster.bin.join("pg_ctl").display().to_string(),
        },
        data = data.display(),
        root = root.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(stop)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("watchdog: {e}"))?;
    Ok(cluster)
}
