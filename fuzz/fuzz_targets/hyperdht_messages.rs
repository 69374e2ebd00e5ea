//! HyperDHT message values (records, announces, handshakes, holepunches, payloads) decoded and round-tripped; the checks live in `ats_p2p_swarm::fuzzing::hyperdht_messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_swarm::fuzzing::hyperdht_messages(data);
});
