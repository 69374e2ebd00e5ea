//! `ats-p2p status`: how a transfer went, read from its ATS task.

use anyhow::anyhow;
use ats_p2p_signal::offer::OFFER_TASK_TYPE;
use ats_p2p_signal::types::{Actor, ListQuery, SortBy, SortDir, Task, format_timestamp};
use ats_p2p_signal::{Client, ClientConfig, FileOffer};
use serde_json::{Value, json};

use crate::args::{CommonArgs, SignalArgs, StatusArgs, StatusTarget};
use crate::exit::{Exit, Failure};
use crate::output::{Output, human_size};

/// Offers fetched when looking a transfer id up: one transfer has one offer task, so a few
/// suffice even if other tasks mention the id in their text.
const SEARCH_PAGE: u32 = 20;

/// An ATS client for `args`.
pub(crate) fn client(args: &SignalArgs) -> Result<Client, Failure> {
    let mut config = ClientConfig::new(args.ats_url.clone(), Actor::agent(args.actor_id.clone()));
    if let Some(token) = &args.ats_token {
        config = config.with_token(token.clone());
    }
    Client::new(config)
        .map_err(|e| Failure::signal(e, format!("cannot use ATS at {}", args.ats_url)))
}

/// Finds the offer task of a transfer id on the channel (the newest, should there be several).
pub(crate) async fn find_transfer(
    client: &Client,
    channel: &str,
    transfer_id: &str,
) -> Result<Task, Failure> {
    let query = ListQuery {
        task_type: Some(OFFER_TASK_TYPE.to_owned()),
        channel: Some(channel.to_owned()),
        search: Some(transfer_id.to_owned()),
        limit: Some(SEARCH_PAGE),
        sort_by: Some(SortBy::UpdatedAt),
        sort_dir: Some(SortDir::Desc),
        ..ListQuery::default()
    };
    let list = client
        .list_tasks(&query)
        .await
        .map_err(|e| Failure::signal(e, "cannot list offers on ATS"))?;
    // Compared on the raw payload, so a malformed offer (say, a hostile file name) is found too.
    list.tasks
        .into_iter()
        .find(|t| {
            t.payload
                .get("transfer_id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(transfer_id))
        })
        .ok_or_else(|| {
            Failure::new(
                Exit::Error,
                anyhow!("no offer with transfer id {transfer_id} on channel {channel:?}"),
            )
        })
}

/// What `status` shows, as one JSON object (stable field names). Offer fields come from the
/// payload as stored, so a malformed offer still shows what it claimed (`offer_error` says what
/// is wrong with it).
pub(crate) fn task_summary(task: &Task) -> Value {
    let p = &task.payload;
    let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
    json!({
        "task_id": task.id,
        "transfer_id": text("transfer_id"),
        "state": task.status.as_str(),
        "channel": task.channel,
        "sender_id": text("sender_id").or_else(|| task.source_id.clone()),
        "recipient_id": text("recipient_id"),
        "assignee_id": task.assignee_id,
        "file_name": text("filename"),
        "file_size": p.get("size").and_then(Value::as_u64),
        "file_hash": text("sha256"),
        "sender_key": text("sender_key"),
        "created_at": format_timestamp(&task.created_at),
        "updated_at": format_timestamp(&task.updated_at),
        "reason": task.reason,
        "outputs": task.outputs,
        "title": task.title,
        "offer_error": FileOffer::from_task(task).err().map(|e| e.to_string()),
    })
}

/// The human rendering of [`task_summary`].
fn human_summary(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let mut lines = vec![format!(
        "task {} on {:?}: {}",
        v["task_id"],
        s("channel").unwrap_or_default(),
        s("state").unwrap_or_default()
    )];
    let mut row = |k: &str, val: Option<String>| {
        if let Some(val) = val {
            lines.push(format!("  {k:<10} {val}"));
        }
    };
    row("transfer", s("transfer_id"));
    row(
        "file",
        s("file_name").map(|n| match v["file_size"].as_u64() {
            Some(n_bytes) => format!("{n} ({}, {n_bytes} bytes)", human_size(n_bytes)),
            None => n,
        }),
    );
    row("sha256", s("file_hash"));
    row("sender", s("sender_id"));
    row("recipient", s("recipient_id"));
    row("claimed by", s("assignee_id"));
    row("created", s("created_at"));
    row("updated", s("updated_at"));
    row("reason", s("reason"));
    row("invalid", s("offer_error"));
    if let Some(outputs) = v["outputs"].as_array().filter(|o| !o.is_empty()) {
        for o in outputs {
            row("output", Some(o.to_string()));
        }
    }
    if s("transfer_id").is_none() {
        row("title", s("title"));
    }
    lines.join("\n")
}

/// Looks the task up and prints it.
pub(crate) async fn run(
    out: &Output,
    common: &CommonArgs,
    args: StatusArgs,
) -> Result<Exit, Failure> {
    let Some(target) = &args.target else {
        return partials(out, &args.save_dir);
    };
    let client = client(&common.signal)?;
    let id = match target {
        StatusTarget::Task(id) => *id,
        StatusTarget::Transfer(tid) => {
            find_transfer(&client, &common.signal.channel, tid)
                .await?
                .id
        }
    };
    let task = client
        .get_task(id)
        .await
        .map_err(|e| Failure::signal(e, format!("cannot read task {id} from ATS")))?;
    let summary = task_summary(&task);
    if out.is_json() {
        out.json_line(&summary);
    } else {
        out.result(&human_summary(&summary));
    }
    Ok(Exit::Success)
}

/// `status --partials`: the partial files kept in `save_dir` for resuming, one line (or JSON
/// object) each.
fn partials(out: &Output, save_dir: &std::path::Path) -> Result<Exit, Failure> {
    let found = ats_p2p::partial::list_partials(save_dir).map_err(|e| {
        Failure::new(
            Exit::Error,
            anyhow!("cannot read the save directory {}: {e}", save_dir.display()),
        )
    })?;
    if out.is_json() {
        for p in &found {
            out.json_line(&partial_summary(p));
        }
    } else if found.is_empty() {
        out.result(&format!("no partial files in {}", save_dir.display()));
    } else {
        for p in &found {
            out.result(&human_partial(p));
        }
    }
    Ok(Exit::Success)
}

/// One partial file as JSON (stable field names).
fn partial_summary(p: &ats_p2p::partial::PartialInfo) -> Value {
    json!({
        "path": p.path.display().to_string(),
        "file_name": p.record.name,
        "file_size": p.record.size,
        "file_hash": p.record.sha256,
        "sender_key": p.record.sender_key,
        "transfer_id": p.record.transfer_id,
        "bytes": p.len,
        "idle_s": p.age.as_secs(),
    })
}

/// One partial file for people.
fn human_partial(p: &ats_p2p::partial::PartialInfo) -> String {
    let percent = (p.len.min(p.record.size) as f64) * 100.0 / (p.record.size.max(1) as f64);
    format!(
        "{} {} of {} ({percent:.0} %) from {}…, idle {}, transfer {}",
        p.record.name,
        human_size(p.len),
        human_size(p.record.size),
        p.record.sender_key.get(..16).unwrap_or_default(),
        humantime::format_duration(std::time::Duration::from_secs(p.age.as_secs())),
        p.record.transfer_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_task_that_is_not_an_offer() {
        let task: Task = serde_json::from_value(json!({
            "id": 7, "title": "hello", "status": "failed", "type": "general",
            "channel": "x", "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:01.000Z", "reason": "nope"
        }))
        .unwrap();
        let v = task_summary(&task);
        assert_eq!(v["state"], "failed");
        assert_eq!(v["transfer_id"], Value::Null);
        let text = human_summary(&v);
        assert!(text.starts_with("task 7 on \"x\": failed"), "{text}");
        assert!(text.contains("reason     nope"), "{text}");
        assert!(text.contains("title      hello"), "{text}");
    }
}
