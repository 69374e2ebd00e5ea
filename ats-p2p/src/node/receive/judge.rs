//! Judging an offer: parsing it, the platform's path rules for a directory, the receive
//! policy; a refused offer is rejected on ATS with the reason.

use std::sync::Arc;

use ats_p2p_signal::{FileOffer, Task};
use ats_p2p_swarm::PublicKey;
use tokio::sync::mpsc;

use crate::events::Event;
use crate::node::{Shared, locked};
use crate::policy::OfferFacts;

use super::Incoming;
use super::job::Job;
use super::refuse::refuse_task;
use super::routes::TaskRoutes;

/// Parses a pending task and applies the policy: `None` when it is not for us, or was refused
/// (then it is rejected on ATS and a `transfer_failed` event says why).
pub(super) async fn judge(
    shared: &Arc<Shared>,
    task: Task,
    tx: &mpsc::UnboundedSender<Incoming>,
    routes: &TaskRoutes,
) -> Option<Job> {
    let me = shared.config.actor_id.as_str();
    let offer = match FileOffer::from_task(&task) {
        Ok(o) => o,
        Err(e) => {
            // Only offers addressed to us are ours to reject; others are someone else's business.
            let to_me = task.payload.get("recipient_id").and_then(|v| v.as_str()) == Some(me);
            if to_me {
                let reason = format!("invalid offer: {e}");
                let _ = shared.client.reject(task.id, Some(&reason)).await;
                let _ = tx.send(Incoming::Event(Event::Error {
                    transfer_id: task
                        .payload
                        .get("transfer_id")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    message: format!("rejected task {}: {reason}", task.id),
                }));
            }
            return None;
        }
    };
    if offer.recipient_id != me {
        return None;
    }
    let transfer_id = offer.transfer_id.to_string();
    let _ = tx.send(Incoming::Event(Event::File {
        transfer_id: transfer_id.clone(),
        task_id: task.id.to_string(),
        file_name: offer.filename.clone(),
        file_size: offer.size,
        file_hash: hex::encode(offer.sha256),
        sender_id: offer.sender_id.clone(),
        sender_key: hex::encode(offer.sender_key),
        file_count: offer.manifest.as_ref().map(|m| m.files.len() as u64),
    }));
    let job = |approval| Job {
        shared: shared.clone(),
        offer: offer.clone(),
        task: task.clone(),
        approval,
        events: tx.clone(),
        routes: routes.clone(),
    };
    if let Some(creator) = task.source_id.as_deref()
        && creator != offer.sender_id
    {
        let reason = format!(
            "offer names sender {} but the task was created by {creator}",
            offer.sender_id
        );
        refuse_task(shared, &task, &transfer_id, "sender_mismatch", &reason, tx).await;
        return None;
    }
    if let Some(manifest) = &offer.manifest
        && let Some(reason) = unsafe_tree_path(manifest)
    {
        refuse_task(shared, &task, &transfer_id, "unsafe_path", &reason, tx).await;
        return None;
    }
    let sender_key = PublicKey::from_bytes(offer.sender_key);
    let decision = {
        let known = locked(&shared.known);
        shared.receive_policy().decide(
            &known,
            &OfferFacts {
                sender_id: &offer.sender_id,
                sender_key: &sender_key,
                size: offer.size,
                available_space: None,
            },
        )
    };
    match decision {
        Ok(approval) => Some(job(approval)),
        Err(rejection) => {
            let reason = rejection.to_string();
            refuse_task(shared, &task, &transfer_id, rejection.code(), &reason, tx).await;
            None
        }
    }
}

/// Why a directory offer's paths are unsafe on this platform (the offer itself checked that
/// they stay inside the directory), or `None`.
pub(super) fn unsafe_tree_path(manifest: &ats_p2p_signal::Manifest) -> Option<String> {
    let paths = manifest
        .dirs
        .iter()
        .chain(manifest.files.iter().map(|f| &f.path));
    paths.into_iter().find_map(|path| {
        crate::names::check_tree_path(path)
            .err()
            .map(|reason| format!("unsafe path {path:?} in the offered directory: {reason}"))
    })
}
