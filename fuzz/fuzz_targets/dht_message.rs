//! DHT datagrams into a HyperDHT node (`HyperDhtCore::handle_datagram`), with decode round trips; the checks live in `ats_p2p_swarm::fuzzing::dht_messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ats_p2p_swarm::fuzzing::dht_messages(data);
});
