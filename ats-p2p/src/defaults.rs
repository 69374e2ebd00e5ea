//! A node's defaults, in one place: [`NodeConfig::new`](crate::NodeConfig::new) starts from
//! them and the `ats-p2p` command line shows and uses them. Where the signal client owns a
//! default (the ATS URL, the offer channel), it is re-used here, not repeated.

use std::time::Duration;

/// The public ATS server (the `ats` CLI's default too).
pub const ATS_URL: &str = ats_p2p_signal::defaults::ATS_URL;

/// The actor id a node uses unless told otherwise.
pub const ACTOR_ID: &str = ats_p2p_signal::defaults::ACTOR_ID;

/// The channel offers go to unless told otherwise.
pub const CHANNEL: &str = ats_p2p_signal::defaults::OFFER_CHANNEL;

/// How long to wait for a claim, an accept, a connection (and the receiver's lease).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// How many times a send offers a file again by itself after its transfer broke (the peer or
/// the network gone, the stream timed out): enough to ride out a restarted receiver or a flaky
/// link, few enough that a receiver that keeps failing ends the send.
pub const SEND_RETRIES: u32 = 5;
