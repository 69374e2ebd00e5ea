//! The sender's lifecycle, input by input, without a hub.

use super::*;
use crate::events::FailureKind;
use crate::lifecycle::test_support::{accept, approval, path, signal_error, task};
use crate::policy::ClaimRejection;
use ats_p2p_signal::{EventOrigin, TransferId};

const TASK: TaskId = 7;
const TIMEOUT: Duration = Duration::from_secs(120);

fn offer() -> FileOffer {
    FileOffer {
        manifest: None,
        transfer_id: TransferId::random(),
        filename: "data.csv".into(),
        size: 10,
        sha256: [0xab; 32],
        sender_id: "agent-a".into(),
        recipient_id: "agent-b".into(),
        sender_key: [9; 32],
    }
}

fn event(kind: EventKind, task: Task, message: Option<Message>) -> TaskEvent {
    TaskEvent {
        kind,
        task,
        message,
        actor: None,
        event_id: None,
        origin: EventOrigin::Live,
    }
}

fn claimed_by(who: &str) -> TaskEvent {
    event(
        EventKind::Claimed,
        task(TASK, TaskStatus::InProgress, Some(who), None),
        None,
    )
}

fn closed(status: TaskStatus, reason: Option<&str>) -> TaskEvent {
    event(
        EventKind::Other(status.as_str().into()),
        task(TASK, status, Some("agent-b"), reason),
        None,
    )
}

fn drain(m: &mut SendLifecycle) -> Vec<SendAction> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn names(actions: &[SendAction]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            SendAction::Emit(e) => format!("emit:{}", e.name()),
            SendAction::CreateTask => "create".into(),
            SendAction::ListMessages(_) => "list".into(),
            SendAction::JudgeClaim(_) => "judge".into(),
            SendAction::Listen { .. } => "listen".into(),
            SendAction::StopListening { .. } => "stop_listening".into(),
            SendAction::Stream => "stream".into(),
            SendAction::RememberKey(_) => "remember".into(),
            SendAction::Cancel(_) => "cancel".into(),
            SendAction::Fail { .. } => "fail".into(),
        })
        .collect()
}

/// The `retrying` event among `actions`.
fn retrying(actions: &[SendAction]) -> &Event {
    actions
        .iter()
        .find_map(|a| match a {
            SendAction::Emit(e @ Event::Retrying { .. }) => Some(e),
            _ => None,
        })
        .expect("a retrying event")
}

/// A stream that broke: the receiver or the network gone.
fn broken() -> SendError {
    SendError::Stream(crate::transfer::StreamSendError::Io(std::io::Error::other(
        "reset",
    )))
}

/// Drives `m`, waiting for an answer on task `id`, through the claim, the accept and the
/// approval to the stream.
fn claim_to_stream(m: &mut SendLifecycle, id: TaskId, now: Instant) {
    let claimed = event(
        EventKind::Claimed,
        task(id, TaskStatus::InProgress, Some("agent-b"), None),
        None,
    );
    m.handle_task_event(&claimed, now);
    assert_eq!(names(&drain(m)), ["list"]);
    let t = m.offer().transfer_id;
    m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), now);
    assert_eq!(names(&drain(m)), ["judge"]);
    m.handle_judgement(Ok(approval(5)), now);
    assert_eq!(names(&drain(m)), ["listen"]);
    m.handle_connection(path(), now);
    assert_eq!(
        names(&drain(m)),
        ["stop_listening", "emit:transfer_start", "stream"]
    );
}

/// A machine that offers a broken transfer again up to `retries` times, streaming.
fn streaming_with_retries(retries: u32, now: Instant) -> SendLifecycle {
    let mut m = SendLifecycle::new(offer(), "/tmp/data.csv".into(), TIMEOUT).with_retries(retries);
    assert_eq!(names(&drain(&mut m)), ["create"]);
    m.handle_task_created(Ok(task(TASK, TaskStatus::Pending, None, None)), now);
    assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
    claim_to_stream(&mut m, TASK, now);
    m
}

