//! The relay fallback of a connect (§3.10): when no direct or punched path exists (both NATs
//! random, or the punch failed), pair the stream through the blind relay named in either
//! handshake payload, or fail with what was detected.

use tracing::debug;

use super::{ClientAction, ClientConnect, ClientPath, Phase};
use crate::hyperdht::terms::{ConnectError, NoPathReason, RelayMode};

impl ClientConnect {
    /// The relay pairing's result (`Err`: why it failed).
    pub(crate) fn handle_relay(&mut self, result: Result<(), String>) {
        if !matches!(self.phase, Phase::Relaying) {
            return;
        }
        match result {
            Ok(()) => self.finish(ClientPath::Relayed),
            Err(e) => {
                let key = self.relay.map(|r| r.key.to_hex()).unwrap_or_default();
                let mut reason = self.reason.clone();
                reason.relay = Some(format!("relay {key} failed: {e}"));
                self.fail(ConnectError::NoPath(reason));
            }
        }
    }

    /// When no direct or punched path exists: pair through the agreed relay, or fail with what
    /// was detected.
    pub(super) fn fallback(&mut self, mut reason: NoPathReason) {
        self.pending.clear();
        if self.plan.is_some() {
            self.actions.push_back(ClientAction::ClosePunch);
        }
        let Some(relay) = self.relay else {
            if self.relay_mode == RelayMode::Disabled {
                reason.relay = Some("relaying is disabled (--no-relay)".into());
            }
            self.fail(ConnectError::NoPath(reason));
            return;
        };
        debug!(punch = %reason.punch, relay = %relay.key.to_hex(), "falling back to the relay");
        self.reason = reason;
        self.phase = Phase::Relaying;
        self.actions.push_back(ClientAction::PairRelay(relay));
    }
}
