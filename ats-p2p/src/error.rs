//! Errors, one enum per operation (style.md), each beside the code that raises it; this module
//! re-exports them all and holds [`reason_chain`]. Each variant names what failed and keeps the
//! lower error as its [`source`](std::error::Error::source), so a caller prints the chain once.
//!
//! Policy decisions are not errors: a refused offer or claim is a value
//! ([`ReceiveRejection`](crate::policy::ReceiveRejection),
//! [`ClaimRejection`](crate::policy::ClaimRejection)) that becomes a reject or fail reason.

pub use crate::hashing::HashError;
pub use crate::identity::IdentityError;
pub use crate::node::{NodeError, ReceiveError, SendError};
pub use crate::policy::{ActorIdError, KnownKeysError, ParseAllowError};
pub use crate::save::SaveError;
pub use crate::transfer::{StreamReceiveError, StreamSendError, transfer_error_code};

/// `err` and its sources joined with `": "`: the one-line reason a task is failed with.
pub fn reason_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}
