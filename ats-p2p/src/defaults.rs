//! A node's defaults, in one place: [`NodeConfig::new`](crate::NodeConfig::new) starts from
//! them and the `ats-p2p` command line shows and uses them. Where the signal client owns a
//! default (the ATS URL, the offer channel), it is re-used here, not repeated.

use std::time::Duration;

/// The public ATS server (the `ats` CLI's default too).
pub const ATS_URL: &str = ats_p2p_signal::client::DEFAULT_ATS_URL;

/// The actor id a node uses unless told otherwise.
pub const ACTOR_ID: &str = "p2p-node";

/// The channel offers go to unless told otherwise.
pub const CHANNEL: &str = ats_p2p_signal::offer::DEFAULT_OFFER_CHANNEL;

/// How long to wait for a claim, an accept, a connection (and the receiver's lease).
pub const TIMEOUT: Duration = Duration::from_secs(120);
