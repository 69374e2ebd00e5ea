//! Hub request bodies through the handlers' parse and validation functions (in-memory SQLite); the checks live in `ats_p2p_signal::fuzzing::hub_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_signal::fuzzing::hub_body(data);
});
