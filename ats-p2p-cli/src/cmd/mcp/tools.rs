//! The tools, one method each: arguments in, a structured result or a tool error out (never a
//! protocol error: the model reads the error and can act on it).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ats_p2p::error::reason_chain;
use ats_p2p::events::{Event, FailureKind};
use ats_p2p_signal::Client;
use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, RequestMetaObject};
use rmcp::{Peer, RoleServer, tool, tool_router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::progress::ProgressReporter;
use super::schemas::{
    AcceptOfferArgs, AcceptOfferResult, ListOffersArgs, ListOffersResult, ListTransfersArgs,
    ListTransfersResult, RejectOfferArgs, RejectOfferResult, SendFileArgs, SendFileResult,
    TransferStatusArgs, TransferStatusResult, WhoamiResult, failure,
};
use super::server::P2pServer;
use crate::cmd::status::{find_transfer, task_summary};
use crate::exit::Exit;

/// Reason written to the task when the agent rejects without one.
const DEFAULT_REJECT_REASON: &str = "declined by the recipient";

/// Longest wait to cancel an offer whose `send_file` call was abandoned.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// The states `list_transfers` filters by.
const TRANSFER_STATES: &[&str] = &["offered", "queued", "running", "complete", "failed"];

/// A successful result carrying `value` as structured content (and as text, for clients that
/// only read text).
fn success<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => failure(
            "internal",
            FailureKind::Protocol,
            format!("cannot encode the result: {e}"),
            None,
        ),
    }
}

/// A malformed argument.
fn invalid(message: impl Into<String>) -> CallToolResult {
    failure("invalid_arguments", FailureKind::Usage, message, None)
}

/// A transfer id as the tools take it: 32 hex characters, lower-cased.
fn transfer_id(raw: &str) -> Result<String, CallToolResult> {
    let id = raw.trim();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(invalid(format!(
            "{raw:?} is not a transfer id (32 hex characters)"
        )))
    }
}

/// Checks the path the way `ats-p2p send` does: a regular file or a directory.
fn check_file(path: &Path) -> Result<(), CallToolResult> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() || m.is_dir() => Ok(()),
        Ok(_) => Err(failure(
            "not_a_file",
            FailureKind::Usage,
            format!("{} is not a regular file or a directory", path.display()),
            None,
        )),
        Err(e) => Err(failure(
            "not_a_file",
            FailureKind::Usage,
            format!("cannot send {}: {e}", path.display()),
            None,
        )),
    }
}

/// The directory `requested` names inside `base` (a canonical path), created if missing: a
/// path relative to `base`, or an absolute one under it. `..`, and symbolic links that lead
/// out of `base`, are refused, so nothing is ever written outside it.
pub(crate) fn dir_inside(base: &Path, requested: Option<&str>) -> Result<PathBuf, String> {
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(base.to_path_buf());
    };
    let requested = Path::new(requested);
    let relative = if requested.is_absolute() {
        requested.strip_prefix(base).map_err(|_| {
            format!(
                "{} is outside the save directory {}",
                requested.display(),
                base.display()
            )
        })?
    } else {
        requested
    };
    let mut dir = base.to_path_buf();
    for part in relative.components() {
        match part {
            Component::Normal(name) => dir.push(name),
            Component::CurDir => continue,
            _ => {
                return Err(format!(
                    "{} may not leave the save directory {} (no `..`)",
                    requested.display(),
                    base.display()
                ));
            }
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        // A symbolic link on the way may point anywhere: follow it and check.
        let real = dir
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        if !real.starts_with(base) || !real.is_dir() {
            return Err(format!(
                "{} leads outside the save directory {}",
                requested.display(),
                base.display()
            ));
        }
        dir = real;
    }
    Ok(dir)
}

