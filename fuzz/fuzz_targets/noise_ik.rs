//! Noise IK as HyperDHT runs it: arbitrary and edited msg1 into the server, arbitrary msg2 into the client; the checks live in `ats_p2p_swarm::fuzzing::noise_ik`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _completed = ats_p2p_swarm::fuzzing::noise_ik(data);
});
