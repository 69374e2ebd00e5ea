//! The server-role hooks over real UDP on 127.0.0.1: a Rust client's PEER_HANDSHAKE and
//! PEER_HOLEPUNCH travel through our bootstrap (relay) to a Rust node listening on a key.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::dht::{UserRequest, hash};
use ats_p2p_swarm::hyperdht::messages::{Handshake, Holepunch, Mode};
use ats_p2p_swarm::hyperdht::{Bootstrap, DhtConfig, DhtNode, ServerEvent, commands};

/// A bootstrap node on loopback and two bootstrapped DHT nodes: (bootstrap, server, client).
async fn bootstrap_server_client() -> (Bootstrap, DhtNode, DhtNode) {
    let local = Ipv4Addr::LOCALHOST;
    let boot = Bootstrap::spawn(SocketAddrV4::new(local, 0)).await.unwrap();
    let server = DhtNode::bind(DhtConfig::new(local, vec![boot.addr()]))
        .await
        .unwrap();
    let client = DhtNode::bind(DhtConfig::new(local, vec![boot.addr()]))
        .await
        .unwrap();
    server.bootstrapped().await.unwrap();
    client.bootstrapped().await.unwrap();
    (boot, server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_holepunch_are_relayed_to_a_listener() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (boot, server, client) = bootstrap_server_client().await;

        let info = server.info().await.unwrap();
        assert_eq!(info.remote_addr, Some(server.local_addr()), "{info:?}");
        let kp = KeyPair::from_seed([4; 32]);
        let pk = *kp.public_key().as_bytes();
        let target = hash(&pk);
        let mut events = server.listen(&pk).await.unwrap();
        assert!(server.announce(target, &kp, vec![]).await.unwrap() >= 1);

        // find_peer returns the forward record.
        let found = client.find_peer(pk).await.unwrap();
        assert!(
            found
                .iter()
                .any(|r| r.from == boot.addr() && r.peers[0].public_key == pk)
        );

        // Handshake: client -> relay -> server -> relay -> client, one tid throughout.
        let hs = Handshake {
            mode: Mode::FromClient,
            noise: b"msg1".to_vec(),
            peer_address: None,
            relay_address: None,
        };
        let req = UserRequest {
            to: boot.addr(),
            token: None,
            internal: false,
            command: commands::PEER_HANDSHAKE,
            target: Some(target),
            value: Some(hs.encode()),
            socket: None,
            retries: None,
        };
        let answer = async {
            let Some(ServerEvent::Handshake { req, handshake }) = events.recv().await else {
                panic!("no handshake event")
            };
            assert_eq!(handshake.mode, Mode::FromRelay);
            assert_eq!(handshake.noise, b"msg1");
            assert_eq!(req.from, boot.addr());
            let client_addr = handshake.peer_address.unwrap();
            server
                .answer_handshake(req, handshake, b"msg2".to_vec())
                .await
                .unwrap();
            client_addr
        };
        let (reply, client_seen) = tokio::join!(client.request(req), answer);
        let reply = reply.unwrap();
        assert_eq!(reply.from, boot.addr());
        assert_eq!(
            reply.to, client_seen,
            "REPLY.to = client address as the relay saw it"
        );
        let back = Handshake::decode(reply.value.as_deref().unwrap()).unwrap();
        assert_eq!(back.mode, Mode::Reply);
        assert_eq!(back.noise, b"msg2");
        assert_eq!(
            back.peer_address,
            Some(server.local_addr()),
            "server address as the relay saw it"
        );

        // Holepunch through the same relay.
        let hp = Holepunch {
            mode: Mode::FromClient,
            id: 7,
            payload: b"punch?".to_vec(),
            peer_address: Some(server.local_addr()),
        };
        let req = UserRequest {
            to: boot.addr(),
            token: None,
            internal: false,
            command: commands::PEER_HOLEPUNCH,
            target: Some(target),
            value: Some(hp.encode()),
            socket: None,
            retries: None,
        };
        let answer = async {
            let Some(ServerEvent::Holepunch { req, holepunch }) = events.recv().await else {
                panic!("no holepunch event")
            };
            assert_eq!((holepunch.mode, holepunch.id), (Mode::FromRelay, 7));
            server
                .answer_holepunch(req, holepunch, b"punch!".to_vec())
                .await
                .unwrap();
        };
        let (reply, ()) = tokio::join!(client.request(req), answer);
        let back = Holepunch::decode(reply.unwrap().value.as_deref().unwrap()).unwrap();
        assert_eq!(
            (back.mode, back.payload.as_slice()),
            (Mode::Reply, &b"punch!"[..])
        );
        let stats = boot.node().info().await.unwrap().relayed;
        assert_eq!(
            (
                stats.handshakes_to_server,
                stats.handshakes_to_client,
                stats.holepunches_to_server,
                stats.holepunches_to_client
            ),
            (1, 1, 1, 1)
        );

        // After unannounce the relay has no forward: FROM_CLIENT gets an empty routing reply.
        server.unannounce(target, &kp).await.unwrap();
        let req = UserRequest {
            to: boot.addr(),
            token: None,
            internal: false,
            command: commands::PEER_HANDSHAKE,
            target: Some(target),
            value: Some(hs.encode()),
            socket: None,
            retries: None,
        };
        let reply = client.request(req).await.unwrap();
        assert!(reply.value.is_none());
        client.destroy().await;
        server.destroy().await;
        boot.destroy().await;
    })
    .await
    .expect("test exceeded its time bound");
}

/// A FIND_PEER reply is one peer record; one whose key starts with byte 0 must not be mistaken
/// for an empty LOOKUP reply (about 1 key in 256 was unreachable that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_peer_finds_a_key_that_starts_with_a_zero_byte() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (_boot, server, client) = bootstrap_server_client().await;
        let kp = (0u32..)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                KeyPair::from_seed(seed)
            })
            .find(|kp| kp.public_key().as_bytes()[0] == 0)
            .unwrap();
        let pk = *kp.public_key().as_bytes();
        let _events = server.listen(&pk).await.unwrap();
        assert!(server.announce(hash(&pk), &kp, vec![]).await.unwrap() >= 1);
        let found = client.find_peer(pk).await.unwrap();
        assert!(
            found
                .iter()
                .any(|r| r.peers.iter().any(|p| p.public_key == pk)),
            "{found:?}"
        );
    })
    .await
    .unwrap();
}