/// Cancels an offer's task if the `send_file` call that made it is dropped (the client
/// cancelled the request or went away) before the transfer ended.
struct CancelOnDrop {
    client: Client,
    task: Option<i64>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let client = self.client.clone();
        tokio::spawn(async move {
            let cancel = async {
                let open = client
                    .get_task(task)
                    .await
                    .map_or(true, |t| !t.status.is_terminal());
                if open {
                    client.cancel(task).await.map(|_| ())
                } else {
                    Ok(())
                }
            };
            match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(task, error = %e, "cannot cancel the offer"),
                Err(_) => tracing::warn!(task, "cancelling the offer timed out"),
            }
        });
    }
}

#[tool_router(vis = "pub(crate)")]
impl P2pServer {
    /// `send_file`.
    #[tool(
        description = "Send a file to another agent, peer to peer. Creates an offer on ATS for \
            the recipient's actor id, waits for the recipient to accept it (they may take up to \
            the server's timeout), streams the file over an end-to-end encrypted connection to \
            the recipient's key and returns once the recipient has verified the SHA-256 and \
            acknowledged. Reports progress (bytes of total) when the request carries a progress \
            token. Fails with a code such as declined, not_allowed, no_answer, no_connection, \
            hash_mismatch or not_a_file.",
        output_schema = schema_for_output::<SendFileResult>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    pub(crate) async fn send_file(
        &self,
        Parameters(args): Parameters<SendFileArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        cancelled: CancellationToken,
    ) -> CallToolResult {
        let path = PathBuf::from(&args.path);
        if let Err(e) = check_file(&path) {
            return e;
        }
        let channel = args.channel.unwrap_or_else(|| self.ctx.channel.clone());
        let what = format!(
            "sending {}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let progress = ProgressReporter::start(&meta, peer);
        let handle = progress.handle();
        let registry = &self.ctx.registry;
        let mut guard = CancelOnDrop {
            client: self.ctx.node.client().clone(),
            task: None,
        };
        let mut offered: Option<String> = None;
        let mut started = false;
        let sending = self
            .ctx
            .node
            .send(&path, &args.to, &channel, |event: &Event| {
                registry.record(event);
                match event {
                    Event::OfferSent {
                        transfer_id,
                        task_id,
                        ..
                    } => {
                        offered = Some(transfer_id.clone());
                        guard.task = task_id.parse().ok();
                    }
                    Event::TransferStart { .. } => started = true,
                    // Before the start, progress is the hashing; only bytes moved count.
                    Event::Progress { bytes, total, .. } if started => {
                        handle.report(&what, *bytes, *total);
                    }
                    _ => {}
                }
            });
        let result = tokio::select! {
            r = sending => r,
            () = cancelled.cancelled() => {
                // The guard cancels the offer's task as it drops.
                drop(handle);
                progress.finish().await;
                return failure(
                    "cancelled",
                    FailureKind::Cancelled,
                    "the call was cancelled; so was the offer",
                    offered,
                );
            }
        };
        // The send ended on its own: its task is settled, nothing to cancel.
        guard.task = None;
        drop(handle);
        progress.finish().await;
        match result {
            Ok(r) => success(&SendFileResult {
                transfer_id: r.transfer_id.to_string(),
                task_id: r.task_id.to_string(),
                file_name: r.file_name,
                bytes: r.bytes,
                sha256: r.file_hash.to_string(),
                duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
                path: r.path.into(),
            }),
            Err(e) => failure(e.code(), e.kind(), reason_chain(&e), offered),
        }
    }

    /// `list_offers`.
    #[tool(
        description = "List the file offers addressed to this agent that wait for a decision: \
            transfer id, sender actor id and public key, whether that key is pinned, known or \
            new, file name, size and SHA-256. Accept one with accept_offer or decline it with \
            reject_offer; a sender gives up after its timeout. Offers the allowlist or size \
            limit refuses never appear here (they are rejected at once; see list_transfers).",
        output_schema = schema_for_output::<ListOffersResult>(),
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    pub(crate) async fn list_offers(
        &self,
        Parameters(args): Parameters<ListOffersArgs>,
    ) -> CallToolResult {
        let channel = args.channel.unwrap_or_else(|| self.ctx.channel.clone());
        if channel.trim().is_empty() {
            return invalid("the channel may not be empty");
        }
        let save_dir = self.ctx.auto_accept.then(|| self.ctx.save_dir.clone());
        if let Err(e) = self.ctx.registry.watch(&self.ctx.node, &channel, save_dir) {
            return failure("too_many_channels", FailureKind::Usage, e.to_string(), None);
        }
        let offers = self.ctx.registry.offers(&channel);
        success(&ListOffersResult {
            channel,
            offers,
            auto_accept: self.ctx.auto_accept,
        })
    }

    /// `accept_offer`.
    #[tool(
        description = "Accept an offer from list_offers and receive the file: connects to the \
            sender's key only, streams the file into the save directory (or a subdirectory of \
            it given as save_dir), verifies its SHA-256 and returns the saved file's path once \
            it is complete and verified. Nothing is written outside the save directory. \
            Reports progress when the request carries a progress token.",
        output_schema = schema_for_output::<AcceptOfferResult>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    pub(crate) async fn accept_offer(
        &self,
        Parameters(args): Parameters<AcceptOfferArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> CallToolResult {
        let id = match transfer_id(&args.transfer_id) {
            Ok(id) => id,
            Err(e) => return e,
        };
        let dir = match dir_inside(&self.ctx.save_dir, args.save_dir.as_deref()) {
            Ok(dir) => dir,
            Err(message) => {
                return failure("outside_save_dir", FailureKind::Usage, message, Some(id));
            }
        };
        let Some(held) = self.ctx.registry.take_offer(&id) else {
            return unknown_offer(id);
        };
        let progress = ProgressReporter::start(&meta, peer);
        self.ctx.registry.route_progress(&id, progress.handle());
        let result = held.pending.accept(&dir).await;
        self.ctx.registry.stop_progress(&id);
        progress.finish().await;
        match result {
            Ok(r) => success(&AcceptOfferResult {
                transfer_id: r.transfer_id.to_string(),
                task_id: r.task_id.to_string(),
                file_path: r.file_path.display().to_string(),
                sha256: r.file_hash.to_string(),
                bytes: r.bytes,
                duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
                path: r.path.into(),
            }),
            Err(e) => failure(e.code(), e.kind(), reason_chain(&e), Some(id)),
        }
    }

    /// `reject_offer`.
    #[tool(
        description = "Decline an offer from list_offers. The reason is written to the offer's \
            ATS task, and the sender's send_file ends with it.",
        output_schema = schema_for_output::<RejectOfferResult>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    pub(crate) async fn reject_offer(
        &self,
        Parameters(args): Parameters<RejectOfferArgs>,
    ) -> CallToolResult {
        let id = match transfer_id(&args.transfer_id) {
            Ok(id) => id,
            Err(e) => return e,
        };
        let reason = args
            .reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REJECT_REASON.to_owned());
        let Some(held) = self.ctx.registry.take_offer(&id) else {
            return unknown_offer(id);
        };
        match held.pending.reject(&reason).await {
            Ok(()) => success(&RejectOfferResult {
                transfer_id: id,
                reason,
            }),
            Err(e) => failure(e.code(), e.kind(), reason_chain(&e), Some(id)),
        }
    }

    /// `transfer_status`.
    #[tool(
        description = "Look up how a transfer stands on ATS: the offer task's state (pending, \
            claimed, completed, rejected, failed, cancelled), its outputs and its reason, plus \
            what this server saw of it.",
        output_schema = schema_for_output::<TransferStatusResult>(),
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    pub(crate) async fn transfer_status(
        &self,
        Parameters(args): Parameters<TransferStatusArgs>,
    ) -> CallToolResult {
        let id = match transfer_id(&args.transfer_id) {
            Ok(id) => id,
            Err(e) => return e,
        };
        let local = self.ctx.registry.transfer(&id);
        let client = self.ctx.node.client();
        let known_task = local
            .as_ref()
            .and_then(|l| l.task_id.as_deref())
            .and_then(|t| t.parse::<i64>().ok());
        let task_id = match known_task {
            Some(t) => t,
            None => match find_transfer(client, &self.ctx.channel, &id).await {
                Ok(task) => task.id,
                Err(f) => {
                    let (code, kind) = if f.exit == Exit::Network {
                        ("ats_unreachable", FailureKind::Network)
                    } else {
                        ("unknown_transfer", FailureKind::Usage)
                    };
                    return failure(code, kind, format!("{:#}", f.error), Some(id));
                }
            },
        };
        let task = match client.get_task(task_id).await {
            Ok(task) => task,
            Err(e) => {
                return failure(
                    "ats_unreachable",
                    FailureKind::Network,
                    format!("cannot read task {task_id} from ATS: {}", reason_chain(&e)),
                    Some(id),
                );
            }
        };
        success(&TransferStatusResult {
            transfer_id: id,
            task_id: task.id,
            state: task.status.as_str().to_owned(),
            reason: task.reason.clone(),
            outputs: serde_json::to_value(&task.outputs).unwrap_or_default(),
            task: task_summary(&task),
            local,
        })
    }

    /// `list_transfers`.
    #[tool(
        description = "List the transfers this server sent, received or refused since it \
            started, newest first: state (offered, queued, running, complete, failed), peer, \
            file, bytes, and for failures the error code and reason. With --auto-accept this \
            is where received files are reported.",
        output_schema = schema_for_output::<ListTransfersResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    pub(crate) async fn list_transfers(
        &self,
        Parameters(args): Parameters<ListTransfersArgs>,
    ) -> CallToolResult {
        if let Some(s) = &args.state
            && !TRANSFER_STATES.contains(&s.as_str())
        {
            return invalid(format!(
                "unknown state {s:?}; one of {}",
                TRANSFER_STATES.join(", ")
            ));
        }
        success(&ListTransfersResult {
            transfers: self.ctx.registry.transfers(args.state.as_deref()),
        })
    }

    /// `whoami`.
    #[tool(
        description = "This agent's identity on the network: its actor id (what senders pass \
            as `to`), its public key (what others pin with --allow <actor_id>=<key>), the ATS \
            URL and channel, the save directory and the receiving policy.",
        output_schema = schema_for_output::<WhoamiResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    pub(crate) async fn whoami(&self) -> CallToolResult {
        let config = self.ctx.node.config();
        success(&WhoamiResult {
            actor_id: self.ctx.node.actor_id().to_owned(),
            public_key: self.ctx.node.public_key().to_hex(),
            ats_url: config.ats_url.clone(),
            channel: self.ctx.channel.clone(),
            save_dir: self.ctx.save_dir.display().to_string(),
            auto_accept: self.ctx.auto_accept,
            max_size: config.max_size,
            allow: config
                .allow
                .entries()
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
    }
}

/// The error for a transfer id with no offer waiting.
fn unknown_offer(id: String) -> CallToolResult {
    failure(
        "unknown_offer",
        FailureKind::Usage,
        format!(
            "no offer with transfer id {id} is waiting (already answered, expired, or never \
             seen); call list_offers"
        ),
        Some(id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_stay_inside_the_save_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        assert_eq!(dir_inside(&base, None).unwrap(), base);
        assert_eq!(dir_inside(&base, Some(" ")).unwrap(), base);
        assert_eq!(dir_inside(&base, Some("a/b")).unwrap(), base.join("a/b"));
        assert!(base.join("a/b").is_dir());
        let abs = base.join("c");
        assert_eq!(dir_inside(&base, abs.to_str()).unwrap(), abs);
        for bad in ["..", "a/../../x", "/etc", "./../x"] {
            assert!(dir_inside(&base, Some(bad)).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), base.join("link")).unwrap();
            assert!(dir_inside(&base, Some("link/x")).is_err());
            assert!(
                !outside.path().join("x").exists(),
                "nothing created outside"
            );
        }
    }

    #[test]
    fn transfer_ids() {
        assert_eq!(
            transfer_id(" 00112233445566778899AABBCCDDEEFF ").unwrap(),
            "00112233445566778899aabbccddeeff"
        );
        assert!(transfer_id("xyz").is_err());
    }
}
