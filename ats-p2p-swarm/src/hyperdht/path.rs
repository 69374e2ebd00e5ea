//! A connection and the path it took: how two peers reached each other (loopback, LAN, direct,
//! holepunched or through a blind relay), the remote address the bytes flow to, and the RTT.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::keys::PublicKey;
use crate::secret_stream::SecretStream;
use crate::udx::UdxStream;

/// How a connection reached the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Both peers on this machine (a loopback address).
    Loopback,
    /// Same local network: a private address answered the LAN race.
    Lan,
    /// The peer (or we) was reachable without punching.
    Direct,
    /// Holepunched through one or two NATs.
    Holepunched,
    /// Spliced by a blind relay (the relay sees only ciphertext).
    Relayed,
}

impl PathKind {
    /// The lower-case name used in events and reports (`loopback`, `lan`, `direct`,
    /// `holepunched`, `relayed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Lan => "lan",
            Self::Direct => "direct",
            Self::Holepunched => "holepunched",
            Self::Relayed => "relayed",
        }
    }

    /// The kind of a direct (not relayed, not punched) path to `addr`.
    pub fn of_direct(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) if a.ip().is_loopback() => Self::Loopback,
            SocketAddr::V4(a) if a.ip().is_private() || a.ip().is_link_local() => Self::Lan,
            SocketAddr::V6(a) if a.ip().is_loopback() => Self::Loopback,
            _ => Self::Direct,
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The path of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// How the peer was reached.
    pub kind: PathKind,
    /// Where our UDX stream sends (the relay's address when relayed).
    pub remote_addr: SocketAddr,
    /// The relay's public key, when relayed.
    pub relay: Option<PublicKey>,
}

impl fmt::Display for PathInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.relay {
            Some(r) => write!(
                f,
                "{} via relay {} at {}",
                self.kind,
                r.to_hex(),
                self.remote_addr
            ),
            None => write!(f, "{} to {}", self.kind, self.remote_addr),
        }
    }
}

/// An encrypted connection to a peer (the secret stream over a UDX stream) and the path it took.
///
/// Dereferences to the [`SecretStream`] (remote key, handshake hash, keep-alive) and is
/// `AsyncRead + AsyncWrite` itself. Keeps alive what the path needs: the punch socket the stream
/// runs on, or the relay session.
pub struct Connection {
    stream: SecretStream<UdxStream>,
    path: PathInfo,
    /// Kept alive for the stream's lifetime (a punch socket, a relay session).
    _keep: Vec<Arc<dyn Send + Sync>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("path", &self.path)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(stream: SecretStream<UdxStream>, path: PathInfo) -> Self {
        Self {
            stream,
            path,
            _keep: Vec::new(),
        }
    }

    /// Keeps `guard` alive as long as this connection (a relay session).
    pub(crate) fn keep(mut self, guard: Arc<dyn Send + Sync>) -> Self {
        self._keep.push(guard);
        self
    }

    /// How the peer was reached.
    pub fn path(&self) -> &PathInfo {
        &self.path
    }

    /// The UDX stream's smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.stream
            .get_ref()
            .stats()
            .filter(|s| s.srtt_us > 0)
            .map(|s| Duration::from_micros(s.srtt_us))
    }
}

impl Deref for Connection {
    type Target = SecretStream<UdxStream>;
    fn deref(&self) -> &Self::Target {
        &self.stream
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.stream
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_kind_of_direct_addresses() {
        let k = |s: &str| PathKind::of_direct(s.parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(k("127.0.0.1:5"), PathKind::Loopback);
        assert_eq!(k("10.1.2.3:5"), PathKind::Lan);
        assert_eq!(k("192.168.1.2:5"), PathKind::Lan);
        assert_eq!(k("198.18.0.2:5"), PathKind::Direct);
        assert_eq!(PathKind::Relayed.to_string(), "relayed");
    }
}
