//! One module per command.

#[cfg(feature = "hub")]
pub(crate) mod hub;
pub(crate) mod id;
pub(crate) mod status;
