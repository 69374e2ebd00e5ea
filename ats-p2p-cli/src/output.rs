//! What the user sees. stdout carries results only: human summary lines, or with `--json` exactly
//! one JSON object per line (NDJSON). Progress (an indicatif bar when stderr is a terminal, plain
//! lines otherwise), notes and warnings go to stderr.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use ats_p2p::events::{Direction, Event};
use indicatif::{BinaryBytes, HumanDuration, MultiProgress, ProgressBar, ProgressStyle};

use crate::args::CommonArgs;

/// Shortest gap between two plain progress lines of one transfer when stderr is not a terminal:
/// enough to follow a transfer in a log without flooding it.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(2);

/// Transfers shown at once; beyond this, extra transfers get no bar (a listener under a flood of
/// offers must not grow without bound).
const MAX_VIEWS: usize = 64;

/// Template of a transfer's progress bar: what, bar, bytes, rate, ETA.
const BAR_TEMPLATE: &str = "{msg} [{bar:30.cyan/blue}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// Writes `lines` and a newline to stdout in one write. A reader that went away (a closed pipe)
/// is not an error worth dying for: a server keeps serving, unlike `println!`, which panics.
pub(crate) fn say(lines: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(format!("{lines}\n").as_bytes())
        .and_then(|()| out.flush());
}

/// Writes one line to stderr, ignoring a closed stream.
fn say_err(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(format!("{line}\n").as_bytes());
}

/// `value` as one line of JSON with its `event` field (if any) first, as the node's events are:
/// a reader skimming NDJSON sees what each line is at once.
fn event_first(value: &serde_json::Value) -> String {
    let Some(obj) = value.as_object() else {
        return value.to_string();
    };
    let Some(event) = obj.get("event") else {
        return value.to_string();
    };
    let mut line = format!("{{\"event\":{event}");
    for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "event") {
        line.push(',');
        line.push_str(&serde_json::Value::String(k.clone()).to_string());
        line.push(':');
        line.push_str(&v.to_string());
    }
    line.push('}');
    line
}

/// `/ (N files)` after a directory's name; nothing for a file.
fn directory_note(file_count: Option<u64>) -> String {
    match file_count {
        Some(1) => "/ (1 file)".to_owned(),
        Some(n) => format!("/ ({n} files)"),
        None => String::new(),
    }
}

/// `n` bytes for people: `10.00 MiB`.
pub(crate) fn human_size(n: u64) -> String {
    BinaryBytes(n).to_string()
}

/// The rate of `bytes` moved in `ms` milliseconds, for people: `85.3 MiB/s`.
pub(crate) fn human_rate(bytes: u64, ms: u64) -> String {
    let per_s = u128::from(bytes)
        .saturating_mul(1000)
        .checked_div(u128::from(ms.max(1)))
        .unwrap_or(0);
    format!(
        "{}/s",
        BinaryBytes(u64::try_from(per_s).unwrap_or(u64::MAX))
    )
}

/// A duration in milliseconds, for people.
pub(crate) fn human_ms(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        HumanDuration(Duration::from_millis(ms)).to_string()
    }
}

/// The first 8 characters of an id, to tag progress lines.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Which side of which transfer a view shows: one process may hold both sides (the demo).
fn view_key(transfer_id: &str, direction: Direction) -> String {
    match direction {
        Direction::Send => format!("{} send", short(transfer_id)),
        Direction::Receive => format!("{} receive", short(transfer_id)),
    }
}

/// How one transfer is being shown.
#[derive(Debug)]
struct View {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

/// The output of one command run.
#[derive(Debug)]
pub(crate) struct Output {
    json: bool,
    quiet: bool,
    bars: Option<MultiProgress>,
    views: HashMap<String, View>,
}

impl Output {
    /// Output as the shared flags ask: JSON, quiet, and bars only when stderr is a terminal.
    pub(crate) fn new(common: &CommonArgs) -> Self {
        let bars = (!common.json && !common.quiet && std::io::stderr().is_terminal())
            .then(MultiProgress::new);
        Self {
            json: common.json,
            quiet: common.quiet,
            bars,
            views: HashMap::new(),
        }
    }

