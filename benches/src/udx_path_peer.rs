//! The Rust side of the real-path benchmark (`bin/path.rs`): one raw UDX stream from
//! `ats-p2p-swarm`, speaking the JSON-lines protocol of `benches/path-js/udx-peer.js` so the
//! orchestrator drives Rust and `udx-native` peers alike:
//!
//! ```text
//! stdout: {"id": <local stream id>, "port": <udp port>}
//! stdin:  {"remoteId": n, "remoteHost": ip, "remotePort": n, "send": bytes}   (connects at once)
//! stdout: {"ready": true}
//! stdin:  any line: go (send `send` bytes, then end; read the peer's data to its end)
//! stdout: {"impl": "rust", "sent": n, "recv": n, "ms": n, "cpuMs": n, "maxRssKiB": n,
//!          "retransmits": n, ...counters}
//! ```
//! Both sides connect before either sends, as after a HyperDHT holepunch, so no packet arrives
//! at a stream that is not connected yet. `ms` runs from go to the stream's end: for the sender
//! until the peer acknowledged everything (END included), for the receiver until the last byte.
//! `PATH_PEER_PROGRESS_MS=1000` prints the stream's counters to stderr once a second.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ats_p2p_swarm::udx::{CongestionControl, SocketConfig, UdxSocket, UdxStream};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, ReadBuf};

/// Bytes per write and read.
const CHUNK: usize = 64 * 1024;

/// What the orchestrator tells a peer.
#[derive(Debug, Clone)]
struct PeerConfig {
    remote_id: u32,
    remote: SocketAddr,
    send: u64,
}

impl PeerConfig {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(line).context("config line is not JSON")?;
        let remote_id = v["remoteId"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .context("remoteId")?;
        let host: IpAddr = v["remoteHost"]
            .as_str()
            .context("remoteHost")?
            .parse()
            .context("remoteHost")?;
        let port = v["remotePort"]
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .context("remotePort")?;
        Ok(Self {
            remote_id,
            remote: SocketAddr::new(host, port),
            send: v["send"].as_u64().context("send")?,
        })
    }
}

/// Runs one peer bound to `bind` (port 0: any) on a two-worker runtime, until the transfer ends;
/// what it sends is paced by `congestion`.
pub fn run(bind: IpAddr, congestion: CongestionControl) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(peer(bind, congestion))
}

async fn peer(bind: IpAddr, congestion: CongestionControl) -> anyhow::Result<()> {
    let mut cfg = SocketConfig::default();
    cfg.stream.congestion = congestion;
    let sock = UdxSocket::bind_with(SocketAddr::new(bind, 0), cfg).await?;
    let id = rand::random::<u32>() | 1;
    let stream = sock.create_stream(id)?;
    println!("{}", json!({"id": id, "port": sock.local_addr().port()}));
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    stdin.read_line(&mut line).await?;
    let cfg = PeerConfig::parse(&line)?;
    stream.connect(cfg.remote_id, cfg.remote)?;
    println!("{}", json!({"ready": true}));
    line.clear();
    if stdin.read_line(&mut line).await? == 0 {
        bail!("stdin closed before go");
    }
    let started = Instant::now();
    let progress = std::env::var("PATH_PEER_PROGRESS_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let mut stream = stream;
    let (recv, ms) = transfer(&mut stream, cfg.send, started, progress).await?;
    let stats = stream.stats().unwrap_or_default();
    drop(stream);
    sock.close().await;
    let usage = crate::self_usage();
    println!(
        "{}",
        json!({
            "impl": "rust", "sent": cfg.send, "recv": recv, "ms": ms,
            "cpuMs": (usage.cpu_s * 1000.0) as u64, "maxRssKiB": usage.max_rss / 1024,
            "retransmits": stats.retransmits, "rtoExpiries": stats.rto_expiries,
            "lossEvents": stats.loss_events, "tlpProbes": stats.tlp_probes,
            "packetsSent": stats.packets_sent, "srttUs": stats.srtt_us, "cwnd": stats.cwnd,
            "mtu": stats.mtu, "ccState": stats.cc_state, "bandwidth": stats.bandwidth,
        })
    );
    Ok(())
}

/// Sends `send` zero bytes, then ends, while reading the peer's data to its end. Returns the
/// bytes received and the milliseconds of the transfer as the module docs define them. With
/// `progress`, prints the stream's counters to stderr at that interval.
///
/// One task polls both directions of the one stream (no split), so the counters stay reachable.
async fn transfer(
    stream: &mut UdxStream,
    send: u64,
    started: Instant,
    progress: Option<Duration>,
) -> anyhow::Result<(u64, u64)> {
    let out = vec![0u8; CHUNK];
    let mut inbuf = vec![0u8; CHUNK];
    let mut left = send;
    let mut recv = 0u64;
    let mut sent_at: Option<Duration> = None;
    let mut recv_at: Option<Duration> = None;
    let mut ticker = progress.map(tokio::time::interval);
    std::future::poll_fn(|cx| {
        while sent_at.is_none() {
            let mut s = Pin::new(&mut *stream);
            let step = if left > 0 {
                let k = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                s.as_mut()
                    .poll_write(cx, &out[..k])
                    .map_ok(|n| left -= n as u64)
            } else {
                s.as_mut()
                    .poll_shutdown(cx)
                    .map_ok(|()| sent_at = Some(started.elapsed()))
            };
            match step {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        while recv_at.is_none() {
            let mut rb = ReadBuf::new(&mut inbuf);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    recv_at = Some(started.elapsed());
                }
                Poll::Ready(Ok(())) => recv += rb.filled().len() as u64,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if let Some(t) = ticker.as_mut() {
            while t.poll_tick(cx).is_ready() {
                eprintln!(
                    "{} ms: to send {left}, received {recv}, {:?}",
                    started.elapsed().as_millis(),
                    stream.stats()
                );
            }
        }
        if sent_at.is_some() && recv_at.is_some() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    let done = if send > 0 { sent_at } else { recv_at };
    Ok((recv, done.unwrap_or_default().as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::PeerConfig;

    #[test]
    fn config_lines_parse_and_bad_ones_fail() {
        let c = PeerConfig::parse(
            r#"{"remoteId":7,"remoteHost":"10.78.2.2","remotePort":4000,"send":64}"#,
        )
        .expect("valid");
        assert_eq!(c.remote_id, 7);
        assert_eq!(c.remote.to_string(), "10.78.2.2:4000");
        assert_eq!(c.send, 64);
        assert!(PeerConfig::parse(r#"{"remoteId":7}"#).is_err());
        assert!(
            PeerConfig::parse(r#"{"remoteId":7,"remoteHost":"x","remotePort":1,"send":0}"#)
                .is_err()
        );
        assert!(
            PeerConfig::parse(r#"{"remoteId":7,"remoteHost":"10.0.0.1","remotePort":1}"#).is_err()
        );
    }
}