/// Breaks `m`'s stream at `now` and lets the grace pass without the receiver's report:
/// the actions that follow.
fn break_silently(m: &mut SendLifecycle, now: Instant) -> Vec<SendAction> {
    m.handle_outcome(Err(broken()), now);
    assert!(drain(m).is_empty(), "the receiver may report first");
    m.handle_timeout(now + RECEIVER_REPORT_GRACE);
    drain(m)
}

fn failure(m: &mut SendLifecycle) -> SendError {
    match m.poll_outcome() {
        Some(Err(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A machine whose offer task exists and that waits for an answer.
fn offered(now: Instant) -> SendLifecycle {
    let mut m = SendLifecycle::new(offer(), "/tmp/data.csv".into(), TIMEOUT);
    assert_eq!(names(&drain(&mut m)), ["create"]);
    m.handle_task_created(Ok(task(TASK, TaskStatus::Pending, None, None)), now);
    assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
    assert_eq!(m.poll_timeout(), Some(now + TIMEOUT));
    m
}

/// A machine listening for the approved receiver.
fn listening(now: Instant) -> SendLifecycle {
    let mut m = offered(now);
    m.handle_task_event(&claimed_by("agent-b"), now);
    assert_eq!(names(&drain(&mut m)), ["list"]);
    let t = m.offer().transfer_id;
    m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), now);
    let judge = drain(&mut m);
    assert_eq!(names(&judge), ["judge"]);
    m.handle_judgement(Ok(approval(5)), now);
    let listen = drain(&mut m);
    assert!(matches!(listen[..], [SendAction::Listen { key, .. }] if key == approval(5).key));
    m
}

/// A machine streaming the file.
fn streaming(now: Instant) -> SendLifecycle {
    let mut m = listening(now);
    m.handle_connection(path(), now);
    assert_eq!(
        names(&drain(&mut m)),
        ["stop_listening", "emit:transfer_start", "stream"]
    );
    assert!(m.is_streaming());
    assert_eq!(m.poll_timeout(), None);
    m
}

/// A machine offering a directory, claimed by the recipient, that just read its accept
/// (with or without `"dirs":true`).
fn directory_offer_accepted(now: Instant, directories: bool) -> SendLifecycle {
    use ats_p2p_signal::{Manifest, ManifestFile};
    let manifest = Manifest {
        dirs: vec!["sub".into()],
        files: vec![ManifestFile {
            path: "sub/a".into(),
            size: 10,
            sha256: [0xab; 32],
        }],
    };
    let dir_offer = FileOffer {
        sha256: manifest.digest(),
        manifest: Some(manifest),
        ..offer()
    };
    let mut m = SendLifecycle::new(dir_offer, "/tmp/dir".into(), TIMEOUT);
    drain(&mut m);
    m.handle_task_created(Ok(task(TASK, TaskStatus::Pending, None, None)), now);
    drain(&mut m);
    m.handle_task_event(&claimed_by("agent-b"), now);
    assert_eq!(names(&drain(&mut m)), ["list"]);
    let mut message = accept(1, "agent-b", 5, m.offer().transfer_id);
    let content = AcceptMessage {
        transfer_id: m.offer().transfer_id,
        receiver_key: [5; 32],
        resume: false,
        directories,
    }
    .to_content();
    message.parts = vec![ats_p2p_signal::Part::text(content)];
    m.handle_messages(Ok(vec![message]), now);
    m
}

#[test]
fn a_directory_goes_only_to_a_receiver_that_says_it_takes_directories() {
    let now = Instant::now();
    let mut m = directory_offer_accepted(now, false);
    let actions = names(&drain(&mut m));
    assert!(
        !actions.iter().any(|a| a == "judge" || a == "listen"),
        "nothing more after an accept without directories: {actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "cancel" || a == "fail"),
        "the task ends visibly: {actions:?}"
    );
    assert!(matches!(failure(&mut m), SendError::NoDirectorySupport));

    let mut m = directory_offer_accepted(now, true);
    assert_eq!(names(&drain(&mut m)), ["judge"]);
    assert!(m.poll_outcome().is_none());
}

#[test]
fn accepted_and_verified() {
    let now = Instant::now();
    let mut m = streaming(now);
    m.handle_outcome(Ok(10), now + Duration::from_millis(1500));
    assert_eq!(
        names(&drain(&mut m)),
        ["remember", "emit:transfer_complete"]
    );
    let report = m.poll_outcome().unwrap().unwrap();
    assert_eq!(report.bytes, 10);
    assert_eq!(report.duration, Duration::from_millis(1500));
    assert_eq!(report.task_id, TASK);
    assert!(m.poll_timeout().is_none());
}

#[test]
fn the_claim_is_judged_with_the_first_accept_of_the_recipient() {
    let now = Instant::now();
    let mut m = offered(now);
    m.handle_task_event(&claimed_by("agent-b"), now);
    drain(&mut m);
    let t = m.offer().transfer_id;
    m.handle_messages(
        Ok(vec![
            accept(12, "agent-b", 2, t),
            accept(11, "agent-b", 1, t),
        ]),
        now,
    );
    let [SendAction::JudgeClaim(claim)] = &drain(&mut m)[..] else {
        panic!("no judgement asked");
    };
    assert_eq!(claim.receiver_key, hex::encode([1u8; 32]));
    assert_eq!(claim.claimer_id, "agent-b");
}

#[test]
fn a_claim_without_an_accept_yet_waits_for_the_accept_message() {
    let now = Instant::now();
    let mut m = offered(now);
    m.handle_task_event(&claimed_by("agent-b"), now);
    drain(&mut m);
    m.handle_messages(Ok(vec![]), now);
    assert!(drain(&mut m).is_empty());
    // A message that is no accept from the claimer does not cost a listing.
    let chat = Message {
        parts: vec![ats_p2p_signal::Part::text("hello")],
        ..accept(2, "agent-b", 1, m.offer().transfer_id)
    };
    let ev = event(
        EventKind::Message,
        task(TASK, TaskStatus::InProgress, Some("agent-b"), None),
        Some(chat),
    );
    m.handle_task_event(&ev, now);
    assert!(drain(&mut m).is_empty());
    let acc = accept(3, "agent-b", 1, m.offer().transfer_id);
    let ev = event(
        EventKind::Message,
        task(TASK, TaskStatus::InProgress, Some("agent-b"), None),
        Some(acc),
    );
    m.handle_task_event(&ev, now);
    assert_eq!(names(&drain(&mut m)), ["list"]);
}

#[test]
fn someone_else_claiming_is_judged_without_reading_messages_and_cancelled() {
    let now = Instant::now();
    let mut m = offered(now);
    m.handle_task_event(&claimed_by("mallory"), now);
    let [SendAction::JudgeClaim(claim)] = &drain(&mut m)[..] else {
        panic!("no judgement asked");
    };
    assert_eq!(claim.claimer_id, "mallory");
    assert_eq!(claim.receiver_key, "");
    m.handle_judgement(
        Err(ClaimRejection::WrongClaimer {
            claimer: "mallory".into(),
            recipient: "agent-b".into(),
        }),
        now,
    );
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Claim(_)));
}

