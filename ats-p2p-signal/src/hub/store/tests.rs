//! Store tests on an in-memory database.

use std::collections::HashMap;

use super::*;

fn db() -> Connection {
    let c = Connection::open_in_memory().unwrap();
    init(&c, Utc::now()).unwrap();
    c
}

fn actor(id: &str) -> HubActor {
    HubActor {
        actor_type: Some("agent".into()),
        id: Some(id.into()),
        name: Some(id.to_uppercase()),
    }
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn create_defaults_and_validation() {
    let c = db();
    let now = Utc::now();
    let ch = create_task(
        &c,
        &Scope::Default,
        &actor("a"),
        &body(json!({"title": "t"})),
        now,
    )
    .unwrap();
    let t = ch.task;
    assert_eq!(
        (
            t.status,
            t.priority,
            t.task_type.as_str(),
            t.channel.as_str()
        ),
        (TaskStatus::Pending, 5, "task", "default")
    );
    assert_eq!(t.payload, json!({}));
    assert_eq!(t.source_id.as_deref(), Some("a"));
    assert_eq!(ch.events.len(), 1);
    assert!(ch.events[0].frame().contains("\"task.created\""));
    for b in [
        json!({}),
        json!({"title": ""}),
        json!({"title": "x", "priority": 11}),
        json!({"title": "x", "priority": 0}),
        json!({"title": 5}),
    ] {
        assert!(matches!(
            create_task(&c, &Scope::Default, &actor("a"), &body(b), now),
            Err(StoreError::BadRequest(_))
        ));
    }
    let scope = Scope::Named {
        org: "nope".into(),
        project: "x".into(),
    };
    assert!(matches!(
        create_task(&c, &scope, &actor("a"), &body(json!({"title": "t"})), now),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn claim_rules_and_lease_expiry() {
    let c = db();
    let now = Utc::now();
    let s = Scope::Default;
    let id = create_task(&c, &s, &actor("a"), &body(json!({"title": "t"})), now)
        .unwrap()
        .task
        .id;
    let t = claim(
        &c,
        &s,
        id,
        &actor("b"),
        &body(json!({"lease_duration": 1000})),
        now,
    )
    .unwrap()
    .task;
    assert_eq!(t.status, TaskStatus::InProgress);
    assert_eq!(t.assignee_id.as_deref(), Some("b"));
    // someone else: conflict; the holder renews
    let e = claim(&c, &s, id, &actor("c"), &Map::new(), now).unwrap_err();
    assert!(matches!(e, StoreError::Conflict(m) if m.contains("in_progress")));
    let later = now + chrono::Duration::milliseconds(500);
    let t = claim(
        &c,
        &s,
        id,
        &actor("b"),
        &body(json!({"lease_duration": 1000})),
        later,
    )
    .unwrap()
    .task;
    assert_eq!(
        t.lease_expires,
        Some(later + chrono::Duration::milliseconds(1000))
    );
    assert!(expire_leases(&c, later).unwrap().is_empty());
    let gone = later + chrono::Duration::milliseconds(1001);
    let ch = expire_leases(&c, gone).unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].task.status, TaskStatus::Pending);
    assert!(ch[0].task.assignee_id.is_none() && ch[0].task.lease_expires.is_none());
    assert!(ch[0].events[0].frame().contains("task.lease_expired"));
    assert!(matches!(
        claim(&c, &s, id, &HubActor::default(), &Map::new(), now),
        Err(StoreError::BadRequest(_))
    ));
    assert!(matches!(
        claim(
            &c,
            &s,
            id,
            &actor("b"),
            &body(json!({"lease_duration": "x"})),
            now
        ),
        Err(StoreError::BadRequest(_))
    ));
    assert!(matches!(
        claim(&c, &s, 999, &actor("b"), &Map::new(), now),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn transitions_enforced() {
    let c = db();
    let now = Utc::now();
    let s = Scope::Default;
    let a = actor("a");
    let id = create_task(&c, &s, &a, &body(json!({"title": "t"})), now)
        .unwrap()
        .task
        .id;
    let e = transition(&c, &s, id, Action::Complete, &a, &Map::new(), now).unwrap_err();
    assert!(matches!(e, StoreError::Conflict(m) if m.contains("pending")));
    assert!(transition(&c, &s, id, Action::Reopen, &a, &Map::new(), now).is_err());
    claim(&c, &s, id, &a, &Map::new(), now).unwrap();
    assert!(transition(&c, &s, id, Action::Reject, &a, &Map::new(), now).is_err());
    let out = json!([{"sha256": "00"}, 3]);
    let t = transition(
        &c,
        &s,
        id,
        Action::Complete,
        &a,
        &body(json!({"outputs": out})),
        now,
    )
    .unwrap()
    .task;
    assert_eq!(Value::Array(t.outputs.clone()), out);
    assert_eq!(stats(&c, now).unwrap().completed_count, 1);
    let t = transition(
        &c,
        &s,
        id,
        Action::Reopen,
        &a,
        &body(json!({"reason": "again"})),
        now,
    )
    .unwrap()
    .task;
    assert_eq!(
        (t.status, t.reason.as_deref()),
        (TaskStatus::Pending, Some("again"))
    );
    let t = transition(&c, &s, id, Action::Cancel, &a, &Map::new(), now)
        .unwrap()
        .task;
    assert_eq!(t.status, TaskStatus::Cancelled);
    let e = update_task(&c, &s, id, &a, &body(json!({"status": "in_progress"})), now).unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)));
}

#[test]
fn list_filters_and_search() {
    let c = db();
    let now = Utc::now();
    let s = Scope::Default;
    for i in 0..5 {
        let b = json!({"title": format!("offer {i}"), "channel": if i % 2 == 0 {"even"} else {"odd"},
            "priority": i + 1, "description": if i == 3 {"has 50%_off"} else {"plain"}});
        create_task(
            &c,
            &s,
            &actor("a"),
            &body(b),
            now + chrono::Duration::seconds(i),
        )
        .unwrap();
    }
    let q = |pairs: &[(&str, &str)]| {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        list_tasks(&c, &s, &m)
    };
    let (all, n) = q(&[]).unwrap();
    assert_eq!(n, 5);
    assert_eq!(all[0].title, "offer 4", "newest first");
    assert_eq!(q(&[("channel", "even")]).unwrap().1, 3);
    assert_eq!(
        q(&[("min_priority", "2"), ("max_priority", "3")])
            .unwrap()
            .1,
        2
    );
    assert_eq!(q(&[("search", "50%_")]).unwrap().1, 1);
    assert_eq!(q(&[("search", "OFFER 2")]).unwrap().1, 1);
    let (page, n) = q(&[
        ("limit", "2"),
        ("offset", "1"),
        ("sort_by", "priority"),
        ("sort_dir", "asc"),
    ])
    .unwrap();
    assert_eq!((n, page.len(), page[0].priority), (5, 2, 2));
    let after = format_timestamp(&(now + chrono::Duration::seconds(2)));
    assert_eq!(q(&[("created_after", &after)]).unwrap().1, 2);
    assert_eq!(
        q(&[("updated_after", &after), ("unknown", "x")]).unwrap().1,
        2
    );
    assert!(q(&[("status", "bogus")]).is_err());
    assert!(q(&[("limit", "x")]).is_err());
    assert!(q(&[("updated_after", "yesterday")]).is_err());
    assert!(q(&[("sort_by", "id; DROP TABLE tasks")]).is_err());
}

#[test]
fn orgs_and_projects() {
    let c = db();
    let now = Utc::now();
    assert_eq!(list_orgs(&c).unwrap().len(), 1);
    create_org(&c, &body(json!({"slug": "acme", "name": "Acme"})), now).unwrap();
    assert!(matches!(
        create_org(&c, &body(json!({"slug": "acme"})), now),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        create_org(&c, &body(json!({"slug": "a/b"})), now),
        Err(StoreError::BadRequest(_))
    ));
    create_project(
        &c,
        "acme",
        &body(json!({"slug": "web", "name": "Web"})),
        now,
    )
    .unwrap();
    let scope = Scope::Named {
        org: "acme".into(),
        project: "web".into(),
    };
    let t = create_task(&c, &scope, &actor("a"), &body(json!({"title": "t"})), now)
        .unwrap()
        .task;
    // not visible unscoped
    assert!(matches!(
        get_task(&c, &Scope::Default, t.id),
        Err(StoreError::NotFound(_))
    ));
    let p = list_projects(&c, "acme").unwrap();
    assert_eq!(p[0]["pending_count"], 1);
    let p = update_project(&c, "acme", "web", &body(json!({"slug": "site"})), now).unwrap();
    assert_eq!(p["slug"], "site");
    let o = update_org(&c, "acme", &body(json!({"slug": "acme2"})), now).unwrap();
    assert_eq!(o["slug"], "acme2");
    assert!(get_project(&c, "acme2", "site").is_ok());
}

#[test]
fn messages_roundtrip() {
    let c = db();
    let now = Utc::now();
    let s = Scope::Default;
    let id = create_task(&c, &s, &actor("a"), &body(json!({"title": "t"})), now)
        .unwrap()
        .task
        .id;
    let (m, ev) = post_message(
        &c,
        &s,
        id,
        &actor("b"),
        &body(json!({"parts": [{"content": "hi"}]})),
        now,
    )
    .unwrap();
    assert_eq!(m.parts[0].part_type, "text");
    assert!(ev[0].frame().contains("task.message"));
    assert_eq!(
        list_messages(&c, &s, id, &HashMap::new()).unwrap(),
        (vec![m], 1)
    );
    for b in [
        json!({}),
        json!({"parts": []}),
        json!({"parts": ["x"]}),
        json!({"parts": [{"content": 5}]}),
    ] {
        assert!(matches!(
            post_message(&c, &s, id, &actor("b"), &body(b), now),
            Err(StoreError::BadRequest(_))
        ));
    }
    let (task, count) = get_task(&c, &s, id).unwrap();
    assert_eq!((task.messages.unwrap().len(), count), (1, 1));
}

#[test]
fn messages_are_bounded_per_task_and_in_size() {
    let c = db();
    let now = Utc::now();
    let s = Scope::Default;
    let id = create_task(&c, &s, &actor("a"), &body(json!({"title": "t"})), now)
        .unwrap()
        .task
        .id;
    let big = "x".repeat(MAX_MESSAGE_BYTES);
    assert!(matches!(
        post_message(
            &c,
            &s,
            id,
            &actor("b"),
            &body(json!({"parts": [{"content": big}]})),
            now
        ),
        Err(StoreError::TooLarge(_))
    ));
    for i in 0..MAX_MESSAGES_PER_TASK {
        post_message(
            &c,
            &s,
            id,
            &actor("b"),
            &body(json!({"parts": [{"content": format!("m{i}")}]})),
            now,
        )
        .unwrap();
    }
    assert!(matches!(
        post_message(
            &c,
            &s,
            id,
            &actor("b"),
            &body(json!({"parts": [{"content": "one more"}]})),
            now
        ),
        Err(StoreError::Conflict(_))
    ));
    // The task shows the newest messages, oldest first, and the total.
    let (task, count) = get_task(&c, &s, id).unwrap();
    let shown = task.messages.unwrap();
    assert_eq!(count, u64::try_from(MAX_MESSAGES_PER_TASK).unwrap());
    assert_eq!(shown.len(), usize::try_from(TASK_MESSAGES_SHOWN).unwrap());
    assert_eq!(
        shown.last().unwrap().parts[0].content.as_deref(),
        Some("m999")
    );
    assert_eq!(shown[0].parts[0].content.as_deref(), Some("m900"));
    // The list pages.
    let q: HashMap<String, String> = [("limit", "10"), ("offset", "995")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (page, total) = list_messages(&c, &s, id, &q).unwrap();
    assert_eq!((page.len(), total), (5, 1000));
}

#[test]
fn prune_deletes_only_finished_tasks_past_retention() {
    let c = db();
    let s = Scope::Default;
    let old = Utc::now() - chrono::Duration::days(30);
    let mk = |title: &str| {
        create_task(&c, &s, &actor("a"), &body(json!({"title": title})), old)
            .unwrap()
            .task
            .id
    };
    let (done, pending, recent) = (mk("done"), mk("pending"), mk("recent"));
    post_message(
        &c,
        &s,
        done,
        &actor("b"),
        &body(json!({"parts": [{"content": "x"}]})),
        old,
    )
    .unwrap();
    claim(&c, &s, done, &actor("b"), &Map::new(), old).unwrap();
    transition(
        &c,
        &s,
        done,
        Action::Complete,
        &actor("b"),
        &Map::new(),
        old,
    )
    .unwrap();
    transition(
        &c,
        &s,
        recent,
        Action::Reject,
        &actor("b"),
        &Map::new(),
        Utc::now(),
    )
    .unwrap();
    let n = prune_finished(&c, Utc::now() - chrono::Duration::days(7)).unwrap();
    assert_eq!(n, 1);
    assert!(matches!(
        get_task(&c, &s, done),
        Err(StoreError::NotFound(_))
    ));
    assert!(
        get_task(&c, &s, pending).is_ok(),
        "unfinished tasks stay, however old"
    );
    assert!(
        get_task(&c, &s, recent).is_ok(),
        "recently finished tasks stay"
    );
    let msgs: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE task_id = ?1",
            [done],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(msgs, 0);
}

#[test]
fn a_new_database_gets_every_migration() {
    let c = db();
    assert_eq!(migrations::version(&c).unwrap(), migrations::latest());
    // Opening again runs nothing and changes nothing.
    init(&c, Utc::now()).unwrap();
    assert_eq!(migrations::version(&c).unwrap(), migrations::latest());
}

#[test]
fn a_database_from_before_versioning_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        // What the hub wrote before migrations: the schema, no user_version.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(migrations::SQLITE[0]).unwrap();
        init_default_project_for_test(&c);
        create_task(
            &c,
            &Scope::Default,
            &actor("a"),
            &body(json!({"title": "kept"})),
            Utc::now(),
        )
        .unwrap();
        c.pragma_update(None, "user_version", 0).unwrap();
    }
    let c = open(&path).unwrap();
    assert_eq!(migrations::version(&c).unwrap(), migrations::latest());
    let (tasks, count) = list_tasks(&c, &Scope::Default, &HashMap::new()).unwrap();
    assert_eq!((count, tasks[0].title.as_str()), (1, "kept"));
}

#[test]
fn a_database_from_a_newer_hub_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sqlite");
    {
        let c = open(&path).unwrap();
        c.pragma_update(None, "user_version", migrations::latest() + 1)
            .unwrap();
    }
    match open(&path) {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!(
                (found, known),
                (migrations::latest() + 1, migrations::latest())
            );
        }
        other => panic!(
            "opened a database from a newer hub: {:?}",
            other.map(|_| ())
        ),
    }
}

/// The `default/main` project, as `init` creates it.
fn init_default_project_for_test(c: &Connection) {
    let ts = format_timestamp(&Utc::now());
    c.execute(
        "INSERT INTO orgs (slug, name, created_at, updated_at) VALUES ('default', 'Default', ?1, ?1)",
        [&ts],
    )
    .unwrap();
    c.execute(
        "INSERT INTO projects (org_id, slug, name, created_at, updated_at)
         VALUES (1, 'main', 'Main', ?1, ?1)",
        [&ts],
    )
    .unwrap();
}
