//! The rows one run of a tool gives, the tables the bench prints, and the summary against the
//! goals of issue #17.

use benches::{Usage, mib};

/// The tools the matrix compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Ours,
    Js,
    Sendme,
}

impl Tool {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Ours => "ats-p2p",
            Self::Js => "JS hyperswarm",
            Self::Sendme => "sendme",
        }
    }
}

/// One verified transfer of one tool.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// 1, 2, ... (set by the caller).
    pub(crate) run: usize,
    pub(crate) tool: Tool,
    pub(crate) size: u64,
    /// Connection → end, seconds: ours and JS receiver's connection → sender's ACK; sendme
    /// receiver's "getting collection" (connected, sizes fetched) → "exporting to" (every byte
    /// received and BLAKE3-verified, before its copy out of the store).
    pub(crate) conn_s: f64,
    /// The whole command, spawn → exit, ms: ours `send`; sendme `receive`; JS the sending peer.
    pub(crate) whole_ms: f64,
    /// sendme only: `sendme send` spawn → ticket printed, ms.
    pub(crate) ticket_ms: Option<f64>,
    pub(crate) send: Usage,
    pub(crate) recv: Usage,
    /// Ours only: the `send` command's steps.
    pub(crate) latency: Option<Latency>,
    /// Something about this run the numbers alone do not say.
    pub(crate) note: Option<String>,
}

impl Row {
    pub(crate) fn conn_mbps(&self) -> f64 {
        self.size as f64 / 1e6 / self.conn_s.max(1e-9)
    }

    pub(crate) fn whole_mbps(&self) -> f64 {
        self.size as f64 / 1e6 / (self.whole_ms / 1e3).max(1e-9)
    }
}

/// The whole `send` command, spawn → exit, and its steps, in milliseconds (ours).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) total: f64,
    pub(crate) spawn_offer: f64,
    pub(crate) offer_file: f64,
    pub(crate) file_start: f64,
    pub(crate) start_ack: f64,
    pub(crate) ack_exit: f64,
}

impl Latency {
    const HEADERS: [&'static str; 6] = [
        "send total",
        "spawn→offer",
        "offer→file",
        "file→start",
        "start→ACK",
        "ACK→exit",
    ];

    fn values(&self) -> [f64; 6] {
        [
            self.total,
            self.spawn_offer,
            self.offer_file,
            self.file_start,
            self.start_ack,
            self.ack_exit,
        ]
    }
}

/// Median of a non-empty list (NaN when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::NAN, f64::max)
}

/// A human size: 1 KiB, 64 MiB, 1 GiB.
pub(crate) fn size_label(size: u64) -> String {
    for (unit, name) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if size >= unit && size.is_multiple_of(unit) {
            return format!("{} {name}", size / unit);
        }
    }
    format!("{size} B")
}

/// Every run of every tool at one size, then ours' `send` steps.
pub(crate) fn print_size(mode: &str, size: u64, rows: &[Row], notes: &[String]) {
    println!(
        "\n## {}, {mode}, every received file SHA-256-checked\n",
        size_label(size)
    );
    println!(
        "| tool | run | conn MB/s | conn s | whole ms | whole MB/s | ticket ms | send CPU s | recv CPU s | send RSS MiB | recv RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut here: Vec<&Row> = rows.iter().filter(|r| r.size == size).collect();
    here.sort_by_key(|r| (r.tool as u8, r.run));
    for r in here {
        println!(
            "| {} | {} | {} | {:.3} | {:.1} | {} | {} | {:.2} | {:.2} | {} | {} |",
            r.tool.label(),
            r.run,
            rate(r.conn_mbps()),
            r.conn_s,
            r.whole_ms,
            rate(r.whole_mbps()),
            r.ticket_ms
                .map_or_else(|| "–".into(), |t| format!("{t:.0}")),
            r.send.cpu_s,
            r.recv.cpu_s,
            mib(r.send.max_rss),
            mib(r.recv.max_rss),
        );
    }
    let run_notes = rows.iter().filter(|r| r.size == size).filter_map(|r| {
        let note = r.note.as_ref()?;
        Some(format!("{} run {}: {note}", r.tool.label(), r.run))
    });
    for n in notes.iter().cloned().chain(run_notes) {
        println!("\n{n}");
    }
    print_latency(size, rows);
}

/// MB/s with the digits that matter (1 KiB moves at well under 1 MB/s).
fn rate(mbps: f64) -> String {
    if mbps < 10.0 {
        format!("{mbps:.2}")
    } else {
        format!("{mbps:.0}")
    }
}

/// Ours' whole `send` per run, then the median and the maximum of each step.
fn print_latency(size: u64, rows: &[Row]) {
    let runs: Vec<Latency> = rows
        .iter()
        .filter(|r| r.size == size)
        .filter_map(|r| r.latency)
        .collect();
    if runs.is_empty() {
        return;
    }
    let line = |label: &str, v: [f64; 6]| {
        let cells: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    println!("\nats-p2p `send`, ms (spawn → exit, and its steps)\n");
    println!("| run | {} |", Latency::HEADERS.join(" | "));
    println!("|---|{}", "---:|".repeat(Latency::HEADERS.len()));
    for (i, l) in runs.iter().enumerate() {
        line(&format!("{}", i + 1), l.values());
    }
    let column = |i: usize| -> Vec<f64> { runs.iter().map(|l| l.values()[i]).collect() };
    line("median", std::array::from_fn(|i| median(&column(i))));
    line("max", std::array::from_fn(|i| max(column(i).into_iter())));
}

/// Goal thresholds of issue #17.
const GOAL_CONN_MBPS: f64 = 700.0;
const GOAL_VS_SENDME: f64 = 3.0;
const GOAL_SMALL_MEDIAN_MS: f64 = 40.0;
const GOAL_SMALL_MAX_MS: f64 = 60.0;
const GOAL_RSS: u64 = 64 << 20;

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "**pass**",
        Some(false) => "**miss**",
        None => "n/a",
    }
}

