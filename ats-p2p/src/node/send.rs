//! The sender's shell: hashes the file, then drives the [`SendLifecycle`] from the hub's watch,
//! the inbound connection, the file stream and one timer, and carries out its ATS calls.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ats_p2p_signal::offer::OFFER_TASK_TYPE;
use ats_p2p_signal::{FileOffer, TaskId, TransferId, WatchConfig};
use ats_p2p_wire::{FileHash, Meta, SenderConfig, TransferError};
use futures::StreamExt;
use tokio::time::Instant as Deadline;
use tracing::debug;

use super::SendError;
use super::{ProgressThrottle, Shared, locked};
use crate::events::{ConnectionPath, Direction, Event};
use crate::hash_cache::HashCache;
use crate::hashing::sha256_file_async;
use crate::lifecycle::{ClaimToJudge, SendAction, SendLifecycle};
use crate::names::sanitize_file_name;
use crate::policy::KnownKeysError;
use crate::policy::{ClaimFacts, ClaimRejection, KeyUpdate, PeerApproval, validate_actor_id};
use crate::transfer::StreamSendError;
use crate::transfer::{SendOptions, SendSource, Sent, send_source_opts};
use ats_p2p_swarm::swarm::{ExpectedConnection, JoinMode};
use ats_p2p_swarm::wait;

/// A file delivered: the receiver verified it and ACKed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The transfer id.
    pub transfer_id: TransferId,
    /// The ATS task that carried the offer.
    pub task_id: TaskId,
    /// The name offered.
    pub file_name: String,
    /// SHA-256 of the file.
    pub file_hash: FileHash,
    /// Bytes of the file the receiver holds (all of it).
    pub bytes: u64,
    /// Bytes the receiver already held from a broken transfer (0: none).
    pub resumed_from: u64,
    /// From the connection to the ACK.
    pub duration: Duration,
    /// How the connection reached the receiver.
    pub path: ConnectionPath,
}

/// See [`Node::send`](super::Node::send).
pub(super) async fn send(
    shared: &Arc<Shared>,
    path: &Path,
    recipient: &str,
    channel: &str,
    mut on_event: impl FnMut(&Event) + Send,
) -> Result<SendReport, SendError> {
    validate_actor_id(recipient).map_err(|source| SendError::InvalidRecipient {
        recipient: recipient.to_owned(),
        source,
    })?;
    let not_a_file = |source| SendError::NotAFile {
        path: path.to_path_buf(),
        source,
    };
    let stat = tokio::fs::metadata(path)
        .await
        .map_err(|e| not_a_file(Some(e)))?;
    let file_name = sanitize_file_name(
        &path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let mut offer = FileOffer {
        transfer_id: TransferId::random(),
        filename: file_name,
        size: 0,
        sha256: [0; 32],
        sender_id: shared.config.actor_id.clone(),
        recipient_id: recipient.to_owned(),
        sender_key: *shared.swarm.public_key().as_bytes(),
        manifest: None,
    };
    let source = if stat.is_dir() {
        let tree = scan_directory(path).await?;
        for skipped in &tree.skipped {
            on_event(&Event::Skipped {
                path: skipped.path.display().to_string(),
                reason: skipped.reason.to_owned(),
            });
        }
        offer.size = tree.manifest.total_size().unwrap_or(u64::MAX);
        offer.sha256 = tree.manifest.digest();
        offer.manifest = Some(tree.manifest);
        tree.source
    } else if stat.is_file() {
        // An unchanged file sent before is not hashed again (see `hash_cache`).
        let digest = HashCache::beside(shared.config.known_keys_path.as_deref())
            .sha256_file(path.to_path_buf())
            .await
            .map_err(|source| SendError::Hash {
                path: path.to_path_buf(),
                source,
            })?;
        offer.size = digest.bytes;
        offer.sha256 = digest.sha256;
        SendSource::File(path.to_path_buf())
    } else {
        return Err(not_a_file(None));
    };
    let machine = SendLifecycle::new(offer, path.display().to_string(), shared.config.timeout)
        .with_retries(shared.config.send_retries);
    let shell = SendShell {
        shared,
        source: &source,
        channel,
        on_event: Mutex::new(on_event),
        receiver_took_bytes: Mutex::new(None),
    };
    shell.run(machine).await
}

/// The file stream of a running send: the bytes ACKed, or why not.
type StreamFuture<'a> = Pin<Box<dyn Future<Output = Result<Sent, SendError>> + Send + 'a>>;

/// What the sender's machine is driven with.
struct SendShell<'a, F> {
    shared: &'a Arc<Shared>,
    /// The file or the directory's files.
    source: &'a SendSource,
    channel: &'a str,
    /// Shared by the machine's events and the stream's progress reports.
    on_event: Mutex<F>,
    /// When the running stream last reported bytes taken by the receiver (for the machine).
    receiver_took_bytes: Mutex<Option<Instant>>,
}

impl<'a, F: FnMut(&Event) + Send> SendShell<'a, F> {
    fn emit(&self, event: &Event) {
        (locked(&self.on_event))(event);
    }

