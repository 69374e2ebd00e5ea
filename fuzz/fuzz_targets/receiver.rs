//! The receiving state machine fed arbitrary frame and call sequences; the checks live in
//! `ats_p2p_wire::fuzzing::receiver` so the corpus test runs the same logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ats_p2p_wire::fuzzing::receiver(data);
});
