//! Hyperswarm transport for ats-p2p: UDX streams, the Noise secret stream and HyperDHT.
//!
//! Work in progress: see the project's issues. Nothing here is usable yet.
#![forbid(unsafe_code)]
