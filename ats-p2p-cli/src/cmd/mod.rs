//! One module per command.

#[cfg(feature = "hub")]
pub(crate) mod demo;
#[cfg(feature = "hub")]
pub(crate) mod hub;
pub(crate) mod id;
pub(crate) mod listen;
pub(crate) mod mcp;
pub(crate) mod node;
#[cfg(feature = "hub")]
pub(crate) mod relay;
pub(crate) mod send;
pub(crate) mod status;
