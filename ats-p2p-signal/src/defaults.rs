//! The defaults of talking to ATS, in one place: the facade (`ats-p2p`) and the CLI use these
//! rather than their own copies.

use std::time::Duration;

/// The public ATS service, the default base URL of the `ats` CLI.
pub const ATS_URL: &str = "https://ats.difflab.ai";

/// The actor id an ats-p2p node uses when none is given.
pub const ACTOR_ID: &str = "p2p-node";

/// The actor type of an ats-p2p node.
pub const ACTOR_TYPE: &str = "agent";

/// Organization used when only a project is given (ATS default).
pub const ORG: &str = "default";

/// Project used when only an organization is given (ATS default).
pub const PROJECT: &str = "main";

/// The channel file offers are posted on.
pub const OFFER_CHANNEL: &str = "p2p-transfer";

/// Whole-request timeout: ATS calls are small; anything slower is a stuck server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// TCP/TLS connect timeout, shorter so an unreachable server is noticed quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Repeats of a request that is safe to repeat (so up to 1 + this many attempts).
pub const MAX_RETRIES: u32 = 3;

/// Default lease of a claim when none is given (the ATS default).
pub const LEASE: Duration = Duration::from_secs(60);

/// Polling period of a watch while its WebSocket is unavailable.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
