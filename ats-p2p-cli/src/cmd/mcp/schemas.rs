//! The tools' arguments and results: serde types whose JSON Schemas (schemars) are what the
//! MCP client shows the model, so every field says what it is in words an LLM can act on.

use ats_p2p::events::{ConnectionPath, FailureKind};
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `send_file` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct SendFileArgs {
    /// Path of the file or directory to send (absolute, or relative to the server's working
    /// directory). A directory goes whole and appears on the other side once every file is
    /// verified.
    pub(crate) path: String,
    /// The recipient's actor id (the name the other agent runs its ats-p2p node as).
    pub(crate) to: String,
    /// ATS channel for the offer [default: the server's channel].
    #[serde(default)]
    pub(crate) channel: Option<String>,
}

/// How the two nodes' connection went: `loopback`, `lan`, `direct`, `holepunched` or `relayed`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PathInfo {
    /// `loopback`, `lan`, `direct`, `holepunched` or `relayed`.
    pub(crate) path: String,
    /// The address the bytes went to (the relay's when relayed).
    pub(crate) remote_addr: String,
    /// The relay's public key (64 hex), when relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) relay: Option<String>,
    /// The connection's round-trip time, in milliseconds, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rtt_ms: Option<u64>,
}

impl From<ConnectionPath> for PathInfo {
    fn from(p: ConnectionPath) -> Self {
        Self {
            path: p.path,
            remote_addr: p.remote_addr,
            relay: p.relay,
            rtt_ms: p.rtt_ms,
        }
    }
}

/// `send_file` result: the receiver verified the file and acknowledged it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SendFileResult {
    /// The transfer id (32 hex); `transfer_status` takes it.
    pub(crate) transfer_id: String,
    /// The ATS task that carried the offer.
    pub(crate) task_id: String,
    /// The file name offered.
    pub(crate) file_name: String,
    /// Bytes delivered.
    pub(crate) bytes: u64,
    /// SHA-256 of the file (64 hex), as the receiver verified it.
    pub(crate) sha256: String,
    /// From the connection to the receiver's acknowledgement, in milliseconds.
    pub(crate) duration_ms: u64,
    /// How the connection reached the receiver.
    pub(crate) path: PathInfo,
}

/// `list_offers` arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub(crate) struct ListOffersArgs {
    /// ATS channel to look at [default: the server's channel]. The first call for another
    /// channel starts watching it; its offers appear from then on.
    #[serde(default)]
    pub(crate) channel: Option<String>,
}

/// One offer waiting for `accept_offer` or `reject_offer`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct OfferInfo {
    /// The transfer id (32 hex) to pass to `accept_offer` or `reject_offer`.
    pub(crate) transfer_id: String,
    /// The ATS task carrying the offer.
    pub(crate) task_id: String,
    /// The channel it came on.
    pub(crate) channel: String,
    /// The sender's actor id.
    pub(crate) sender_id: String,
    /// The sender's public key (64 hex).
    pub(crate) sender_key: String,
    /// How the sender's key stands: `pinned` (matches an `--allow id=KEY` pin), `known`
    /// (remembered from an earlier transfer), `new` (first seen; remembered once accepted) or
    /// `changed` (differs from the remembered one, allowed by `--accept-changed-keys`).
    pub(crate) sender_key_status: String,
    /// The file name as offered (it is made safe when saved).
    pub(crate) file_name: String,
    /// Size in bytes.
    pub(crate) size: u64,
    /// SHA-256 the file must match (64 hex).
    pub(crate) sha256: String,
    /// How long ago the offer was seen, in milliseconds; the sender gives up after its timeout.
    pub(crate) age_ms: u64,
}

/// `list_offers` result.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListOffersResult {
    /// The channel looked at.
    pub(crate) channel: String,
    /// Offers to this actor waiting for a decision, oldest first.
    pub(crate) offers: Vec<OfferInfo>,
    /// True when offers are accepted automatically (`--auto-accept`): none wait here then;
    /// see `list_transfers`.
    pub(crate) auto_accept: bool,
}

/// `accept_offer` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct AcceptOfferArgs {
    /// The transfer id from `list_offers`.
    pub(crate) transfer_id: String,
    /// A directory inside the server's save directory (relative to it) to save into
    /// [default: the save directory itself].
    #[serde(default)]
    pub(crate) save_dir: Option<String>,
}

/// `accept_offer` result: the file is on disk and its SHA-256 matched the offer.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct AcceptOfferResult {
    /// The transfer id.
    pub(crate) transfer_id: String,
    /// The ATS task of the offer.
    pub(crate) task_id: String,
    /// Where the verified file was saved.
    pub(crate) file_path: String,
    /// Its SHA-256 (64 hex), equal to the offer's.
    pub(crate) sha256: String,
    /// Its size in bytes.
    pub(crate) bytes: u64,
    /// From the connection to the verified file, in milliseconds.
    pub(crate) duration_ms: u64,
    /// How the connection reached the sender.
    pub(crate) path: PathInfo,
}

