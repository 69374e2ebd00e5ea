//! The relay fallback (§3.10): when the punch fails or the client aborts it, pair our stream
//! through the agreed blind relay; its answer ends the session (or, if it fails, a first packet
//! that came meanwhile).

use std::time::Instant;

use tracing::debug;

use super::{ServerSession, SessionAction, SessionOutcome, SessionPath};
use crate::relay::RELAY_TIMEOUT;

impl ServerSession {
    /// The relay pairing's result (`Err`: why it failed).
    pub(crate) fn handle_relay(&mut self, result: Result<(), String>, now: Instant) {
        self.pairing = false;
        if self.done() {
            return;
        }
        match result {
            Ok(()) => self.finish(SessionOutcome::Connected(SessionPath::Relayed), now),
            Err(e) => match self.first_while_pairing.take() {
                Some(path) => {
                    debug!(error = %e, "relay pairing failed; the client's packet came directly");
                    self.finish(SessionOutcome::Connected(SessionPath::Main(path)), now);
                }
                None => self.finish(
                    SessionOutcome::Failed(format!("relay pairing failed: {e}")),
                    now,
                ),
            },
        }
    }

    /// Falls back to the relay (when there is one and the pairing has not started).
    pub(super) fn start_relay(&mut self, why: &str, now: Instant) {
        if self.pairing {
            return;
        }
        let Some(relay) = self.params.relay else {
            debug!(why, "no path and no relay");
            return;
        };
        debug!(why, relay = %relay.key.to_hex(), "falling back to the relay");
        self.pairing = true;
        self.deadline = self.deadline.max(now + RELAY_TIMEOUT);
        self.actions.push_back(SessionAction::PairRelay(relay));
    }
}