    /// True with `--json`.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Runs `f` with the bars hidden, so a line printed there does not tear them.
    fn suspended(&self, f: impl FnOnce()) {
        match &self.bars {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// A result line on stdout (human mode only; JSON mode prints objects instead).
    pub(crate) fn result(&self, line: &str) {
        if !self.json {
            self.suspended(|| say(line));
        }
    }

    /// One JSON object on stdout (JSON mode only), its `event` field first.
    pub(crate) fn json_line(&self, value: &serde_json::Value) {
        if self.json {
            say(&event_first(value));
        }
    }

    /// A note for people on stderr (not with `-q`).
    pub(crate) fn note(&self, line: &str) {
        if !self.quiet {
            self.suspended(|| say_err(line));
        }
    }

    /// A warning on stderr (even with `-q`).
    pub(crate) fn warn(&self, line: &str) {
        self.suspended(|| say_err(&format!("warning: {line}")));
    }

    /// Shows one node event: its JSON line, or a human rendering.
    pub(crate) fn event(&mut self, event: &Event) {
        self.event_from("", event);
    }

    /// [`event`](Self::event), with human lines prefixed by `who` (the demo's two nodes).
    pub(crate) fn event_from(&mut self, who: &str, event: &Event) {
        let tag = if who.is_empty() {
            String::new()
        } else {
            format!("{who}: ")
        };
        if self.json {
            match event.to_json_line() {
                Ok(line) => say(&line),
                Err(e) => tracing::error!(error = %e, "cannot serialise an event"),
            }
            return;
        }
        match event {
            Event::OfferSent {
                transfer_id,
                task_id,
                file_name,
                file_size,
                recipient_id,
                file_count,
                ..
            } => {
                // The hashing bar, if any, now waits for the recipient.
                let key = view_key(transfer_id, Direction::Send);
                if let Some(bar) = self.views.get(&key).and_then(|v| v.bar.as_ref()) {
                    bar.reset();
                    bar.set_message(format!("waiting for {recipient_id} to accept"));
                }
                self.result(&format!(
                    "{tag}offered {file_name}{} ({}) to {recipient_id}: transfer {transfer_id}, task {task_id}",
                    directory_note(*file_count),
                    human_size(*file_size)
                ));
            }
            Event::File {
                transfer_id,
                task_id,
                file_name,
                file_size,
                file_hash,
                sender_id,
                sender_key,
                file_count,
            } => {
                self.result(&format!(
                    "{tag}offer from {sender_id}: {file_name:?}{} ({}), transfer {transfer_id}, task {task_id}",
                    directory_note(*file_count),
                    human_size(*file_size)
                ));
                self.note(&format!(
                    "{tag}  sha256 {file_hash}, sender key {sender_key}"
                ));
            }
            Event::TransferStart {
                transfer_id,
                direction,
                peer_id,
                file_name,
                file_size,
                path,
            } => {
                let what = match direction {
                    Direction::Send => format!("sending {file_name} to {peer_id}"),
                    Direction::Receive => format!("receiving {file_name} from {peer_id}"),
                };
                if let Some(bar) = self.bar(&view_key(transfer_id, *direction), &what, *file_size) {
                    bar.reset();
                    bar.set_length(*file_size);
                    bar.set_message(what);
                } else {
                    self.note(&format!(
                        "{tag}connected ({path}): {what} ({})",
                        human_size(*file_size)
                    ));
                }
            }
            Event::Progress {
                transfer_id,
                direction,
                bytes,
                total,
            } => {
                // Before `transfer_start`, a sender's progress is the hashing of its file.
                let first = match direction {
                    Direction::Send => "hashing",
                    Direction::Receive => "receiving",
                };
                self.progress(&view_key(transfer_id, *direction), first, *bytes, *total);
            }
            Event::TransferComplete {
                transfer_id,
                direction,
                file_path,
                file_hash,
                bytes,
                duration_ms,
                path,
                resumed_from,
            } => {
                self.finish(&view_key(transfer_id, *direction));
                let verb = match direction {
                    Direction::Send => "sent",
                    Direction::Receive => "received",
                };
                let moved = bytes.saturating_sub(*resumed_from);
                let resumed = if *resumed_from > 0 {
                    format!(", resumed from {}", human_size(*resumed_from))
                } else {
                    String::new()
                };
                self.result(&format!(
                    "{tag}{verb} {file_path} ({}) in {} at {}, {}{resumed}, sha256 {file_hash}",
                    human_size(*bytes),
                    human_ms(*duration_ms),
                    human_rate(moved, *duration_ms),
                    path.path
                ));
            }
            Event::TransferFailed {
                transfer_id,
                direction,
                code,
                reason,
                ..
            } => {
                self.finish(&view_key(transfer_id, *direction));
                // The sender's failure is the command's error, printed once by `main`.
                if *direction == Direction::Receive {
                    self.result(&format!(
                        "{tag}transfer {transfer_id} failed ({code}): {reason}"
                    ));
                }
            }
            Event::Retrying {
                transfer_id,
                attempt,
                max_attempts,
                code,
                reason,
                ..
            } => {
                self.finish(&view_key(transfer_id, Direction::Send));
                self.note(&format!(
                    "{tag}transfer {transfer_id} broke ({code}): {reason}; offering it again \
                     (attempt {attempt} of {max_attempts})"
                ));
            }
            Event::Queued { transfer_id, limit } => {
                self.note(&format!(
                    "{tag}transfer {transfer_id} waits: {limit} transfers already running"
                ));
            }
            Event::Error {
                transfer_id,
                message,
            } => match transfer_id {
                Some(t) => self.warn(&format!("transfer {t}: {message}")),
                None => self.warn(message),
            },
            Event::Skipped { path, reason } => self.warn(&format!("not sending {path}: {reason}")),
            other => tracing::debug!(event = other.name(), "event not shown"),
        }
    }

    /// The bar of a transfer, created on first use (None without bars or beyond [`MAX_VIEWS`]).
    fn bar(&mut self, key: &str, first: &str, total: u64) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        if let Some(v) = self.views.get(key) {
            return v.bar.clone();
        }
        if self.views.len() >= MAX_VIEWS {
            return None;
        }
        let bar = bars.add(ProgressBar::new(total));
        if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("{key}: {first}"));
        self.views.insert(
            key.to_owned(),
            View {
                bar: Some(bar.clone()),
                last_line: None,
            },
        );
        Some(bar)
    }

