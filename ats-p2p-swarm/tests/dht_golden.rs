//! Golden vectors: our codecs against the JavaScript reference, produced at test time by
//! `interop/js/dht-golden.js` so they cannot drift.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::{SocketAddrV4, SocketAddrV6};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::crypto::keyed_blake2b_256;
use ats_p2p_swarm::dht::node_id;
use ats_p2p_swarm::encoding::{Reader, Writer};
use ats_p2p_swarm::hyperdht::crypto::{
    announce_signable, holepunch_secret, ns, secretbox_open, secretbox_seal,
};
use ats_p2p_swarm::hyperdht::messages::{
    Announce, Handshake, Holepunch, HolepunchInfo, HolepunchPayload, LookupReply, Mode,
    NoisePayload, PeerRecord, RelayInfo, UdxInfo,
};
use serde_json::Value;

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn a32(v: &Value) -> [u8; 32] {
    h(v).try_into().unwrap()
}

#[tokio::test]
async fn codecs_match_javascript() {
    let g = support::run_js_json("dht-golden.js").await;

    for pair in g["uint"].as_array().unwrap() {
        let n = pair[0].as_u64().unwrap();
        let mut w = Writer::new();
        w.uint(n);
        assert_eq!(w.into_vec(), h(&pair[1]), "uint {n}");
        assert_eq!(Reader::new(&h(&pair[1])).uint().unwrap(), n);
    }
    let a: SocketAddrV4 = "10.1.2.3:49737".parse().unwrap();
    let mut w = Writer::new();
    w.ipv4_address(&a);
    assert_eq!(w.into_vec(), h(&g["ipv4"]));
    let a6: SocketAddrV6 = "[2001:db8::1]:8080".parse().unwrap();
    let mut w = Writer::new();
    w.ipv6_address(&a6);
    assert_eq!(w.into_vec(), h(&g["ipv6"]));
    let mut w = Writer::new();
    w.string("héllo");
    assert_eq!(w.into_vec(), h(&g["string"]));

    for pair in g["ids"].as_array().unwrap() {
        let addr: SocketAddrV4 = pair[0].as_str().unwrap().parse().unwrap();
        assert_eq!(node_id(&addr).to_vec(), h(&pair[1]), "id of {addr}");
    }
    for (name, f) in [
        ("ANNOUNCE", ns::announce as fn() -> [u8; 32]),
        ("UNANNOUNCE", ns::unannounce),
        ("MUTABLE_PUT", ns::mutable_put),
        ("PEER_HANDSHAKE", ns::peer_handshake),
        ("PEER_HOLEPUNCH", ns::peer_holepunch),
        ("PLUGIN", ns::plugin),
    ] {
        assert_eq!(f().to_vec(), h(&g["ns"][name]), "{name}");
    }

    let t = &g["token"];
    assert_eq!(
        keyed_blake2b_256::<32>(
            &h(&t["key"]).try_into().unwrap(),
            &[t["host"].as_str().unwrap().as_bytes()]
        )
        .to_vec(),
        h(&t["token"])
    );
    let hs: [u8; 64] = h(&g["holepunchSecret"]["hash"]).try_into().unwrap();
    assert_eq!(
        holepunch_secret(&hs).to_vec(),
        h(&g["holepunchSecret"]["secret"])
    );
    let sb = &g["secretbox"];
    let nonce: [u8; 24] = h(&sb["nonce"]).try_into().unwrap();
    let sealed = secretbox_seal(&a32(&sb["key"]), &nonce, &h(&sb["plain"]));
    assert_eq!(sealed[24..].to_vec(), h(&sb["boxed"]));
    assert_eq!(
        secretbox_open(&a32(&sb["key"]), &sealed).unwrap(),
        h(&sb["plain"])
    );

    let pa: SocketAddrV4 = "127.0.0.1:4000".parse().unwrap();
    let pb: SocketAddrV4 = "10.0.0.2:5000".parse().unwrap();
    let peer = PeerRecord {
        public_key: [0xaa; 32],
        relay_addresses: vec![pa, pb],
    };
    assert_eq!(peer.encode(), h(&g["peer"]));
    assert_eq!(PeerRecord::decode(&h(&g["peer"])).unwrap(), peer);
    let hsk = Handshake {
        mode: Mode::FromRelay,
        noise: b"noise!".to_vec(),
        peer_address: Some(pa),
        relay_address: Some(pb),
    };
    assert_eq!(hsk.encode(), h(&g["handshake"]));
    assert_eq!(Handshake::decode(&h(&g["handshake"])).unwrap(), hsk);
    let hp = Holepunch {
        mode: Mode::FromServer,
        id: 300,
        payload: b"pl".to_vec(),
        peer_address: Some(pb),
    };
    assert_eq!(hp.encode(), h(&g["holepunch"]));
    assert_eq!(Holepunch::decode(&h(&g["holepunch"])).unwrap(), hp);
    let hpp = HolepunchPayload {
        error: 0,
        firewall: 2,
        round: 1,
        connected: false,
        punching: true,
        addresses: Some(vec![pa]),
        remote_address: Some(pb),
        token: Some([1; 32]),
        remote_token: None,
    };
    assert_eq!(hpp.encode(), h(&g["holepunchPayload"]));
    assert_eq!(
        HolepunchPayload::decode(&h(&g["holepunchPayload"])).unwrap(),
        hpp
    );
    let np = NoisePayload {
        version: 1,
        error: 0,
        firewall: 1,
        holepunch: Some(HolepunchInfo {
            id: 2,
            relays: vec![RelayInfo {
                relay_address: pa,
                peer_address: pb,
            }],
        }),
        addresses4: vec![pa],
        addresses6: vec![],
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: true,
            id: 123_456,
            seq: 0,
        }),
        secret_stream: Some(1),
        relay_through: None,
        relay_addresses: Some(vec![pb]),
    };
    assert_eq!(np.encode(), h(&g["noisePayload"]));
    assert_eq!(NoisePayload::decode(&h(&g["noisePayload"])).unwrap(), np);
    let one = PeerRecord {
        public_key: [0xaa; 32],
        relay_addresses: vec![],
    }
    .encode();
    assert_eq!(LookupReply::encode_raw(&[&one], 0), h(&g["lookupReply"]));
    assert_eq!(
        LookupReply::decode(&h(&g["lookupReply"]))
            .unwrap()
            .peers
            .len(),
        1
    );

    // Announce: same signature bytes (Ed25519 is deterministic) and same value encoding.
    let an = &g["announce"];
    let kp = KeyPair::from_seed(a32(&an["seed"]));
    assert_eq!(kp.public_key().as_bytes().to_vec(), h(&an["publicKey"]));
    let (target, nid, token) = (a32(&an["target"]), a32(&an["nodeId"]), a32(&an["token"]));
    let peer = PeerRecord {
        public_key: *kp.public_key().as_bytes(),
        relay_addresses: vec![pa],
    };
    let sig = kp.sign(&announce_signable(
        &ns::announce(),
        &target,
        &nid,
        &token,
        &peer,
        None,
    ));
    assert_eq!(sig.to_vec(), h(&an["signature"]));
    let value = Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(sig),
        bump: 0,
    };
    assert_eq!(value.encode(), h(&an["value"]));
    assert_eq!(Announce::decode(&h(&an["value"])).unwrap(), value);
    let unpeer = PeerRecord {
        public_key: *kp.public_key().as_bytes(),
        relay_addresses: vec![],
    };
    let usig = kp.sign(&announce_signable(
        &ns::unannounce(),
        &target,
        &nid,
        &token,
        &unpeer,
        None,
    ));
    assert_eq!(usig.to_vec(), h(&g["unannounce"]["signature"]));
}
