//! A TCP listener whose connections can be cut at will: "the camera drove away".

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Whether the simulated camera can be reached. Shared by the listener and its connections.
#[derive(Debug)]
pub struct Gate {
    reachable: AtomicBool,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate {
            reachable: AtomicBool::new(true),
        })
    }

    pub fn set(&self, on: bool) {
        self.reachable.store(on, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }
}

/// Accepts connections; while the gate is closed, new connections are closed at once.
pub struct GatedListener {
    pub inner: TcpListener,
    pub gate: Arc<Gate>,
}

impl axum::serve::Listener for GatedListener {
    type Io = GatedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) if self.gate.is_open() => {
                    let _ = stream.set_nodelay(true);
                    let gate = self.gate.clone();
                    return (
                        GatedStream {
                            inner: stream,
                            gate,
                        },
                        addr,
                    );
                }
                Ok((stream, addr)) => {
                    tracing::debug!(%addr, "unreachable: closing new connection");
                    drop(stream);
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails every read and write once the gate closes.
pub struct GatedStream {
    inner: TcpStream,
    gate: Arc<Gate>,
}

impl GatedStream {
    fn check(&self) -> io::Result<()> {
        if self.gate.is_open() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated camera unreachable",
            ))
        }
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
