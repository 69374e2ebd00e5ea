//! The relay client: connect to a relay by key, ask it to pair our raw stream with the peer's
//! by token, and keep the relay connection open while the relayed stream lives.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tracing::debug;

use super::messages::{PAIR, PROTOCOL, Pair, Token, UNPAIR, Unpair};
use super::protomux::{Channel, ChannelEvent};
use super::{RELAY_TIMEOUT, RelayError};
use crate::hyperdht::{Connection, HyperDht};
use crate::keys::{KeyPair, PublicKey};

/// How long closing the relay connection may take after the path is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A paired path through a relay. The caller connects its raw UDX stream (on the DHT's server
/// socket, see [`super::new_stream`]) to `(relay_addr, remote_stream_id)`. Keeps the relay
/// connection open; dropping it sends `unpair` and closes that connection.
#[derive(Debug)]
pub struct RelayedPath {
    relay_addr: SocketAddr,
    remote_stream_id: u32,
    relay_key: PublicKey,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayedPath {
    /// The relay's address (where the relayed stream sends).
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    /// The relay's stream id for our side (the relayed stream's remote id).
    pub fn remote_stream_id(&self) -> u32 {
        self.remote_stream_id
    }

    /// The relay's public key.
    pub fn relay_key(&self) -> PublicKey {
        self.relay_key
    }

    /// Whether the relay connection ended (the relay closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for RelayedPath {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Pairs through `relay`: connects to it as `key_pair`, sends `pair {is_initiator, token,
/// local_stream_id}` and waits (at most [`RELAY_TIMEOUT`], as hyperdht) for the relay's answer.
pub async fn pair_through(
    dht: &HyperDht,
    key_pair: &KeyPair,
    relay: &PublicKey,
    is_initiator: bool,
    token: Token,
    local_stream_id: u32,
) -> Result<RelayedPath, RelayError> {
    let (conn, channel, remote_id) = tokio::time::timeout(
        RELAY_TIMEOUT,
        request(dht, key_pair, relay, is_initiator, token, local_stream_id),
    )
    .await
    .map_err(|_| RelayError::Timeout)??;
    let relay_addr = conn
        .get_ref()
        .remote_addr()
        .ok_or(RelayError::ChannelClosed)?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(keep(conn, channel, token, stopped));
    Ok(RelayedPath {
        relay_addr,
        remote_stream_id: remote_id,
        relay_key: *relay,
        stop: Some(stop),
        task,
    })
}

async fn request(
    dht: &HyperDht,
    key_pair: &KeyPair,
    relay: &PublicKey,
    is_initiator: bool,
    token: Token,
    local_stream_id: u32,
) -> Result<(Connection, Channel, u32), RelayError> {
    let mut conn = dht
        .connect(key_pair, relay)
        .await
        .map_err(RelayError::RelayUnreachable)?;
    // hyperdht: `relay.Client.from(relaySocket, { id: relaySocket.publicKey })`.
    let mut channel = Channel::new(PROTOCOL, key_pair.public_key().as_bytes());
    conn.send_message(&channel.open_frame()).await?;
    let pair = Pair {
        is_initiator,
        token,
        id: local_stream_id,
        seq: 0,
    };
    conn.send_message(&channel.message_frame(PAIR, &pair.encode()))
        .await?;
    loop {
        let frame = conn
            .recv_message()
            .await?
            .ok_or(RelayError::ChannelClosed)?;
        for ev in channel.handle_frame(&frame)? {
            match ev {
                ChannelEvent::Opened => {}
                ChannelEvent::Reply(b) => conn.send_message(&b).await?,
                ChannelEvent::Closed => return Err(RelayError::ChannelClosed),
                ChannelEvent::Message { kind: PAIR, body } => {
                    let reply = Pair::decode(&body).map_err(|e| RelayError::Protocol(e.into()))?;
                    // blind-relay's client ignores answers for other tokens or the other side.
                    if reply.token == token && reply.is_initiator == is_initiator {
                        return Ok((conn, channel, reply.id));
                    }
                }
                ChannelEvent::Message { .. } => {}
            }
        }
    }
}

/// Holds the relay connection (reading keeps keep-alives flowing) until the path is dropped or
/// the relay goes away; then unpairs and closes.
async fn keep(
    mut conn: Connection,
    mut channel: Channel,
    token: Token,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            msg = conn.recv_message() => match msg {
                Ok(Some(frame)) => match channel.handle_frame(&frame) {
                    Ok(evs) => {
                        if evs.contains(&ChannelEvent::Closed) {
                            debug!("relay closed the channel");
                            return;
                        }
                        for ev in evs {
                            if let ChannelEvent::Reply(b) = ev
                                && conn.send_message(&b).await.is_err() {
                                    return;
                                }
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "malformed frame from relay");
                        return;
                    }
                },
                Ok(None) | Err(_) => return,
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let unpair = Unpair { token };
        conn.send_message(&channel.message_frame(UNPAIR, &unpair.encode()))
            .await?;
        if let Some(close) = channel.close() {
            conn.send_message(&close).await?;
        }
        conn.shutdown().await
    })
    .await;
}
