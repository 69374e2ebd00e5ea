use super::*;

fn kp(b: u8) -> KeyPair {
    KeyPair::from_seed([b; 32])
}

/// Runs a handshake between two state machines, accepting every key; returns both results and
/// the payloads each side read.
fn run(
    mut i: NoiseHandshake,
    mut r: NoiseHandshake,
    payloads: (&[u8], &[u8]),
) -> (Handshake, Handshake, Vec<Vec<u8>>) {
    let mut read = Vec::new();
    let mut turn_initiator = true;
    for _ in 0..10 {
        let (a, b) = if turn_initiator {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        if a.next_step() == Step::Complete && b.next_step() == Step::Complete {
            break;
        }
        if let Step::Verdict(_) = a.next_step() {
            a.handle_verdict(true).unwrap();
        }
        if a.next_step() == Step::Write {
            let p = if turn_initiator {
                payloads.0
            } else {
                payloads.1
            };
            let msg = a.write_message(p).unwrap();
            read.push(b.read_message(&msg).unwrap());
            if let Step::Verdict(_) = b.next_step() {
                b.handle_verdict(true).unwrap();
            }
        }
        turn_initiator = !turn_initiator;
    }
    (
        i.into_handshake().unwrap(),
        r.into_handshake().unwrap(),
        read,
    )
}

#[test]
fn xx_round_trip() {
    let i = NoiseHandshake::new(NoiseConfig::xx_initiator(kp(1))).unwrap();
    let r = NoiseHandshake::new(NoiseConfig::xx_responder(kp(2))).unwrap();
    let (hi, hr, payloads) = run(i, r, (b"", b""));
    assert_eq!(hi.tx, hr.rx);
    assert_eq!(hi.rx, hr.tx);
    assert_ne!(hi.tx, hi.rx);
    assert_eq!(hi.hash, hr.hash);
    assert_eq!(hi.remote_public_key, kp(2).public_key());
    assert_eq!(hr.remote_public_key, kp(1).public_key());
    assert!(hi.is_initiator && !hr.is_initiator);
    assert_eq!(payloads, vec![Vec::<u8>::new(); 3]);
}

#[test]
fn ik_round_trip_with_payloads() {
    let i = NoiseHandshake::new(NoiseConfig::ik_initiator(
        kp(1),
        b"prologue",
        kp(2).public_key(),
    ))
    .unwrap();
    let r = NoiseHandshake::new(NoiseConfig::ik_responder(kp(2), b"prologue")).unwrap();
    let (hi, hr, payloads) = run(i, r, (b"hello responder", b"hello initiator"));
    assert_eq!(hi.tx, hr.rx);
    assert_eq!(hi.hash, hr.hash);
    assert_eq!(hr.remote_public_key, kp(1).public_key());
    assert_eq!(
        payloads,
        vec![b"hello responder".to_vec(), b"hello initiator".to_vec()]
    );
}

#[test]
fn ik_prologue_mismatch_fails() {
    let mut i =
        NoiseHandshake::new(NoiseConfig::ik_initiator(kp(1), b"a", kp(2).public_key())).unwrap();
    let mut r = NoiseHandshake::new(NoiseConfig::ik_responder(kp(2), b"b")).unwrap();
    let m1 = i.write_message(b"x").unwrap();
    assert_eq!(r.read_message(&m1), Err(NoiseError::Decrypt));
    assert_eq!(r.next_step(), Step::Failed);
}

#[test]
fn ik_responder_verdict_comes_before_reply() {
    let mut i =
        NoiseHandshake::new(NoiseConfig::ik_initiator(kp(1), b"", kp(2).public_key())).unwrap();
    let mut r = NoiseHandshake::new(NoiseConfig::ik_responder(kp(2), b"")).unwrap();
    let m1 = i.write_message(b"payload").unwrap();
    assert_eq!(r.read_message(&m1).unwrap(), b"payload");
    assert_eq!(r.next_step(), Step::Verdict(kp(1).public_key()));
    // no reply can be produced before the verdict
    assert!(matches!(
        r.write_message(b""),
        Err(NoiseError::ApiMisuse(_))
    ));
    assert_eq!(
        r.handle_verdict(false),
        Err(NoiseError::Rejected(kp(1).public_key()))
    );
    assert_eq!(r.next_step(), Step::Failed);
    assert_eq!(r.write_message(b""), Err(NoiseError::Failed));
}

#[test]
fn xx_initiator_rejects_before_message_three() {
    let mut i = NoiseHandshake::new(NoiseConfig::xx_initiator(kp(1))).unwrap();
    let mut r = NoiseHandshake::new(NoiseConfig::xx_responder(kp(2))).unwrap();
    let m1 = i.write_message(b"").unwrap();
    r.read_message(&m1).unwrap();
    let m2 = r.write_message(b"").unwrap();
    i.read_message(&m2).unwrap();
    assert_eq!(i.next_step(), Step::Verdict(kp(2).public_key()));
    assert!(i.handle_verdict(false).is_err());
    assert!(i.write_message(b"").is_err());
    assert!(i.into_handshake().is_err());
}

#[test]
fn xx_message_sizes_match_js() {
    let mut i = NoiseHandshake::new(NoiseConfig::xx_initiator(kp(1))).unwrap();
    let mut r = NoiseHandshake::new(NoiseConfig::xx_responder(kp(2))).unwrap();
    let m1 = i.write_message(b"").unwrap();
    r.read_message(&m1).unwrap();
    let m2 = r.write_message(b"").unwrap();
    i.read_message(&m2).unwrap();
    i.handle_verdict(true).unwrap();
    let m3 = i.write_message(b"").unwrap();
    assert_eq!((m1.len(), m2.len(), m3.len()), (32, 96, 64));
}

#[test]
fn tampered_and_truncated_messages_fail_cleanly() {
    for cut in [0usize, 10, 31, 32, 50, 95] {
        let mut i = NoiseHandshake::new(NoiseConfig::xx_initiator(kp(1))).unwrap();
        let mut r = NoiseHandshake::new(NoiseConfig::xx_responder(kp(2))).unwrap();
        let m1 = i.write_message(b"").unwrap();
        r.read_message(&m1).unwrap();
        let m2 = r.write_message(b"").unwrap();
        assert!(i.read_message(&m2[..cut]).is_err(), "cut {cut}");
        assert_eq!(i.next_step(), Step::Failed);
    }
    for flip in [0usize, 33, 70, 95] {
        let mut i = NoiseHandshake::new(NoiseConfig::xx_initiator(kp(1))).unwrap();
        let mut r = NoiseHandshake::new(NoiseConfig::xx_responder(kp(2))).unwrap();
        let m1 = i.write_message(b"").unwrap();
        r.read_message(&m1).unwrap();
        let mut m2 = r.write_message(b"").unwrap();
        m2[flip] ^= 1;
        assert!(i.read_message(&m2).is_err(), "flip {flip}");
    }
}

#[test]
fn api_misuse_is_an_error_not_a_panic() {
    let mut r = NoiseHandshake::new(NoiseConfig::xx_responder(kp(2))).unwrap();
    assert!(matches!(
        r.write_message(b""),
        Err(NoiseError::ApiMisuse(_))
    ));
    assert!(matches!(
        r.handle_verdict(true),
        Err(NoiseError::ApiMisuse(_))
    ));
    assert!(
        NoiseHandshake::new(NoiseConfig {
            initiator: true,
            ..NoiseConfig::ik_responder(kp(1), b"")
        })
        .is_err()
    );
    assert!(matches!(
        NoiseHandshake::new(NoiseConfig::xx_initiator(kp(1)))
            .unwrap()
            .into_handshake(),
        Err(NoiseError::ApiMisuse(_))
    ));
}
