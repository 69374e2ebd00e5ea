//! The PING race for a direct path: dht-rpc PINGs to every address the server gave, the first
//! answer wins. Direct when the server is reachable (§3.8 step 3, for [`PATH_TIMEOUT`]); LAN
//! when both peers look the same from the relay (for [`LAN_PING_TIMEOUT`], then the punch).

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::{ClientConnect, ClientPath, Pending, Phase};
use crate::dht::{QueryReply, UserRequest};
use crate::hyperdht::holepunch::NatClass;
use crate::hyperdht::terms::NoPathReason;

/// How long the client's PING race for a direct path may take before it gives up.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the LAN/same-host PING race may take when holepunching is the fallback.
pub const LAN_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// dht-rpc retries of one PING of the direct/LAN race.
const PING_RETRIES: u32 = 2;

impl ClientConnect {
    /// Starts the race (`lan`: the short one before a punch).
    pub(super) fn start_ping(&mut self, lan: bool, now: Instant) {
        let limit = if lan { LAN_PING_TIMEOUT } else { PATH_TIMEOUT };
        self.phase = Phase::Ping {
            lan,
            deadline: now + limit,
        };
        for to in self.candidates.clone() {
            let req = UserRequest {
                to,
                token: None,
                internal: true,
                command: 0,
                target: None,
                value: None,
                socket: None,
                retries: Some(PING_RETRIES),
            };
            self.request(req, Pending::Ping(to));
        }
    }

    /// No PING answered: the punch after the LAN race, else the relay (or no path).
    pub(super) fn ping_failed(&mut self, lan: bool, now: Instant) {
        self.pending.clear();
        if lan {
            self.await_nat(now);
        } else {
            let reason = NoPathReason {
                local: NatClass::Unknown,
                remote: self.remote_firewall,
                punch: "the peer's addresses did not answer and it cannot holepunch".into(),
                relay: None,
            };
            self.fallback(reason);
        }
    }

    /// One PING of the race answered (or failed for good).
    pub(super) fn on_ping_reply(
        &mut self,
        addr: SocketAddrV4,
        result: Result<QueryReply, String>,
        now: Instant,
    ) {
        match (&self.phase, result) {
            (Phase::Ping { .. }, Ok(_)) => self.finish(ClientPath::Direct(addr)),
            (Phase::Ping { lan, .. }, Err(_)) => {
                let lan = *lan;
                if !self.pending.values().any(|p| matches!(p, Pending::Ping(_))) {
                    self.ping_failed(lan, now);
                }
            }
            _ => {}
        }
    }
}