#[test]
fn rejected_by_the_receiver() {
    let now = Instant::now();
    let mut m = offered(now);
    m.handle_task_event(&closed(TaskStatus::Rejected, Some("too large")), now);
    // The task already ended: nothing to cancel.
    assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
    match failure(&mut m) {
        SendError::Declined { reason } => assert_eq!(reason, "too large"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_task_already_closed_at_creation_fails_at_once() {
    let now = Instant::now();
    let mut m = SendLifecycle::new(offer(), "f".into(), TIMEOUT);
    drain(&mut m);
    m.handle_task_created(Ok(task(TASK, TaskStatus::Cancelled, None, None)), now);
    assert_eq!(
        names(&drain(&mut m)),
        ["emit:offer_sent", "emit:transfer_failed"]
    );
    assert!(matches!(failure(&mut m), SendError::TaskCancelled));
}

#[test]
fn creating_the_task_fails_without_events() {
    let mut m = SendLifecycle::new(offer(), "f".into(), TIMEOUT);
    drain(&mut m);
    m.handle_task_created(Err(signal_error()), Instant::now());
    assert!(drain(&mut m).is_empty());
    assert!(matches!(failure(&mut m), SendError::Signal { .. }));
}

#[test]
fn nobody_answers_within_the_timeout() {
    let now = Instant::now();
    let mut m = offered(now);
    m.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty(), "not due yet");
    m.handle_timeout(now + TIMEOUT);
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::NoAnswer(t) if t == TIMEOUT));
}