    fn progress(&mut self, key: &str, first: &str, bytes: u64, total: u64) {
        if self.quiet {
            return;
        }
        if let Some(bar) = self.bar(key, first, total) {
            bar.set_length(total);
            bar.set_position(bytes);
            return;
        }
        // Plain lines, at most one per interval (and the last one).
        if self.views.len() >= MAX_VIEWS && !self.views.contains_key(key) {
            return;
        }
        let now = Instant::now();
        let view = self.views.entry(key.to_owned()).or_insert(View {
            bar: None,
            last_line: None,
        });
        let due = view
            .last_line
            .is_none_or(|t| now.duration_since(t) >= PROGRESS_LINE_INTERVAL);
        if due || bytes >= total {
            view.last_line = Some(now);
            let pct = u128::from(bytes)
                .saturating_mul(100)
                .checked_div(u128::from(total))
                .unwrap_or(100);
            say_err(&format!(
                "{key}: {pct}% ({} of {})",
                human_size(bytes),
                human_size(total)
            ));
        }
    }

    /// Removes a transfer's bar (if any).
    fn finish(&mut self, key: &str) {
        if let Some(view) = self.views.remove(key)
            && let Some(bar) = view.bar
        {
            bar.finish_and_clear();
            if let Some(bars) = &self.bars {
                bars.remove(&bar);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_field_first() {
        let v = serde_json::json!({"actor_id": "a", "event": "listening", "transfer_id": null});
        let line = event_first(&v);
        assert_eq!(
            line,
            r#"{"event":"listening","actor_id":"a","transfer_id":null}"#
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v);
        let plain = serde_json::json!({"b": 1, "a": "x\"y"});
        assert_eq!(event_first(&plain), plain.to_string());
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human_size(10 * 1024 * 1024), "10.00 MiB");
        assert_eq!(human_rate(10 * 1024 * 1024, 1000), "10.00 MiB/s");
        assert_eq!(human_rate(5, 0), "4.88 KiB/s");
        assert_eq!(human_ms(1234), "1.23 s");
        assert_eq!(short("0123456789abcdef"), "01234567");
        assert_eq!(short("ab"), "ab");
    }
}