    async fn run(&self, mut machine: SendLifecycle) -> Result<SendReport, SendError> {
        // Watch before creating, so no claim can slip by.
        let mut watch = self.shared.client.watch(WatchConfig {
            channels: vec![self.channel.to_owned()],
            task_types: vec![OFFER_TASK_TYPE.to_owned()],
            ..WatchConfig::default()
        });
        let mut watch_open = true;
        let mut expected: Option<ExpectedConnection> = None;
        let mut connection = None;
        let mut stream: Option<StreamFuture<'_>> = None;
        let mut cancelled = false;
        let shutdown = self.shared.shutdown.clone();
        let outcome = loop {
            while let Some(action) = machine.poll_action() {
                match action {
                    SendAction::Listen { key, topic } => {
                        // Answered: from now on the transfer ends the task itself.
                        self.forget_open_offer(&machine);
                        expected = Some(self.shared.swarm.expect(key));
                        if let Err(e) = self.shared.swarm.join(topic, JoinMode::SERVER).await {
                            machine.handle_listen_failed(SendError::Swarm(e), Instant::now());
                        }
                    }
                    SendAction::StopListening { topic } => {
                        expected = None;
                        // Unannounce in the background; `destroy` waits for it.
                        let shared = self.shared.clone();
                        self.shared.tracker.spawn(async move {
                            if let Err(e) = shared.swarm.leave(topic).await {
                                debug!(error = %e, "unannounce failed");
                            }
                        });
                    }
                    SendAction::Stream => {
                        if let Some(conn) = connection.take() {
                            let resume = self.shared.config.resume && machine.peer_can_resume();
                            stream =
                                Some(Box::pin(self.stream(conn, machine.offer().clone(), resume)));
                        }
                    }
                    other => self.perform(&mut machine, other).await,
                }
            }
            if let Some(outcome) = machine.poll_outcome() {
                break outcome;
            }
            let timeout = machine.poll_timeout();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !cancelled => {
                    cancelled = true;
                    stream = None;
                    machine.handle_cancel(Instant::now());
                }
                sent = wait::optional(&mut stream), if stream.is_some() => {
                    stream = None;
                    if let Some(at) = locked(&self.receiver_took_bytes).take() {
                        machine.handle_progress(at);
                    }
                    if let Ok(sent) = &sent {
                        machine.handle_resumed(sent.resumed_from);
                    }
                    machine.handle_outcome(sent.map(|s| s.bytes), Instant::now());
                }
                conn = async {
                    match expected.as_mut() {
                        Some(e) => e.connection(Deadline::now() + self.shared.config.timeout).await,
                        None => std::future::pending().await,
                    }
                }, if expected.is_some() && machine.is_listening() => {
                    match conn {
                        Some(conn) => {
                            let path = ConnectionPath::of(&conn);
                            connection = Some(conn);
                            machine.handle_connection(path, Instant::now());
                        }
                        // The transport stopped handing over connections: the machine's
                        // deadline ends the wait.
                        None => expected = None,
                    }
                }
                event = watch.next(), if watch_open => match event {
                    Some(event) => machine.handle_task_event(&event, Instant::now()),
                    None => {
                        watch_open = false;
                        if !machine.is_streaming() {
                            machine.handle_cancel(Instant::now());
                        }
                    }
                },
                () = wait::sleep_until(timeout), if timeout.is_some() => {
                    machine.handle_timeout(Instant::now());
                }
            }
        };
        self.forget_open_offer(&machine);
        outcome
    }

    /// Carries out one of the machine's ATS calls, judgements or reports.
    async fn perform(&self, machine: &mut SendLifecycle, action: SendAction) {
        let shared = self.shared;
        match action {
            SendAction::CreateTask => {
                let task = shared
                    .client
                    .create_task(&machine.offer().to_new_task(Some(self.channel)))
                    .await;
                if let Ok(task) = &task {
                    // Until it is answered, the offer is the node's to cancel at `destroy`
                    // (also when this future is dropped half way, as on Ctrl-C).
                    locked(&shared.open_offers).insert(task.id);
                }
                machine.handle_task_created(task, Instant::now());
            }
            SendAction::ListMessages(id) => {
                let messages = shared.client.list_messages(id).await;
                machine.handle_messages(messages, Instant::now());
            }
            SendAction::JudgeClaim(claim) => {
                let judgement = shared.send_policy_decision(&claim);
                machine.handle_judgement(judgement, Instant::now());
            }
            SendAction::RememberKey(approval) => {
                let offer = machine.offer();
                if let Err(e) =
                    remember_key(shared.clone(), offer.recipient_id.clone(), approval).await
                {
                    self.emit(&Event::Error {
                        transfer_id: Some(offer.transfer_id.to_string()),
                        message: format!(
                            "file delivered, but remembering the key of {} failed: {}",
                            offer.recipient_id,
                            crate::error::reason_chain(&e)
                        ),
                    });
                }
            }
            SendAction::Fail { task, reason } => {
                match shared.client.fail(task, Some(&reason)).await {
                    Ok(_) => {}
                    Err(e) => {
                        debug!(task, error = %e, "cannot fail the task after a failed send");
                        if let Err(e) = shared.client.cancel(task).await {
                            debug!(task, error = %e, "cannot cancel the task either");
                        }
                    }
                }
            }
            SendAction::Cancel(id) => {
                if let Err(e) = shared.client.cancel(id).await {
                    debug!(task = id, error = %e, "cannot cancel the task after a failed send");
                }
            }
            SendAction::Emit(event) => self.emit(&event),
            SendAction::Listen { .. } | SendAction::StopListening { .. } | SendAction::Stream => {}
        }
    }

    /// The offer was answered (or the send ended): `destroy` no longer cancels it.
    fn forget_open_offer(&self, machine: &SendLifecycle) {
        if let Some(id) = machine.task() {
            locked(&self.shared.open_offers).remove(&id);
        }
    }

    /// Streams the file over `conn` and waits for the ACK; a NACK for a file that changed since
    /// it was offered is our failure, not the receiver's.
    async fn stream(
        &self,
        conn: ats_p2p_swarm::hyperdht::Connection,
        offer: FileOffer,
        offer_resume: bool,
    ) -> Result<Sent, SendError> {
        let transfer_id = offer.transfer_id.to_string();
        let meta = Meta {
            name: offer.filename.clone(),
            size: offer.size,
            hash: FileHash(offer.sha256),
            resume: false,
        };
        let mut throttle = ProgressThrottle::new();
        let progress = |bytes, total| {
            if throttle.ready(bytes, total) {
                *locked(&self.receiver_took_bytes) = Some(Instant::now());
                self.emit(&Event::Progress {
                    transfer_id: transfer_id.clone(),
                    direction: Direction::Send,
                    bytes,
                    total,
                });
            }
        };
        let config = SenderConfig {
            offer_resume,
            ..SenderConfig::default()
        };
        let options = SendOptions {
            rule: self.shared.config.progress,
            limit: self.shared.config.limit,
        };
        let sent = send_source_opts(conn, self.source, meta, config, options, progress).await;
        match (sent, self.source) {
            (Ok(sent), _) => Ok(sent),
            (
                Err(e @ StreamSendError::Transfer(TransferError::Nack(_))),
                SendSource::File(path),
            ) => Err(blame_refusal(path, offer.sha256, e).await),
            (Err(e), _) => Err(SendError::Stream(e)),
        }
    }
}

