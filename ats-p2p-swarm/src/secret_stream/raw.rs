//! [`RawStream`]: what a [`SecretStream`](super::SecretStream) runs over, and how it hands its
//! ciphertext down.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// The byte stream under a secret stream: any `AsyncRead + AsyncWrite`, plus one method through
/// which a transport that keeps written bytes until they are acknowledged (UDX) can take the
/// sealed ciphertext without copying it. For any other stream the provided method is the plain
/// `poll_write`, so `impl RawStream for MyStream {}` is all it takes.
pub trait RawStream: AsyncRead + AsyncWrite + Unpin {
    /// Writes from the front of `ciphertext` and removes what was written from it; returns how
    /// many bytes that was (0 only for an empty `ciphertext`).
    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        ciphertext: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self).poll_write(cx, ciphertext))?;
        ciphertext.advance(n.min(ciphertext.len()));
        Poll::Ready(Ok(n))
    }
}

impl RawStream for tokio::net::TcpStream {}
impl RawStream for tokio::io::DuplexStream {}
impl<T: RawStream + ?Sized> RawStream for Box<T> {
    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        ciphertext: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        (**self).poll_write_owned(cx, ciphertext)
    }
}
