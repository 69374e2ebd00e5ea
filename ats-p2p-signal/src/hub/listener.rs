//! The hub's TCP listener with a cap on open connections.
//!
//! Request and WebSocket limits bound the work of connections that speak; this bounds the
//! connections themselves (each costs a file descriptor and buffers, idle or not). A connection
//! accepted while [`HubConfig::max_connections`](super::HubConfig::max_connections) are open is
//! closed at once, before a byte is read: the client sees the connection closed and may retry,
//! and the hub keeps serving the connections it has.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A [`TcpListener`] that holds one slot per open connection.
#[derive(Debug)]
pub(crate) struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl CappedListener {
    /// Serves at most `max_connections` connections at once (at least one).
    pub(crate) fn new(inner: TcpListener, max_connections: usize) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
        }
    }
}

impl Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // axum's own accept loop logs and retries on accept errors.
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    // Events go out as small WebSocket frames. With Nagle's algorithm a frame
                    // written while the previous one is still unacknowledged waits for the
                    // client's delayed ACK (40 ms on Linux): a watcher sent a frame shortly
                    // before a task event saw the event up to 40 ms late (the 1 KiB `send`
                    // lost 30–40 ms to it on the offer, the claim or the accept).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
                    }
                    return (
                        CappedStream {
                            stream,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                Err(_) => {
                    tracing::debug!(%addr, "too many connections open; closing a new one");
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; its slot is given back when it is dropped.
#[derive(Debug)]
pub(crate) struct CappedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_delayed_acks() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = CappedListener::new(inner, 4);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.stream.nodelay().unwrap());
    }
}
