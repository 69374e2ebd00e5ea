//! `ats-p2p send`: offer a file and stream it once the recipient accepts.

use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use ats_p2p::events::{Direction, Event, FailureKind};

use crate::args::SendArgs;
use crate::cmd::node;
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::signals::StopSignals;

/// Sends the file; the exit status is the transfer's result (see `--help`).
pub(crate) async fn run(out: &mut Output, args: SendArgs) -> Result<Exit, Failure> {
    let mut stop = StopSignals::install()?;
    let config = node::node_config(&args.node, None)?;
    let node = node::start(out, config, &mut stop).await?;
    let channel = args.node.signal.channel.clone();
    let hint = format!(
        "waiting for {to} to accept; on their side run: ats-p2p listen --actor-id {to} \
         --ats-url {url}{channel_flag}",
        to = args.to,
        url = args.node.signal.ats_url,
        channel_flag = if channel == crate::args::DEFAULT_CHANNEL {
            String::new()
        } else {
            format!(" --channel {channel}")
        },
    );
    // The transfer id, once the offer exists (for the cancelled event on Ctrl-C).
    let offered: Arc<Mutex<Option<String>>> = Arc::default();
    let result = {
        let offered = Arc::clone(&offered);
        let out = &mut *out;
        let on_event = move |e: &Event| {
            out.event(e);
            if let Event::OfferSent { transfer_id, .. } = e {
                out.note(&hint);
                if let Ok(mut o) = offered.lock() {
                    *o = Some(transfer_id.clone());
                }
            }
        };
        let sending = node.send(&args.path, &args.to, &channel, on_event);
        tokio::select! {
            r = sending => Ok(r),
            s = stop.wait() => Err(s),
        }
    };
    // Cancels the offer if it is still unanswered, leaves the swarm.
    node.destroy().await;
    match result {
        Ok(Ok(_report)) => Ok(Exit::Success),
        Ok(Err(e)) => Err(Failure::new(
            Exit::from_kind(e.kind()),
            anyhow::Error::new(e).context(format!("sending {} failed", args.path.display())),
        )),
        Err(s) => {
            let transfer_id = offered.lock().ok().and_then(|mut o| o.take());
            if let Some(transfer_id) = transfer_id {
                out.event(&Event::TransferFailed {
                    transfer_id,
                    direction: Direction::Send,
                    kind: FailureKind::Cancelled,
                    code: "interrupted".to_owned(),
                    reason: "the sender was stopped; the offer was cancelled".to_owned(),
                });
            }
            // Even on SIGTERM: the file was not delivered, so this is no success.
            let _ = s;
            Err(Failure::new(
                Exit::Interrupted,
                anyhow!("interrupted; the offer was cancelled"),
            ))
        }
    }
}
