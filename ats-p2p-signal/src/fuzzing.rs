//! Fuzz target bodies, shared by `fuzz/` and by this crate's property tests
//! (`tests/fuzz_targets.rs`), so that CI runs the same checks on the stable toolchain.
//!
//! Each function takes arbitrary bytes, drives the functions production runs on untrusted
//! input, and panics only if an invariant is broken. Not part of the API.

use std::str::FromStr as _;

use serde_json::Value;

use crate::offer::{AcceptMessage, FileOffer, TransferId, validate_filename};
use crate::types::{Message, Task};

/// Parses the input as the node does with what it reads from the hub, chosen by the first byte:
/// a `file_offer` payload ([`FileOffer::from_payload`]), a task as the hub sends it
/// ([`FileOffer::from_task`]), an accept message's text ([`AcceptMessage::parse`]), a message
/// as the hub sends it ([`AcceptMessage::from_message`]), or a transfer id. Whatever parses
/// must re-encode to something that parses to the same value, and a parsed file name is always
/// one safe path component.
pub fn offer_accept(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(payload) = serde_json::from_slice::<Value>(rest)
                && let Ok(offer) = FileOffer::from_payload(&payload)
            {
                check_offer(&offer);
            }
        }
        1 => {
            if let Ok(task) = serde_json::from_slice::<Task>(rest)
                && let Ok(offer) = FileOffer::from_task(&task)
            {
                check_offer(&offer);
            }
        }
        2 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(accept) = AcceptMessage::parse(&text) {
                assert_eq!(AcceptMessage::parse(&accept.to_content()), Ok(accept));
            }
        }
        3 => {
            if let Ok(message) = serde_json::from_slice::<Message>(rest)
                && let Ok(accept) = AcceptMessage::from_message(&message)
            {
                assert_eq!(AcceptMessage::parse(&accept.to_content()), Ok(accept));
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(id) = TransferId::from_str(&text) {
                assert_eq!(TransferId::from_str(&id.to_string()), Ok(id));
            }
        }
    }
}

fn check_offer(offer: &FileOffer) {
    assert!(
        validate_filename(&offer.filename).is_ok(),
        "unsafe file name accepted: {:?}",
        offer.filename
    );
    assert!(!offer.filename.contains(['/', '\\']));
    assert_eq!(
        FileOffer::from_payload(&offer.to_payload()).as_ref(),
        Ok(offer)
    );
    let task = offer.to_new_task(None);
    assert!(task.title.contains(&offer.transfer_id.to_string()));
}

#[cfg(feature = "hub")]
pub use hub::hub_body;

#[cfg(feature = "hub")]
mod hub {
    use std::cell::RefCell;

    use chrono::{DateTime, TimeZone as _, Utc};
    use rusqlite::Connection;
    use serde_json::{Map, Value, json};

    use crate::hub::store::{self, Action, HubActor, Scope, StoreError};
    use crate::types::Task;

