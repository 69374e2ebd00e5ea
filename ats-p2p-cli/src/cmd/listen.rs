//! `ats-p2p listen`: receive the offers addressed to this actor id.

use anyhow::anyhow;
use ats_p2p::Incoming;
use ats_p2p::events::{Direction, Event};
use futures::StreamExt as _;
use serde_json::json;

use crate::args::{CommonArgs, ListenArgs};
use crate::cmd::node::{self, stop_exit};
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::signals::StopSignals;

/// Reason given when an offer reaches us without automatic acceptance (should not happen: the
/// CLI always watches with a save directory).
const MANUAL_OFFER_REASON: &str = "this listener does not take offers by hand";

/// How a `--once` listener ends on this event, if it does.
fn once_result(event: &Event) -> Option<Exit> {
    match event {
        Event::TransferComplete {
            direction: Direction::Receive,
            ..
        } => Some(Exit::Success),
        Event::TransferFailed {
            direction: Direction::Receive,
            kind,
            ..
        } => Some(Exit::from_kind(*kind)),
        _ => None,
    }
}

/// Listens until Ctrl-C (exit 130), SIGTERM (exit 0), or with `--once` the end of the first
/// transfer (its result).
pub(crate) async fn run(
    out: &mut Output,
    common: &CommonArgs,
    args: ListenArgs,
) -> Result<Exit, Failure> {
    // An unusable save directory is found now, not at the first offer.
    std::fs::create_dir_all(&args.save_dir).map_err(|e| {
        Failure::new(
            Exit::Error,
            anyhow::Error::new(e).context(format!(
                "cannot create the save directory {}",
                args.save_dir.display()
            )),
        )
    })?;
    let mut stop = StopSignals::install()?;
    let mut config = node::node_config(common, &args.node, args.max_size)?;
    config.partial_expiry = args.partial_expiry.0;
    let node = node::start(out, config, &mut stop).await?;
    let channel = &common.signal.channel;
    let mut inbox = node.watch(channel, Some(args.save_dir.clone()));
    let key = node.public_key().to_hex();
    if out.is_json() {
        // The ready line: a script learns our key and knows offers will be seen from now on.
        out.json_line(&json!({
            "event": "listening",
            "transfer_id": null,
            "actor_id": node.actor_id(),
            "public_key": key,
            "channel": channel,
            "save_dir": args.save_dir.display().to_string(),
        }));
    } else {
        out.note(&format!(
            "listening on channel {channel:?} as {} (key {key}), saving to {}; stop with Ctrl-C\n\
             senders run: ats-p2p send FILE --to {}{}",
            node.actor_id(),
            args.save_dir.display(),
            node.actor_id(),
            node::peer_flags(common),
        ));
    }
    let result = loop {
        tokio::select! {
            item = inbox.next() => match item {
                None => break Err(Failure::new(Exit::Network, anyhow!("the watch on ATS ended"))),
                Some(Incoming::Event(event)) => {
                    out.event(&event);
                    if args.once
                        && let Some(exit) = once_result(&event) {
                            break Ok(exit);
                        }
                }
                Some(Incoming::Offer(pending)) => {
                    out.warn(&format!(
                        "offer {} was not accepted automatically; rejecting it",
                        pending.offer.transfer_id
                    ));
                    if let Err(e) = pending.reject(MANUAL_OFFER_REASON).await {
                        out.warn(&format!("cannot reject the offer: {e}"));
                    }
                }
                Some(other) => tracing::debug!(?other, "inbox item not handled"),
            },
            s = stop.wait() => break Ok(stop_exit(s)),
        }
    };
    // Destroy first: transfers still running fail their tasks with a reason; dropping the inbox
    // before would abort them silently.
    node.destroy().await;
    drop(inbox);
    result
}