/// `reject_offer` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct RejectOfferArgs {
    /// The transfer id from `list_offers`.
    pub(crate) transfer_id: String,
    /// Why, for the sender (written to the ATS task) [default: "declined by the recipient"].
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// `reject_offer` result.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RejectOfferResult {
    /// The transfer id.
    pub(crate) transfer_id: String,
    /// The reason written to the task.
    pub(crate) reason: String,
}

/// `transfer_status` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct TransferStatusArgs {
    /// The transfer id (32 hex) from `send_file`, `list_offers` or `list_transfers`.
    pub(crate) transfer_id: String,
}

/// `list_transfers` arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub(crate) struct ListTransfersArgs {
    /// Only transfers in this state: `offered`, `running`, `complete` or `failed`.
    #[serde(default)]
    pub(crate) state: Option<String>,
}

/// What this server knows of one transfer, from its own events.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct TransferRecord {
    /// The transfer id.
    pub(crate) transfer_id: String,
    /// `send` or `receive`.
    pub(crate) direction: String,
    /// `offered` (waiting for a claim or a decision), `queued`, `running`, `complete` or
    /// `failed`.
    pub(crate) state: String,
    /// The other agent's actor id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peer_id: Option<String>,
    /// The ATS task of the offer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task_id: Option<String>,
    /// The file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file_name: Option<String>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file_size: Option<u64>,
    /// SHA-256 (64 hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
    /// Bytes moved so far.
    pub(crate) bytes: u64,
    /// Receiver: where the verified file is; sender: the path sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file_path: Option<String>,
    /// How the peers connected (`direct`, `holepunched`, `relayed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    /// Failed: the stable error code (`not_allowed`, `too_large`, `hash_mismatch`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<String>,
    /// Failed: why, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// `list_transfers` result.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListTransfersResult {
    /// Transfers this server sent, received or refused since it started, newest first.
    pub(crate) transfers: Vec<TransferRecord>,
}

/// `transfer_status` result: the offer's ATS task, and what this server saw of it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct TransferStatusResult {
    /// The transfer id.
    pub(crate) transfer_id: String,
    /// The ATS task id.
    pub(crate) task_id: i64,
    /// The task's state: `pending`, `claimed`, `completed`, `rejected`, `failed`,
    /// `cancelled`, ...
    pub(crate) state: String,
    /// Why it ended that way, when it did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The task's outputs (on completion: the receiver's hash, bytes and path).
    pub(crate) outputs: serde_json::Value,
    /// The full task summary, as `ats-p2p status --json` prints it.
    pub(crate) task: serde_json::Value,
    /// What this server saw of the transfer, if it took part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) local: Option<TransferRecord>,
}

/// `whoami` result.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WhoamiResult {
    /// This node's ATS actor id: what senders pass as `to`.
    pub(crate) actor_id: String,
    /// This node's public key (64 hex): what others pin with `--allow <actor_id>=<key>`.
    pub(crate) public_key: String,
    /// The ATS server.
    pub(crate) ats_url: String,
    /// The default channel for offers.
    pub(crate) channel: String,
    /// Where accepted files are saved.
    pub(crate) save_dir: String,
    /// Whether offers are accepted without asking.
    pub(crate) auto_accept: bool,
    /// Largest file accepted, in bytes (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_size: Option<u64>,
    /// Who may send to us and whom we send to (empty: anyone, by remembered key).
    pub(crate) allow: Vec<String>,
}

/// A tool's failure, as the structured content of an error result.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ToolError {
    /// A stable snake_case code, the same as the CLI's `--json` (`not_allowed`, `too_large`,
    /// `hash_mismatch`, `declined`, `no_answer`, `invalid_arguments`, ...).
    pub(crate) code: String,
    /// The class of failure: `rejected`, `timed_out`, `verification`, `protocol`, `network`,
    /// `io`, `cancelled` or `usage`.
    pub(crate) kind: String,
    /// What went wrong, in words.
    pub(crate) message: String,
    /// The transfer concerned, if one was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transfer_id: Option<String>,
}

/// A tool error with a stable code.
pub(crate) fn failure(
    code: &str,
    kind: FailureKind,
    message: impl Into<String>,
    transfer_id: Option<String>,
) -> CallToolResult {
    let kind = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned());
    let error = ToolError {
        code: code.to_owned(),
        kind,
        message: message.into(),
        transfer_id,
    };
    CallToolResult::structured_error(serde_json::to_value(&error).unwrap_or_default())
}
