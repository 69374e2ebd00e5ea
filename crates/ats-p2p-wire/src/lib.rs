//! Sans-io frame codec and transfer state machines for ats-p2p.
#![forbid(unsafe_code)]
