//! ATS signaling for ats-p2p: a typed ATS client and an ATS-compatible hub server.
#![forbid(unsafe_code)]
