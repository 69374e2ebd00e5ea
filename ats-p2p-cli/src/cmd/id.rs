//! `ats-p2p id`: this node's public key for an actor id.

use anyhow::Context as _;
use ats_p2p::identity::KeyStore;
use serde_json::json;

use crate::args::{CommonArgs, IdArgs, KeyArgs};
use crate::exit::{Exit, Failure};
use crate::output::Output;

/// The key store `--key-dir` names, or the default one.
pub(crate) fn key_store(keys: &KeyArgs) -> Result<KeyStore, Failure> {
    match &keys.key_dir {
        Some(dir) => Ok(KeyStore::new(dir)),
        None => Ok(KeyStore::open_default()
            .context("cannot find the key directory; pass --key-dir DIR")?),
    }
}

/// Prints the public key (hex) on stdout, creating the key on first use.
pub(crate) async fn run(out: &Output, common: &CommonArgs, args: IdArgs) -> Result<Exit, Failure> {
    let store = key_store(&args.keys)?;
    let actor_id = &common.signal.actor_id;
    let actor = actor_id.clone();
    // Small files, but still blocking I/O: off the async workers.
    let (created, key, path) = tokio::task::spawn_blocking(move || {
        let existed = store.load(&actor)?.is_some();
        let kp = store.load_or_create(&actor)?;
        let path = store.key_path(&actor)?;
        Ok::<_, ats_p2p::error::IdentityError>((!existed, kp.public_key().to_hex(), path))
    })
    .await
    .context("the key task did not finish")?
    .with_context(|| format!("cannot load the key of {actor_id:?}"))?;
    if out.is_json() {
        out.json_line(&json!({"actor_id": actor_id, "public_key": key}));
    } else {
        out.result(&key);
        let state = if created { "created" } else { "loaded" };
        out.note(&format!(
            "{state} the key of {} ({}); peers pin it with --allow {}={key}",
            actor_id,
            path.display(),
            actor_id
        ));
    }
    Ok(Exit::Success)
}
