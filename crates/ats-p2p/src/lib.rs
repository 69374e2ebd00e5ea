//! ats-p2p: peer-to-peer file transfer between AI agents, signaled through ATS.
//!
//! This facade composes [`ats_p2p_wire`], [`ats_p2p_swarm`] and [`ats_p2p_signal`]. The node API
//! arrives with its own issue; nothing here is usable yet.
#![forbid(unsafe_code)]

pub use ats_p2p_signal as signal;
pub use ats_p2p_swarm as swarm;
pub use ats_p2p_wire as wire;