    /// The fixed clock of every run (the store takes time as an argument).
    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_767_225_600, 0)
            .single()
            .unwrap_or_default()
    }

    fn actor(id: &str) -> HubActor {
        HubActor {
            actor_type: Some("agent".into()),
            id: Some(id.into()),
            name: None,
        }
    }

    /// An in-memory hub database holding task 1 (pending) and task 2 (in progress, claimed by
    /// `agent-a`), built once per thread; every run works inside a savepoint that is rolled
    /// back, so runs do not affect each other.
    fn with_db<R>(f: impl FnOnce(&Connection) -> R) -> R {
        thread_local! {
            static DB: RefCell<Option<Connection>> = const { RefCell::new(None) };
        }
        DB.with(|cell| {
            let mut slot = cell.borrow_mut();
            let conn = slot.get_or_insert_with(|| {
                let conn = match Connection::open_in_memory() {
                    Ok(c) => c,
                    Err(e) => panic!("in-memory database: {e}"),
                };
                let setup = || -> Result<(), StoreError> {
                    store::init(&conn, now())?;
                    for title in ["one", "two"] {
                        let body = store::parse_body(
                            json!({"title": title, "type": "file_offer"})
                                .to_string()
                                .as_bytes(),
                        )?;
                        store::create_task(&conn, &Scope::Default, &actor("s"), &body, now())?;
                    }
                    store::claim(
                        &conn,
                        &Scope::Default,
                        2,
                        &actor("agent-a"),
                        &Map::new(),
                        now(),
                    )?;
                    Ok(())
                };
                if let Err(e) = setup() {
                    panic!("hub fixture: {e}");
                }
                conn
            });
            if let Err(e) = conn.execute_batch("SAVEPOINT fuzz") {
                panic!("savepoint: {e}");
            }
            let out = f(conn);
            if let Err(e) = conn.execute_batch("ROLLBACK TO fuzz; RELEASE fuzz") {
                panic!("rollback: {e}");
            }
            out
        })
    }

    /// A peer's input may be refused as 400, 404, 409 or 413, never fail the database.
    fn check_refusal(err: &StoreError) {
        assert!(
            matches!(
                err,
                StoreError::BadRequest(_)
                    | StoreError::NotFound(_)
                    | StoreError::Conflict(_)
                    | StoreError::TooLarge(_)
            ),
            "request body made the store fail: {err:?}"
        );
    }

    /// What the hub sends back must be readable by the client.
    fn check_task(task: &Task) {
        let json = json!(task);
        if let Err(e) = serde_json::from_value::<Task>(json) {
            panic!("the client cannot read the task the hub returns: {e}");
        }
    }

    /// A request body through the functions the hub's handlers call: [`store::parse_body`], then
    /// the operation the first byte picks (create, update, claim, each transition, post a
    /// message, create/update an organization or project) on task 1, 2 or a missing one, as one
    /// of a few actors. Refusals must be client errors (4xx), never database errors; changed
    /// tasks must serialize into what the client parses.
    pub fn hub_body(data: &[u8]) {
        let Some((&op, rest)) = data.split_first() else {
            return;
        };
        let Some((&who, body)) = rest.split_first() else {
            return;
        };
        let body = match store::parse_body(body) {
            Ok(b) => b,
            Err(e) => {
                assert!(matches!(e, StoreError::BadRequest(_)), "parse_body: {e:?}");
                return;
            }
        };
        let id = i64::from(who % 3) + 1;
        let actor = match (who >> 2) % 3 {
            0 => HubActor::default(),
            1 => actor("agent-a"),
            _ => actor("agent-b"),
        };
        let scope = if who & 0x80 == 0 {
            Scope::Default
        } else {
            Scope::Named {
                org: "default".into(),
                project: "main".into(),
            }
        };
        with_db(|c| {
            let t = now();
            let changed = match op % 13 {
                0 => store::create_task(c, &scope, &actor, &body, t),
                1 => store::update_task(c, &scope, id, &actor, &body, t),
                2 => store::claim(c, &scope, id, &actor, &body, t),
                3 => store::transition(c, &scope, id, Action::Complete, &actor, &body, t),
                4 => store::transition(c, &scope, id, Action::Fail, &actor, &body, t),
                5 => store::transition(c, &scope, id, Action::Reject, &actor, &body, t),
                6 => store::transition(c, &scope, id, Action::Cancel, &actor, &body, t),
                7 => store::transition(c, &scope, id, Action::Reopen, &actor, &body, t),
                op => {
                    let result: Result<Value, StoreError> = match op {
                        8 => store::post_message(c, &scope, id, &actor, &body, t)
                            .map(|(m, _)| json!(m)),
                        9 => store::create_org(c, &body, t),
                        10 => store::update_org(c, "default", &body, t),
                        11 => store::create_project(c, "default", &body, t),
                        _ => store::update_project(c, "default", "main", &body, t),
                    };
                    if let Err(e) = result {
                        check_refusal(&e);
                    }
                    return;
                }
            };
            match changed {
                Ok(change) => check_task(&change.task),
                Err(e) => check_refusal(&e),
            }
        });
    }
}
