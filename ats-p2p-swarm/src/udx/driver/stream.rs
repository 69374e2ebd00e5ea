//! [`UdxStream`]: the application's handle on one stream of a [`UdxSocket`](super::UdxSocket),
//! `AsyncRead + AsyncWrite` over the shared sans-io state.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Shared, State};
use crate::secret_stream::RawStream;
use crate::udx::{CloseReason, EndpointError, ReadError, WriteError};

/// One UDX stream: `AsyncRead + AsyncWrite`. `shutdown` sends END and resolves when it is
/// acknowledged; dropping the handle (or [`UdxStream::destroy`]) sends DESTROY unless the
/// stream already finished cleanly.
#[derive(Debug)]
pub struct UdxStream {
    shared: Arc<Shared>,
    id: u32,
    shutdown_sent: bool,
}

impl UdxStream {
    pub(super) fn new(shared: Arc<Shared>, id: u32) -> Self {
        Self {
            shared,
            id,
            shutdown_sent: false,
        }
    }

    /// Our stream id.
    pub fn local_id(&self) -> u32 {
        self.id
    }

    /// The peer's address, once connected.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        let mut st = self.shared.lock();
        st.endpoint
            .stream(self.id)
            .and_then(|s| s.remote())
            .map(|(_, a)| a)
    }

    /// Connects to the peer's stream `remote_id` at `addr`.
    pub fn connect(&self, remote_id: u32, addr: SocketAddr) -> Result<(), EndpointError> {
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(EndpointError::SocketClosed);
        }
        st.endpoint
            .connect(self.id, remote_id, addr, Instant::now());
        drop(st);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Sends one unreliable MESSAGE datagram.
    pub fn send_message(&self, data: &[u8]) -> Result<(), WriteError> {
        let mut st = self.shared.lock();
        let s = st
            .endpoint
            .stream(self.id)
            .ok_or(WriteError::Closed(CloseReason::Destroyed))?;
        s.send_message(data)?;
        drop(st);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Takes a received MESSAGE datagram, if one is queued.
    pub fn try_recv_message(&self) -> Option<Bytes> {
        self.shared
            .lock()
            .handles
            .get_mut(&self.id)?
            .messages
            .pop_front()
    }

    /// Waits for the next MESSAGE datagram; `Err` once the stream is closed and none is left.
    pub async fn recv_message(&self) -> Result<Bytes, CloseReason> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            let State {
                endpoint,
                handles,
                stopped,
                ..
            } = &mut *st;
            let Some(h) = handles.get_mut(&self.id) else {
                return Poll::Ready(Err(CloseReason::Destroyed));
            };
            if let Some(m) = h.messages.pop_front() {
                return Poll::Ready(Ok(m));
            }
            let reason = endpoint.stream(self.id).and_then(|s| s.close_reason());
            match reason {
                Some(r) => Poll::Ready(Err(r)),
                None if *stopped => Poll::Ready(Err(CloseReason::Destroyed)),
                None => {
                    h.message = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Aborts the stream (DESTROY).
    pub fn destroy(&self) {
        let mut st = self.shared.lock();
        if let Some(s) = st.endpoint.stream(self.id) {
            s.destroy();
        }
        drop(st);
        self.shared.notify.notify_one();
    }

    /// Why the stream closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let mut st = self.shared.lock();
        st.endpoint.stream(self.id).and_then(|s| s.close_reason())
    }

    /// Counters of the underlying stream.
    pub fn stats(&self) -> Option<crate::udx::StreamStats> {
        let mut st = self.shared.lock();
        st.endpoint.stream(self.id).map(|s| s.stats())
    }
}

impl AsyncRead for UdxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let State {
            endpoint,
            handles,
            stopped,
            ..
        } = &mut *st;
        let Some(s) = endpoint.stream(self.id) else {
            return Poll::Ready(Err(CloseReason::Destroyed.into()));
        };
        // Copy straight into the caller's (possibly uninitialised) space: no zero-fill first.
        match s.read_with(buf.remaining(), |src| buf.put_slice(src)) {
            Ok(_) => {
                let window_update = s.has_pending_control();
                drop(st);
                if window_update {
                    self.shared.notify.notify_one();
                }
                Poll::Ready(Ok(()))
            }
            Err(ReadError::Blocked) if *stopped => Poll::Ready(Err(socket_closed())),
            Err(ReadError::Blocked) => {
                if let Some(h) = handles.get_mut(&self.id) {
                    h.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(ReadError::Closed(r)) => Poll::Ready(Err(r.into())),
        }
    }
}

impl UdxStream {
    /// The body of both writes: `write` queues into the stream (copying or not) and returns
    /// how many bytes it took.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut crate::udx::Stream) -> Result<usize, WriteError>,
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        let State {
            endpoint,
            handles,
            stopped,
            ..
        } = &mut *st;
        let Some(s) = endpoint.stream(self.id) else {
            return Poll::Ready(Err(CloseReason::Destroyed.into()));
        };
        match write(s) {
            Ok(n) => {
                // The driver only needs a nudge when the queue was empty: otherwise it is
                // already waiting on an ack, the pacer or the socket, and will come back.
                let was_empty = s.send_queued() == n;
                drop(st);
                if was_empty {
                    self.shared.notify.notify_one();
                }
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) if *stopped => Poll::Ready(Err(socket_closed())),
            Err(WriteError::Blocked) => {
                if let Some(h) = handles.get_mut(&self.id) {
                    h.write = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(WriteError::Ended) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                WriteError::Ended,
            ))),
            Err(WriteError::Closed(r)) => Poll::Ready(Err(r.into())),
        }
    }
}

/// The secret stream's ciphertext goes into the send buffer without a copy.
impl RawStream for UdxStream {
    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        ciphertext: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.write_owned(ciphertext))
    }
}

impl AsyncWrite for UdxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.write(data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already in the stream's send buffer; the driver sends them without
        // further prompting. Waiting for acknowledgements is `poll_shutdown`'s job.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let State {
            endpoint,
            handles,
            stopped,
            ..
        } = &mut *st;
        let Some(s) = endpoint.stream(self.id) else {
            return Poll::Ready(Err(CloseReason::Destroyed.into()));
        };
        if !self.shutdown_sent {
            if let Err(e) = s.shutdown() {
                return Poll::Ready(Err(match e {
                    WriteError::Closed(CloseReason::Finished) => return Poll::Ready(Ok(())),
                    WriteError::Closed(r) => r.into(),
                    other => io::Error::other(other),
                }));
            }
            self.shutdown_sent = true;
            shared.notify.notify_one();
        }
        if s.is_end_acked() || s.close_reason() == Some(CloseReason::Finished) {
            return Poll::Ready(Ok(()));
        }
        if let Some(r) = s.close_reason() {
            return Poll::Ready(Err(r.into()));
        }
        if *stopped {
            return Poll::Ready(Err(socket_closed()));
        }
        if let Some(h) = handles.get_mut(&self.id) {
            h.write = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for UdxStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(s) = st.endpoint.stream(self.id)
            && s.close_reason().is_none()
        {
            s.destroy();
        }
        if let Some(h) = st.handles.get_mut(&self.id) {
            h.dropped = true;
        }
        drop(st);
        self.shared.notify.notify_one();
    }
}

fn socket_closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, EndpointError::SocketClosed)
}
