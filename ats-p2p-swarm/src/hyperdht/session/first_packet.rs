//! The client's first UDX packet on our main socket: the stream connects there (direct, LAN, or
//! a consistent-NAT punch where the client reached our mapping), unless the relay pairing is
//! running, which then decides.

use std::net::SocketAddr;
use std::time::Instant;

use super::{ServerSession, SessionOutcome, SessionPath};
use crate::hyperdht::connect::direct_path;
use crate::hyperdht::path::{PathInfo, PathKind};

impl ServerSession {
    /// The client's first UDX packet reached our stream on the main socket. While the relay
    /// pairing runs, that packet is most likely the client's first one through the relay (it
    /// learns of the pairing first): the pairing's answer decides, and this path is used only
    /// if the pairing fails. Taking it at once would drop the pairing and with it the relay's
    /// forwarding of this very stream.
    pub(crate) fn handle_first_packet(&mut self, from: SocketAddr, now: Instant) {
        if self.done() {
            return;
        }
        let punched = self.schedule.is_some() || self.rounds_seen;
        let path = match from {
            SocketAddr::V4(_) if punched && PathKind::of_direct(from) == PathKind::Direct => {
                PathInfo {
                    kind: PathKind::Holepunched,
                    remote_addr: from,
                    relay: None,
                }
            }
            SocketAddr::V4(a) => direct_path(a),
            other => PathInfo {
                kind: PathKind::Direct,
                remote_addr: other,
                relay: None,
            },
        };
        if self.pairing {
            self.first_while_pairing = Some(path);
            return;
        }
        self.finish(SessionOutcome::Connected(SessionPath::Main(path)), now);
    }
}