#[test]
fn accepted_but_never_connected() {
    let now = Instant::now();
    let later = now + Duration::from_secs(10);
    let mut m = offered(now);
    m.handle_task_event(&claimed_by("agent-b"), later);
    drain(&mut m);
    let t = m.offer().transfer_id;
    m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), later);
    drain(&mut m);
    m.handle_judgement(Ok(approval(5)), later);
    drain(&mut m);
    // The connection gets its own full timeout from the approval.
    assert_eq!(m.poll_timeout(), Some(later + TIMEOUT));
    m.handle_timeout(later + TIMEOUT);
    assert_eq!(
        names(&drain(&mut m)),
        ["stop_listening", "cancel", "emit:transfer_failed"]
    );
    assert!(matches!(failure(&mut m), SendError::NoConnection(_)));
}

#[test]
fn the_receiver_giving_up_while_we_listen_ends_the_send() {
    let now = Instant::now();
    let mut m = listening(now);
    m.handle_task_event(&closed(TaskStatus::Failed, Some("no path")), now);
    assert_eq!(
        names(&drain(&mut m)),
        ["stop_listening", "emit:transfer_failed"]
    );
    assert!(
        matches!(failure(&mut m), SendError::FailedByReceiver { reason } if reason == "no path")
    );
}

#[test]
fn a_stream_failure_leaves_the_receiver_a_grace_to_report() {
    let now = Instant::now();
    let mut m = streaming(now);
    let broken = SendError::Stream(crate::transfer::StreamSendError::Io(std::io::Error::other(
        "reset",
    )));
    m.handle_outcome(Err(broken), now);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), Some(now + RECEIVER_REPORT_GRACE));
    assert!(m.poll_outcome().is_none());
    // The receiver fails the task with its reason within the grace: no cancel.
    m.handle_task_event(&closed(TaskStatus::Failed, Some("hash mismatch")), now);
    assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Stream(_)));
}

#[test]
fn without_the_receivers_report_the_sender_fails_the_task_after_the_grace() {
    let now = Instant::now();
    let mut m = streaming(now);
    let refused = SendError::FileChanged {
        path: "f".into(),
        source: crate::transfer::StreamSendError::Io(std::io::Error::other("nack")),
    };
    m.handle_outcome(Err(refused), now);
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(now + RECEIVER_REPORT_GRACE);
    let actions = drain(&mut m);
    assert_eq!(names(&actions), ["fail", "emit:transfer_failed"]);
    let SendAction::Fail { reason, .. } = &actions[0] else {
        unreachable!()
    };
    assert!(
        reason.starts_with("the receiver did not report"),
        "{reason}"
    );
    assert!(matches!(failure(&mut m), SendError::FileChanged { .. }));
    // Late events change nothing.
    m.handle_task_event(&closed(TaskStatus::Failed, None), now);
    m.handle_timeout(now + TIMEOUT);
    assert!(drain(&mut m).is_empty());
    assert!(m.poll_outcome().is_none());
}

