//! compact-encoding reads driven by the input, each checked against a re-encoding; the checks live in `ats_p2p_swarm::fuzzing::compact_encoding`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_swarm::fuzzing::compact_encoding(data);
});
