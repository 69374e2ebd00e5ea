//! UDX datagrams into a connected endpoint (`Endpoint::handle_datagram`); the checks live in `ats_p2p_swarm::fuzzing::udx_packets`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_swarm::fuzzing::udx_packets(data);
});
