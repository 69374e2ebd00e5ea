//! `ats-p2p send`: offer a file or a directory and stream it once the recipient accepts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use ats_p2p::events::{Direction, Event, FailureKind};

use crate::args::{CommonArgs, SendArgs};
use crate::cmd::node;
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::signals::StopSignals;

/// Longest wait to cancel the offer's task after Ctrl-C: ATS should show how the transfer
/// ended, but a stuck server must not keep the process alive.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the file; the exit status is the transfer's result (see `--help`).
pub(crate) async fn run(
    out: &mut Output,
    common: &CommonArgs,
    args: SendArgs,
) -> Result<Exit, Failure> {
    // A missing file is a usage error, found before the node starts (which can take seconds).
    match std::fs::metadata(&args.path) {
        Ok(m) if m.is_file() || m.is_dir() => {}
        Ok(_) => {
            return Err(Failure::new(
                Exit::Usage,
                anyhow!(
                    "{} is not a regular file or a directory",
                    args.path.display()
                ),
            ));
        }
        Err(e) => {
            return Err(Failure::new(
                Exit::Usage,
                anyhow::Error::new(e).context(format!("cannot send {}", args.path.display())),
            ));
        }
    }
    let mut stop = StopSignals::install()?;
    let mut config = node::node_config(common, &args.node, None)?;
    config.send_retries = args.retries;
    let node = node::start(out, config, &mut stop).await?;
    let channel = common.signal.channel.clone();
    let hint = format!(
        "waiting for {to} to accept; on their side run: ats-p2p listen --actor-id {to}{flags}",
        to = args.to,
        flags = node::peer_flags(common),
    );
    // The transfer and task ids, once the offer exists (to cancel it on Ctrl-C).
    let offered: Arc<Mutex<Option<(String, String)>>> = Arc::default();
    let result = {
        let offered = Arc::clone(&offered);
        let out = &mut *out;
        let on_event = move |e: &Event| {
            out.event(e);
            if let Event::OfferSent {
                transfer_id,
                task_id,
                ..
            } = e
            {
                out.note(&hint);
                if let Ok(mut o) = offered.lock() {
                    *o = Some((transfer_id.clone(), task_id.clone()));
                }
            }
        };
        let sending = node.send(&args.path, &args.to, &channel, on_event);
        tokio::select! {
            r = sending => Ok(r),
            s = stop.wait() => Err(s),
        }
    };
    let offered = offered.lock().ok().and_then(|mut o| o.take());
    if result.is_err() {
        // Interrupted: the send was dropped mid-way, so end its task here (destroy only
        // cancels offers whose send is still running).
        if let Some(task) = offered.as_ref().and_then(|(_, t)| t.parse().ok()) {
            cancel_task(out, &node, task).await;
        }
    }
    // Leaves the swarm (and cancels anything still open).
    node.destroy().await;
    match result {
        Ok(Ok(_report)) => Ok(Exit::Success),
        Ok(Err(e)) => Err(Failure::new(
            Exit::from_kind(e.kind()),
            anyhow::Error::new(e).context(format!("sending {} failed", args.path.display())),
        )),
        // Even on SIGTERM: the file was not delivered, so this is no success.
        Err(_stop) => {
            if let Some((transfer_id, _)) = offered {
                out.event(&Event::TransferFailed {
                    transfer_id,
                    direction: Direction::Send,
                    kind: FailureKind::Cancelled,
                    code: "interrupted".to_owned(),
                    reason: "the sender was stopped; the offer was cancelled".to_owned(),
                });
            }
            Err(Failure::new(
                Exit::Interrupted,
                anyhow!("interrupted; the offer was cancelled"),
            ))
        }
    }
}

/// Cancels the offer's task unless it already ended.
async fn cancel_task(out: &Output, node: &ats_p2p::Node, task: i64) {
    let client = node.client();
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
        Ok(Err(e)) => out.warn(&format!("cannot cancel task {task}: {e}")),
        Err(_) => out.warn(&format!("cancelling task {task} timed out")),
    }
}
