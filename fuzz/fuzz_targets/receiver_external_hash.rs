//! The receiving state machine in the mode production uses (`with_external_hash`), fed
//! arbitrary frame and call sequences; the checks live in `ats_p2p_wire::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ats_p2p_wire::fuzzing::receiver_external_hash(data);
});