#[test]
fn a_report_seen_during_the_stream_spares_the_grace() {
    let now = Instant::now();
    let mut m = streaming(now);
    m.handle_task_event(&closed(TaskStatus::Failed, Some("disk full")), now);
    assert!(drain(&mut m).is_empty(), "the stream decides");
    let broken = SendError::Stream(crate::transfer::StreamSendError::Io(std::io::Error::other(
        "reset",
    )));
    m.handle_outcome(Err(broken), now);
    assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
}

#[test]
fn cancel_at_each_stage() {
    let now = Instant::now();
    // Before the task exists.
    let mut m = SendLifecycle::new(offer(), "f".into(), TIMEOUT);
    drain(&mut m);
    m.handle_cancel(now);
    assert!(drain(&mut m).is_empty());
    assert!(matches!(failure(&mut m), SendError::Cancelled));
    // Waiting for an answer.
    let mut m = offered(now);
    m.handle_cancel(now);
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Cancelled));
    // Listening.
    let mut m = listening(now);
    m.handle_cancel(now);
    assert_eq!(
        names(&drain(&mut m)),
        ["stop_listening", "cancel", "emit:transfer_failed"]
    );
    // Streaming.
    let mut m = streaming(now);
    m.handle_cancel(now);
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Cancelled));
    // In the grace: end the task now rather than wait.
    let mut m = streaming(now);
    let broken = SendError::Stream(crate::transfer::StreamSendError::Io(std::io::Error::other(
        "reset",
    )));
    m.handle_outcome(Err(broken), now);
    m.handle_cancel(now);
    assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Stream(_)));
    // Done: nothing more.
    m.handle_cancel(now);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn duplicate_and_late_inputs_are_ignored() {
    let now = Instant::now();
    let mut m = offered(now);
    // Events of other tasks.
    let other = event(
        EventKind::Claimed,
        task(TASK + 1, TaskStatus::Cancelled, Some("agent-b"), None),
        None,
    );
    m.handle_task_event(&other, now);
    assert!(drain(&mut m).is_empty());
    // A second claim event while the first is being read.
    m.handle_task_event(&claimed_by("agent-b"), now);
    m.handle_task_event(&claimed_by("agent-b"), now);
    assert_eq!(names(&drain(&mut m)), ["list"]);
    // A connection or outcome before the approval means nothing.
    m.handle_connection(path(), now);
    m.handle_outcome(Ok(10), now);
    assert!(drain(&mut m).is_empty());
    let t = m.offer().transfer_id;
    m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), now);
    drain(&mut m);
    m.handle_judgement(Ok(approval(5)), now);
    drain(&mut m);
    // A late judgement or claim event after the approval.
    m.handle_judgement(Ok(approval(6)), now);
    m.handle_task_event(&claimed_by("agent-b"), now);
    assert!(drain(&mut m).is_empty());
    m.handle_connection(path(), now);
    drain(&mut m);
    m.handle_connection(path(), now);
    assert!(
        drain(&mut m).is_empty(),
        "a second connection is no second stream"
    );
}

