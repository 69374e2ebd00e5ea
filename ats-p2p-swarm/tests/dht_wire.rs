//! Request/response bytes for each command against live npm dht-rpc / hyperdht nodes: our
//! encodings sent to JS, JS encodings received and answered by us (raw UDP on 127.0.0.1).

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ats_p2p_swarm::dht::{Message, Request, Response, commands, hash, node_id};
use ats_p2p_swarm::hyperdht::commands as hc;
use serde_json::json;
use support::Agent;
use tokio::net::UdpSocket;

const STEP: Duration = Duration::from_secs(20);

async fn roundtrip(sock: &UdpSocket, to: SocketAddrV4, req: &Request) -> (Response, usize) {
    sock.send_to(&req.encode(), to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply to command {} from JS", req.command))
            .unwrap();
        if let Ok(Message::Response(r)) = Message::decode(&buf[..n])
            && r.tid == req.tid
        {
            assert_eq!(
                r.encode(),
                buf[..n].to_vec(),
                "our re-encoding differs from JS bytes"
            );
            let _ = from;
            return (r, n);
        }
    }
}

fn req(tid: u16, to: SocketAddrV4, internal: bool, command: u64) -> Request {
    Request {
        tid,
        to,
        id: None,
        token: None,
        internal,
        command,
        target: None,
        value: None,
    }
}

#[tokio::test]
async fn our_requests_to_js_and_js_requests_to_us() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut js = Agent::spawn().await;
        let tn = js.call(json!({"cmd":"testnet","size":3}), STEP).await;
        let first = tn["first"].as_u64().unwrap();
        let a = js.call(json!({"cmd":"addr","node":first + 1}), STEP).await;
        let jsaddr: SocketAddrV4 = a["addr"].as_str().unwrap().parse().unwrap();
        let jsid = a["id"].as_str().unwrap().to_string();
        assert_eq!(
            hex::encode(node_id(&jsaddr)),
            jsid,
            "JS id = H(ipv4Address)"
        );

        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(me) = sock.local_addr().unwrap() else {
            panic!()
        };
        let sock2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        // PING: 11-byte request; persistent JS answers with its id only (42 bytes).
        let ping = req(1, jsaddr, true, commands::PING);
        assert_eq!(ping.encode().len(), 11);
        let (r, n) = roundtrip(&sock, jsaddr, &ping).await;
        assert_eq!(
            (n, r.to, r.error, r.token, r.value.clone()),
            (42, me, 0, None, None)
        );
        assert_eq!(r.id, Some(node_id(&jsaddr)));

        // PING_NAT: the reply goes to the port in the value.
        let mut pn = req(2, jsaddr, true, commands::PING_NAT);
        let SocketAddr::V4(me2) = sock2.local_addr().unwrap() else {
            panic!()
        };
        pn.value = Some(me2.port().to_le_bytes().to_vec());
        sock.send_to(&pn.encode(), jsaddr).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock2.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let Message::Response(r) = Message::decode(&buf[..n]).unwrap() else {
            panic!()
        };
        assert_eq!((r.tid, r.to), (2, me2));

        // FIND_NODE: closer nodes, no token.
        let mut f = req(3, jsaddr, true, commands::FIND_NODE);
        f.target = Some(hash(b"x"));
        let (r, _) = roundtrip(&sock, jsaddr, &f).await;
        assert!(
            !r.closer_nodes.is_empty() && r.token.is_none() && r.error == 0,
            "{r:?}"
        );

        // DOWN_HINT and DELAYED_PING: empty replies.
        let mut d = req(4, jsaddr, true, commands::DOWN_HINT);
        d.value = Some(vec![127, 0, 0, 1, 1, 0]);
        assert_eq!(roundtrip(&sock, jsaddr, &d).await.0.error, 0);
        let mut dp = req(5, jsaddr, true, commands::DELAYED_PING);
        dp.value = Some(50u32.to_le_bytes().to_vec());
        assert_eq!(roundtrip(&sock, jsaddr, &dp).await.0.error, 0);

        // Unknown internal command: UNKNOWN_COMMAND.
        assert_eq!(
            roundtrip(&sock, jsaddr, &req(6, jsaddr, true, 9))
                .await
                .0
                .error,
            1
        );

        // LOOKUP: token + closer nodes, no value for an unknown topic.
        let mut l = req(7, jsaddr, false, hc::LOOKUP);
        l.target = Some(hash(b"nothing here"));
        let (r, _) = roundtrip(&sock, jsaddr, &l).await;
        assert!(
            r.token.is_some() && !r.closer_nodes.is_empty() && r.value.is_none(),
            "{r:?}"
        );
        // A request with a bad token: INVALID_TOKEN with a fresh token.
        let mut bad = l.clone();
        bad.tid = 8;
        bad.token = Some([0; 32]);
        let (r2, _) = roundtrip(&sock, jsaddr, &bad).await;
        assert_eq!((r2.error, r2.token), (2, r.token));
        // FIND_PEER for an unknown key: empty value.
        let mut fp = req(9, jsaddr, false, hc::FIND_PEER);
        fp.target = Some(hash(&[1u8; 32]));
        assert!(roundtrip(&sock, jsaddr, &fp).await.0.value.is_none());

        // JS -> us: a JS request decodes, re-encodes to the same bytes, and our reply decodes in JS.
        let jsnode = first;
        let target = hash(b"target");
        let call = js.call(
            json!({"cmd":"request","node":jsnode,"to":me.to_string(),"command":hc::LOOKUP,
                   "target":hex::encode(target),"value":"0102"}),
            STEP,
        );
        let serve = async {
            let mut buf = vec![0u8; 2048];
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let Message::Request(q) = Message::decode(&buf[..n]).unwrap() else {
                panic!()
            };
            assert_eq!(
                q.encode(),
                buf[..n].to_vec(),
                "re-encoding a JS request changed bytes"
            );
            assert_eq!(
                (q.internal, q.command, q.target, q.value.clone()),
                (false, hc::LOOKUP, Some(target), Some(vec![1, 2]))
            );
            assert_eq!(q.to, me);
            let SocketAddr::V4(from) = from else { panic!() };
            let res = Response {
                tid: q.tid,
                to: from,
                id: Some(node_id(&me)),
                token: Some([5; 32]),
                closer_nodes: vec![SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 49737)],
                error: 0,
                value: Some(vec![9, 9, 9]),
            };
            sock.send_to(&res.encode(), from).await.unwrap();
            (q.tid, from)
        };
        let (answer, (tid, from)) = tokio::join!(call, serve);
        assert_eq!(answer["tid"], json!(tid));
        assert_eq!(answer["to"], json!(from.to_string()));
        assert_eq!(answer["id"], json!(hex::encode(node_id(&me))));
        assert_eq!(answer["token"], json!(hex::encode([5u8; 32])));
        assert_eq!(answer["closer"], json!(["10.1.2.3:49737"]));
        assert_eq!(answer["value"], json!("090909"));
        js.quit().await;
    })
    .await
    .expect("test exceeded its time bound");
}