/// Walks and hashes the directory at `path` off the runtime (stops when dropped).
async fn scan_directory(path: &Path) -> Result<crate::tree::ScannedTree, SendError> {
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop = crate::hashing::CancelOnDrop(Arc::clone(&cancel));
    let root = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::tree::scan_and_hash(&root, &cancel))
        .await
        .map_err(|e| SendError::Hash {
            path: path.to_path_buf(),
            source: crate::hashing::HashError::Task(e),
        })?
        .map_err(SendError::Tree)
}

/// After a NACK: if the file no longer hashes to what was offered, it changed after the offer
/// (a verification failure on our side); otherwise the receiver refused it.
async fn blame_refusal(path: &Path, offered: [u8; 32], refusal: StreamSendError) -> SendError {
    match sha256_file_async(path.to_path_buf(), |_, _| {}).await {
        Ok(now) if now.sha256 != offered => SendError::FileChanged {
            path: path.to_path_buf(),
            source: refusal,
        },
        _ => SendError::Stream(refusal),
    }
}

impl Shared {
    fn send_policy_decision(&self, c: &ClaimToJudge) -> Result<PeerApproval, ClaimRejection> {
        let policy = crate::policy::SendPolicy {
            peer: self.peer_policy(),
        };
        let known = locked(&self.known);
        policy.decide_claim(
            &known,
            &ClaimFacts {
                transfer_id: &c.transfer_id,
                recipient_id: &c.recipient_id,
                claimer_id: &c.claimer_id,
                accept_transfer_id: &c.accept_transfer_id,
                receiver_key: &c.receiver_key,
            },
        )
    }
}

/// Remembers `actor`'s approved key (trust on first use), off the async runtime. Called only
/// after a transfer with that key was verified and stored (never at claim time). If another
/// transfer remembered a different key for `actor` since this one was approved, the first
/// verified key stays.
pub(super) async fn remember_key(
    shared: Arc<Shared>,
    actor: String,
    approval: PeerApproval,
) -> Result<(), KnownKeysError> {
    let task = tokio::task::spawn_blocking(move || {
        let mut known = locked(&shared.known);
        let first_was_other = approval.key_update == KeyUpdate::Remember
            && known.get(&actor).is_some_and(|k| *k != approval.key);
        if first_was_other {
            debug!(%actor, "another verified key was remembered first; keeping it");
            return Ok(());
        }
        match known.apply(&actor, &approval) {
            Ok(true) => known.save(),
            Ok(false) => Ok(()),
            // The actor id passed the policy, so it is valid; nothing to remember otherwise.
            Err(_) => Ok(()),
        }
    });
    task.await.unwrap_or(Ok(()))
}
