//! Frame decoder on arbitrary bytes and arbitrary split points; the checks live in
//! `ats_p2p_wire::fuzzing::frame_decoder` so the corpus test runs the same logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_wire::fuzzing::frame_decoder(data);
});
