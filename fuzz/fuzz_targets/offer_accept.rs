//! file_offer payloads and accept messages as the node parses them; the checks live in `ats_p2p_signal::fuzzing::offer_accept`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_signal::fuzzing::offer_accept(data);
});