/// Ours against the goals, with the numbers behind each verdict.
pub(crate) fn print_goals(mode: &str, rows: &[Row]) {
    let of = |tool: Tool, size: u64| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.tool == tool && r.size == size)
            .collect()
    };
    println!("\n## Goals, {mode} (ats-p2p)\n");
    println!("| goal | result | numbers |");
    println!("|---|---|---|");

    let gib = of(Tool::Ours, 1 << 30);
    let mbps: Vec<f64> = gib.iter().map(|r| r.conn_mbps()).collect();
    let med = median(&mbps);
    println!(
        "| 1 GiB conn→ACK ≥ {GOAL_CONN_MBPS:.0} MB/s (median) | {} | {} |",
        verdict((!mbps.is_empty()).then_some(med >= GOAL_CONN_MBPS)),
        if mbps.is_empty() {
            "no 1 GiB run".into()
        } else {
            format!("median {med:.0} MB/s; runs {}", join(&mbps, 0))
        }
    );

    let sizes: Vec<u64> = {
        let mut s: Vec<u64> = rows.iter().map(|r| r.size).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    for &size in &sizes {
        let ours: Vec<f64> = of(Tool::Ours, size).iter().map(|r| r.whole_ms).collect();
        let theirs: Vec<f64> = of(Tool::Sendme, size).iter().map(|r| r.whole_ms).collect();
        let (pass, numbers) = if ours.is_empty() || theirs.is_empty() {
            (None, "no sendme run (see the notes above)".to_owned())
        } else {
            let ratio = median(&theirs) / median(&ours);
            (
                Some(ratio >= GOAL_VS_SENDME),
                format!(
                    "{ratio:.1}×: `send` median {:.1} ms vs `sendme receive` median {:.1} ms",
                    median(&ours),
                    median(&theirs)
                ),
            )
        };
        println!(
            "| {}: whole `send` ≥ {GOAL_VS_SENDME:.0}× sendme's whole receive | {} | {numbers} |",
            size_label(size),
            verdict(pass)
        );
    }

    let small: Vec<f64> = of(Tool::Ours, 1 << 10).iter().map(|r| r.whole_ms).collect();
    let (med, worst) = (median(&small), max(small.iter().copied()));
    println!(
        "| 1 KiB whole `send` < {GOAL_SMALL_MEDIAN_MS:.0} ms median, never > {GOAL_SMALL_MAX_MS:.0} ms | {} | {} |",
        verdict(
            (!small.is_empty()).then_some(med < GOAL_SMALL_MEDIAN_MS && worst <= GOAL_SMALL_MAX_MS)
        ),
        if small.is_empty() {
            "no 1 KiB run".into()
        } else {
            format!(
                "median {med:.1} ms, max {worst:.1} ms; runs {}",
                join(&small, 1)
            )
        }
    );

    let ours: Vec<&Row> = rows.iter().filter(|r| r.tool == Tool::Ours).collect();
    let peak = |f: fn(&Row) -> u64| ours.iter().map(|r| f(r)).max().unwrap_or(0);
    let (send_rss, recv_rss) = (peak(|r| r.send.max_rss), peak(|r| r.recv.max_rss));
    println!(
        "| RSS per side < 64 MiB at any size | {} | peak send {} MiB, recv {} MiB |",
        verdict((!ours.is_empty()).then_some(send_rss.max(recv_rss) < GOAL_RSS)),
        mib(send_rss),
        mib(recv_rss)
    );
}

fn join(values: &[f64], prec: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.prec$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use super::{median, size_label};

    #[test]
    fn median_of_odd_even_and_no_runs() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn sizes_print_in_their_largest_whole_unit() {
        assert_eq!(size_label(1 << 10), "1 KiB");
        assert_eq!(size_label(64 << 20), "64 MiB");
        assert_eq!(size_label(1 << 30), "1 GiB");
        assert_eq!(size_label(1500), "1500 B");
    }
}
