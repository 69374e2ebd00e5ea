//! The commands that need no peer: `id`, `status`, usage errors. Real processes, a real hub.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use ats_p2p_signal::types::Actor;
use ats_p2p_signal::{Client, ClientConfig, FileOffer, TransferId};
use common::{ats_p2p, start_hub};
use serde_json::Value;

/// Bound on every test here.
const TIMEOUT: Duration = Duration::from_secs(20);

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn id_is_persistent_per_actor_and_private_to_home() {
    let home = tempfile::tempdir().unwrap();
    let run = |actor: &str, json: bool| {
        let mut c = ats_p2p(home.path());
        c.args(["id", "--actor-id", actor]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        out
    };
    let a1 = json_lines(&run("agent-a", true).stdout);
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0]["actor_id"], "agent-a");
    let key = a1[0]["public_key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    // Plain output: the key alone on stdout, the same key the second time.
    let plain = run("agent-a", false);
    assert_eq!(String::from_utf8(plain.stdout).unwrap().trim(), key);
    let b = json_lines(&run("agent-b", true).stdout);
    assert_ne!(b[0]["public_key"].as_str().unwrap(), key);
    let key_file = home.path().join("config/ats-p2p/keys/agent-a.key");
    assert!(key_file.exists(), "key stored under the test's HOME");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The environment names the actor (as the `ats` CLI reads it) and the key directory.
    let env_dir = home.path().join("from-env");
    let out = ats_p2p(home.path())
        .args(["id", "--json"])
        .env("ATS_ACTOR_ID", "agent-env")
        .env("ATS_P2P_KEY_DIR", &env_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out.stdout)[0]["actor_id"], "agent-env");
    assert!(env_dir.join("agent-env.key").exists());
    // --key-dir overrides.
    let dir = home.path().join("elsewhere");
    let out = ats_p2p(home.path())
        .args(["id", "--actor-id", "agent-a", "--json", "--key-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_ne!(
        json_lines(&out.stdout)[0]["public_key"].as_str().unwrap(),
        key
    );
    assert!(dir.join("agent-a.key").exists());
}

#[test]
fn usage_errors_exit_2_with_nothing_on_stdout() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["status", "not-an-id"][..],
        &["send", "file"],
        &["listen", "--max-size", "lots"],
        &["listen", "--allow", "agent-b=nothex"],
        &["send", "f", "--to", "b", "--timeout", "0"],
        &["bogus"],
    ] {
        let out = ats_p2p(home.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A file that does not exist is a usage error, reported before any network activity.
    let out = ats_p2p(home.path())
        .args([
            "send",
            "/nonexistent/file",
            "--to",
            "b",
            "--ats-url",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file"));
    // A save directory that cannot exist: exit 1 at once, before any network activity.
    let blocker = home.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = ats_p2p(home.path())
        .args(["listen", "--ats-url", "http://127.0.0.1:1", "--save-dir"])
        .arg(blocker.join("incoming"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("save directory"));
    let help = ats_p2p(home.path()).arg("--help").output().unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "130 "] {
        assert!(
            text.contains(&format!("\n  {code}")),
            "exit {code} in --help"
        );
    }
}

#[test]
fn status_by_task_id_and_transfer_id() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let hub = start_hub(dir.path(), deadline);

    let offer = FileOffer {
        manifest: None,
        transfer_id: TransferId::random(),
        filename: "data.csv".into(),
        size: 1234,
        sha256: [7; 32],
        sender_id: "agent-a".into(),
        recipient_id: "agent-b".into(),
        sender_key: [9; 32],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientConfig::new(
        hub.ats_url.clone(),
        Actor::agent("agent-a"),
    ))
    .unwrap();
    let task = rt
        .block_on(async {
            tokio::time::timeout(TIMEOUT, client.create_task(&offer.to_new_task(None))).await
        })
        .unwrap()
        .unwrap();
    let tid = offer.transfer_id.to_string();

    let status = |target: &str, extra: &[&str]| {
        ats_p2p(dir.path())
            .args(["status", target, "--ats-url", &hub.ats_url])
            .args(extra)
            .output()
            .unwrap()
    };
    for target in [task.id.to_string(), tid.clone()] {
        let out = status(&target, &["--json"]);
        assert!(out.status.success(), "{out:?}");
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 1, "one object");
        let v = &lines[0];
        assert_eq!(v["task_id"], task.id);
        assert_eq!(v["transfer_id"], tid);
        assert_eq!(v["state"], "pending");
        assert_eq!(v["sender_id"], "agent-a");
        assert_eq!(v["recipient_id"], "agent-b");
        assert_eq!(v["file_name"], "data.csv");
        assert_eq!(v["file_size"], 1234);
        assert_eq!(v["file_hash"], "07".repeat(32));
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let rejected = rt
        .block_on(async {
            tokio::time::timeout(TIMEOUT, client.reject(task.id, Some("not today"))).await
        })
        .unwrap()
        .unwrap();
    assert_eq!(rejected.status.as_str(), "rejected");
    // ATS_URL from the environment, as the `ats` CLI reads it.
    let out = ats_p2p(dir.path())
        .args(["status", &tid])
        .env("ATS_URL", &hub.ats_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rejected"), "{text}");
    assert!(text.contains("not today"), "{text}");
    assert!(text.contains("data.csv"), "{text}");

    // Unknown transfer: exit 1; unreachable ATS: exit 6.
    let out = status(&"ab".repeat(16), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    let out = ats_p2p(dir.path())
        .args(["status", "1", "--ats-url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
}

#[test]
fn one_environment_drives_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let hub = start_hub(dir.path(), deadline);
    let file = dir.path().join("a.txt");
    std::fs::write(&file, b"hello").unwrap();
    // What an alias or a shell profile would set once for every command.
    let with_env = |args: &[&str]| {
        let mut c = ats_p2p(dir.path());
        c.args(args)
            .env("ATS_URL", &hub.ats_url)
            .env("ATS_ACTOR_ID", "agent-env")
            .env("ATS_CHANNEL", "side")
            .env("ATS_P2P_BOOTSTRAP", &hub.bootstrap)
            .env("ATS_P2P_HOST", "127.0.0.1");
        c
    };
    let out = with_env(&["id", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_lines(&out.stdout)[0]["actor_id"], "agent-env");

    // `send` reaches the hub and the DHT from the environment: nobody answers, so it times out
    // (exit 4), after its offer went to the channel the environment names.
    let out = with_env(&[
        "send",
        "--json",
        "--ephemeral",
        "--timeout",
        "1s",
        "--to",
        "nobody",
    ])
    .arg(&file)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let lines = json_lines(&out.stdout);
    let tid = lines[0]["transfer_id"].as_str().unwrap().to_owned();
    assert_eq!(lines[0]["event"], "offer_sent");

    // `status` finds it by transfer id on that channel; the shared options it does not use are
    // accepted too, before or after its name.
    for args in [
        vec!["status", &tid, "--json", "--bootstrap", "127.0.0.1:1"],
        vec!["--bootstrap", "127.0.0.1:1", "-v", "status", &tid, "--json"],
    ] {
        let out = with_env(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let v = &json_lines(&out.stdout)[0];
        assert_eq!(v["channel"], "side", "{v}");
        assert_eq!(v["sender_id"], "agent-env", "{v}");
        assert_eq!(v["state"], "cancelled", "{v}");
    }
    // The same environment does not disturb the commands that ignore it.
    let out = with_env(&[
        "id",
        "--channel",
        "other",
        "--ats-url",
        "http://127.0.0.1:1",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
}