#[test]
fn a_broken_transfer_is_offered_again_and_resumed() {
    let now = Instant::now();
    let mut m = streaming_with_retries(5, now);
    let first = m.offer().clone();
    let later = now + Duration::from_secs(5);
    m.handle_progress(later);
    let actions = break_silently(&mut m, later);
    // The broken task is failed first (ATS shows how it ended), then a fresh offer.
    assert_eq!(names(&actions), ["fail", "emit:retrying", "create"]);
    let SendAction::Fail { task: failed, .. } = &actions[0] else {
        unreachable!()
    };
    assert_eq!(*failed, TASK);
    let Event::Retrying {
        transfer_id,
        attempt,
        max_attempts,
        kind,
        code,
        ..
    } = retrying(&actions)
    else {
        unreachable!()
    };
    assert_eq!(*transfer_id, first.transfer_id.to_string());
    assert_eq!((*attempt, *max_attempts), (2, 6));
    assert_eq!(
        (*kind, code.as_str()),
        (FailureKind::Network, "stream_failed")
    );
    // The same file from the same key, under a new transfer id (a new topic).
    let again = m.offer().clone();
    assert_ne!(again.transfer_id, first.transfer_id);
    assert_eq!(
        (again.sha256, again.size, again.sender_key, &again.filename),
        (first.sha256, first.size, first.sender_key, &first.filename)
    );
    assert!(m.poll_outcome().is_none(), "the send goes on");
    assert_eq!(m.task(), None);

    // The re-offer waits for a claim until the timeout from the receiver's last sign.
    let reoffered = later + RECEIVER_REPORT_GRACE;
    m.handle_task_created(
        Ok(task(TASK + 1, TaskStatus::Pending, None, None)),
        reoffered,
    );
    assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
    assert_eq!(m.poll_timeout(), Some(later + TIMEOUT));
    claim_to_stream(&mut m, TASK + 1, reoffered);
    m.handle_resumed(4);
    m.handle_outcome(Ok(10), reoffered + Duration::from_secs(1));
    assert_eq!(
        names(&drain(&mut m)),
        ["remember", "emit:transfer_complete"]
    );
    let report = m.poll_outcome().unwrap().unwrap();
    assert_eq!(report.transfer_id, again.transfer_id);
    assert_eq!(report.task_id, TASK + 1);
    assert_eq!(report.resumed_from, 4);
}

#[test]
fn a_report_of_the_receiver_in_the_grace_ends_the_task_and_the_file_is_offered_again() {
    let now = Instant::now();
    let mut m = streaming_with_retries(1, now);
    m.handle_outcome(Err(broken()), now);
    assert!(drain(&mut m).is_empty());
    m.handle_task_event(&closed(TaskStatus::Failed, Some("stream failed")), now);
    // The receiver ended the task itself: nothing to fail, the offer goes out again.
    assert_eq!(names(&drain(&mut m)), ["emit:retrying", "create"]);
}

#[test]
fn refusals_and_local_failures_are_not_offered_again() {
    use crate::transfer::StreamSendError;
    use ats_p2p_wire::TransferError;
    let refusals: Vec<fn() -> SendError> = vec![
        // NACK: wrong hash, policy, size.
        || {
            SendError::Stream(StreamSendError::Transfer(TransferError::Nack(
                "hash".into(),
            )))
        },
        // The receiver gave up on its side (disk full, stopped).
        || {
            SendError::Stream(StreamSendError::Transfer(TransferError::PeerError(
                "disk".into(),
            )))
        },
        // The file changed since it was offered.
        || SendError::FileChanged {
            path: "f".into(),
            source: StreamSendError::Transfer(TransferError::Nack("hash".into())),
        },
        // Our own file cannot be read.
        || {
            SendError::Stream(StreamSendError::Read {
                path: "f".into(),
                source: std::io::Error::other("eio"),
            })
        },
    ];
    for refusal in refusals {
        let now = Instant::now();
        let mut m = streaming_with_retries(5, now);
        let expected = refusal();
        m.handle_outcome(Err(refusal()), now);
        m.handle_timeout(now + RECEIVER_REPORT_GRACE);
        assert_eq!(
            names(&drain(&mut m)),
            ["fail", "emit:transfer_failed"],
            "{expected:?}"
        );
        assert_eq!(failure(&mut m).code(), expected.code());
    }
}

