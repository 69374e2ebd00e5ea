//! Secret-stream bytes into a receiver at the production frame limit; the checks live in `ats_p2p_swarm::fuzzing::secret_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_swarm::fuzzing::secret_stream(data);
});
