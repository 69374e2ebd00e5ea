//! Pipes stdin to an encrypted stream (UDX + the Hyperswarm secret stream, Noise XX) and the
//! stream to stdout, for manual checks.
//!
//! ```text
//! # terminal 1: the responder; connects to whoever sends to it first
//! cargo run -p ats-p2p-swarm --example udx-pipe -- --bind 127.0.0.1:5001 --local-id 1 \
//!     --remote-id 2 --accept > received.bin
//! # terminal 2: the initiator
//! cargo run -p ats-p2p-swarm --example udx-pipe -- --bind 127.0.0.1:5002 --local-id 2 \
//!     --remote 127.0.0.1:5001 --remote-id 1 < file.bin
//! ```
//! UDX has no handshake: both sides name each other's stream id, and the initiator names the
//! responder's address. With `--accept` the stream connects to whichever address sends to it
//! first (the firewall hook). The side with `--accept` is the Noise responder, the other the
//! initiator. Each side prints its public key; `--remote-key HEX` refuses any other peer key
//! during the handshake. `--raw` skips the encryption (plain UDX). The stream ends when stdin
//! ends and the peer's data is read.

use std::net::SocketAddr;
use std::process::ExitCode;

use ats_p2p_swarm::secret_stream::SecretStream;
use ats_p2p_swarm::udx::{SocketEvent, UdxSocket};
use ats_p2p_swarm::{KeyPair, PublicKey};
use clap::Parser;
use tokio::io::AsyncWriteExt;

#[derive(Parser, Debug)]
#[command(about = "stdin → encrypted UDX stream → stdout")]
struct Args {
    /// Local address to bind (exactly this address).
    #[arg(long)]
    bind: SocketAddr,
    /// Our stream id.
    #[arg(long)]
    local_id: u32,
    /// The peer's stream id.
    #[arg(long)]
    remote_id: u32,
    /// The peer's address (not needed with --accept).
    #[arg(long)]
    remote: Option<SocketAddr>,
    /// Connect to the source of the first packet instead of --remote.
    #[arg(long)]
    accept: bool,
    /// Refuse any remote static key but this one (64 hex characters).
    #[arg(long)]
    remote_key: Option<PublicKey>,
    /// Plain UDX, no secret stream.
    #[arg(long)]
    raw: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udx-pipe: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let sock = UdxSocket::bind(args.bind).await?;
    let mut events = sock.take_events().ok_or("events already taken")?;
    let stream = sock.create_stream(args.local_id)?;
    eprintln!(
        "udx-pipe: bound {} as stream {}",
        sock.local_addr(),
        args.local_id
    );
    let remote = if args.accept {
        loop {
            match events.recv().await {
                Some(SocketEvent::Firewall { local_id, from }) if local_id == args.local_id => {
                    break from;
                }
                Some(_) => continue,
                None => return Err("socket closed".into()),
            }
        }
    } else {
        args.remote.ok_or("--remote is required without --accept")?
    };
    stream.connect(args.remote_id, remote)?;
    eprintln!("udx-pipe: connected to {remote} stream {}", args.remote_id);
    if args.raw {
        pipe(stream).await?;
    } else {
        let keypair = KeyPair::generate();
        eprintln!("udx-pipe: our public key {}", keypair.public_key());
        let expected = args.remote_key;
        let secure = if args.accept {
            SecretStream::accept(stream, keypair, move |pk: &PublicKey| {
                expected.is_none_or(|e| e == *pk)
            })
            .await?
        } else {
            SecretStream::connect(stream, keypair, expected).await?
        };
        eprintln!(
            "udx-pipe: secret stream open, remote key {}",
            secure.remote_public_key()
        );
        pipe(secure).await?;
    }
    sock.close().await;
    Ok(())
}

/// Copies stdin to `stream` and `stream` to stdout until both directions end.
async fn pipe<S>(stream: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let up = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut w).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(())
    };
    let down = async {
        let mut out = tokio::io::stdout();
        tokio::io::copy(&mut r, &mut out).await?;
        out.flush().await?;
        Ok::<_, std::io::Error>(())
    };
    let (a, b) = tokio::join!(up, down);
    a?;
    b?;
    Ok(())
}