#[test]
fn a_rejection_or_a_cancel_is_not_offered_again() {
    let now = Instant::now();
    // The receiver declines the re-offer: that ends the send.
    let mut m = streaming_with_retries(5, now);
    assert_eq!(
        names(&break_silently(&mut m, now)),
        ["fail", "emit:retrying", "create"]
    );
    m.handle_task_created(Ok(task(TASK + 1, TaskStatus::Pending, None, None)), now);
    drain(&mut m);
    let declined = event(
        EventKind::Other("rejected".into()),
        task(TASK + 1, TaskStatus::Rejected, Some("agent-b"), Some("no")),
        None,
    );
    m.handle_task_event(&declined, now);
    assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Declined { .. }));

    // Cancelled while the stream runs.
    let mut m = streaming_with_retries(5, now);
    m.handle_cancel(now);
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Cancelled));

    // Cancelled in the grace after a break: the broken task is failed, nothing offered.
    let mut m = streaming_with_retries(5, now);
    m.handle_outcome(Err(broken()), now);
    m.handle_cancel(now);
    assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Stream(_)));

    // Cancelled while the re-offer waits for a claim.
    let mut m = streaming_with_retries(5, now);
    break_silently(&mut m, now);
    m.handle_task_created(Ok(task(TASK + 1, TaskStatus::Pending, None, None)), now);
    drain(&mut m);
    m.handle_cancel(now);
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Cancelled));
}

#[test]
fn a_receiver_silent_for_the_timeout_is_not_offered_again() {
    let now = Instant::now();
    let heard = now + Duration::from_secs(10);
    // Heard from at `heard`; the stream broke when the timeout from then was spent.
    let mut m = streaming_with_retries(5, now);
    m.handle_progress(heard);
    let actions = break_silently(&mut m, heard + TIMEOUT - RECEIVER_REPORT_GRACE);
    assert_eq!(names(&actions), ["fail", "emit:transfer_failed"]);
    assert_eq!(failure(&mut m).code(), "stream_failed");
    // Just inside it, the file is offered again, and the claim wait ends with it.
    let mut m = streaming_with_retries(5, now);
    m.handle_progress(heard);
    let broke = heard + TIMEOUT - RECEIVER_REPORT_GRACE - Duration::from_millis(1);
    assert_eq!(
        names(&break_silently(&mut m, broke)),
        ["fail", "emit:retrying", "create"]
    );
    m.handle_task_created(
        Ok(task(TASK + 1, TaskStatus::Pending, None, None)),
        broke + RECEIVER_REPORT_GRACE,
    );
    drain(&mut m);
    assert_eq!(m.poll_timeout(), Some(heard + TIMEOUT));
    // Nobody claims it in time: the re-offer is withdrawn and the send ends.
    m.handle_timeout(heard + TIMEOUT);
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::NoAnswer(_)));
}

#[test]
fn offers_again_at_most_the_retries_allowed() {
    let now = Instant::now();
    let mut m = streaming_with_retries(2, now);
    let mut attempts = Vec::new();
    for id in 1..=2 {
        let actions = break_silently(&mut m, now);
        assert_eq!(names(&actions), ["fail", "emit:retrying", "create"]);
        if let Event::Retrying { attempt, .. } = retrying(&actions) {
            attempts.push(*attempt);
        }
        m.handle_task_created(Ok(task(TASK + id, TaskStatus::Pending, None, None)), now);
        assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
        claim_to_stream(&mut m, TASK + id, now);
    }
    assert_eq!(attempts, [2, 3]);
    // The third break is the last.
    assert_eq!(
        names(&break_silently(&mut m, now)),
        ["fail", "emit:transfer_failed"]
    );
    assert_eq!(failure(&mut m).code(), "stream_failed");
    // Without retries (the machine's own default), a break ends the send at once.
    let mut m = streaming(now);
    assert_eq!(
        names(&break_silently(&mut m, now)),
        ["fail", "emit:transfer_failed"]
    );
}

#[test]
fn reading_the_accept_failing_ends_the_send() {
    let now = Instant::now();
    let mut m = offered(now);
    m.handle_task_event(&claimed_by("agent-b"), now);
    drain(&mut m);
    m.handle_messages(Err(signal_error()), now);
    assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
    assert!(matches!(failure(&mut m), SendError::Signal { .. }));
}
