//! Load test of the ATS hub on loopback: N concurrent clients each create a task and claim it.
//!
//! `cargo run --release -p benches --bin hub_load -- --clients 32 --pairs 20000`
//!
//! With `--db postgres://...` the in-process hubs store in PostgreSQL; `--instances 2` starts two
//! of them on that database and spreads the clients over both (racing claims then cross them).
//!
//! Prints pairs per second and latency percentiles, then checks that every task was created
//! and claimed exactly once (no lost task, no double claim). Exits 1 if that check fails.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ats_p2p_signal::hub::{DbLocation, Hub, HubConfig, parse_db_location};
use ats_p2p_signal::{Actor, Client, ClientConfig, NewTask, SignalError, TaskStatus};
use clap::Parser;

/// Lease of each claim: long enough that none expires during the run.
const LEASE: Duration = Duration::from_secs(600);

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients (each its own actor and HTTP connection pool).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Create+claim pairs in total.
    #[arg(long, default_value_t = 20_000)]
    pairs: usize,
    /// Claims sent concurrently for each task, from different clients (exactly one must win).
    #[arg(long, default_value_t = 1)]
    racers: usize,
    /// Use this hub instead of starting one in-process.
    #[arg(long)]
    url: Option<String>,
    /// Database of the in-process hubs: a SQLite file or a postgres:// URL [default: a SQLite
    /// file in a temporary directory].
    #[arg(long, value_parser = parse_db_location)]
    db: Option<DbLocation>,
    /// In-process hub instances on that database (more than one needs PostgreSQL).
    #[arg(long, default_value_t = 1)]
    instances: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| DbLocation::Sqlite(dir.path().join("load.sqlite")));
    let mut hubs = Vec::new();
    if args.url.is_none() {
        for _ in 0..args.instances.max(1) {
            hubs.push(Hub::bind(HubConfig::new("127.0.0.1:0".parse()?, db.clone())).await?);
        }
    }
    let urls: Vec<String> = match &args.url {
        Some(u) => vec![u.clone()],
        None => hubs.iter().map(Hub::url).collect(),
    };
    let Some(url) = urls.first().cloned() else {
        bail!("no hub");
    };
    let clients = args.clients.max(1);
    let per = args.pairs / clients;
    let extra = args.pairs % clients;
    let channel = format!("load-{}", std::process::id());
    println!(
        "hub_load: {} pairs, {clients} clients, {} claim(s) per task, {} hub(s) {}, {} cores",
        args.pairs,
        args.racers.clamp(1, clients),
        urls.len(),
        if args.url.is_some() {
            url.clone()
        } else {
            db.to_string()
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let racers = args.racers.clamp(1, clients);
    let pool: Vec<Client> = (0..clients)
        .map(|i| {
            let url = &urls[i % urls.len()];
            Client::new(ClientConfig::new(url, Actor::agent(format!("load-{i}"))))
        })
        .collect::<Result<_, _>>()?;
    let pool = std::sync::Arc::new(pool);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..clients {
        let n = per + usize::from(i < extra);
        let pool = pool.clone();
        let client = pool[i].clone();
        let channel = channel.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(n);
            let mut ids = Vec::with_capacity(n);
            for k in 0..n {
                let t0 = Instant::now();
                let mut t = NewTask::new(format!("load {i}/{k}"));
                t.channel = Some(channel.clone());
                let task = client.create_task(&t).await?;
                let claims = (0..racers).map(|r| {
                    let c = pool[(i + r) % pool.len()].clone();
                    async move { c.claim(task.id, Some(LEASE)).await }
                });
                let mut winners = 0;
                for result in futures::future::join_all(claims).await {
                    match result {
                        Ok(t) if t.status == TaskStatus::InProgress => winners += 1,
                        Ok(t) => bail!("task {} is {} after a successful claim", t.id, t.status),
                        Err(SignalError::ClaimConflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if winners != 1 {
                    bail!("task {}: {winners} claims won", task.id);
                }
                lat.push(t0.elapsed());
                ids.push(task.id);
            }
            anyhow::Ok((lat, ids))
        });
    }
    let mut lat = Vec::with_capacity(args.pairs);
    let mut ids = Vec::with_capacity(args.pairs);
    while let Some(r) = set.join_next().await {
        let (l, i) = r.context("worker panicked")??;
        lat.extend(l);
        ids.extend(i);
    }
    let elapsed = started.elapsed();
    lat.sort();
    let rate = ids.len() as f64 / elapsed.as_secs_f64();
    println!(
        "hub_load: {} pairs in {:.2} s = {:.0} pairs/s; pair latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ids.len(),
        elapsed.as_secs_f64(),
        rate,
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    // Check: every task exists once, in progress, claimed by the client that created it.
    let unique: HashSet<i64> = ids.iter().copied().collect();
    let check = Client::new(ClientConfig::new(&url, Actor::agent("load-check")))?;
    let mut in_progress = 0u64;
    let mut offset = 0u32;
    loop {
        let page = check
            .list_tasks(&ats_p2p_signal::ListQuery {
                channel: Some(channel.clone()),
                limit: Some(1000),
                offset: Some(offset),
                ..Default::default()
            })
            .await?;
        for t in &page.tasks {
            if t.status == TaskStatus::InProgress && t.assignee_id.is_some() {
                in_progress += 1;
            }
        }
        if page.tasks.len() < 1000 {
            break;
        }
        offset += 1000;
    }
    let ok = unique.len() == args.pairs && in_progress == args.pairs as u64;
    println!(
        "hub_load: check {}: {} unique ids, {} in progress (expected {})",
        if ok { "ok" } else { "FAILED" },
        unique.len(),
        in_progress,
        args.pairs
    );
    for h in hubs {
        h.shutdown().await;
    }
    if !ok {
        bail!("lost or doubly-claimed tasks");
    }
    Ok(())
}
