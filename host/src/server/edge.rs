//! The server's edge: what a client that never finishes its request, or a
//! thousand of them, can take from the process.
//!
//! - At most `server.max_connections` connections are open at once; the
//!   next one waits in the kernel's backlog until one closes.
//! - A connection that sends or takes nothing for `server.idle_timeout`
//!   (a stalled client, an idle keep-alive) is closed.
//! - A request's headers must all arrive within `server.request_timeout`
//!   of its first byte (hyper's header read timeout, which needs the
//!   timer [`serve`] gives it), and then its body within the same time
//!   ([`whole_body`]): a client that trickles a byte at a time, never idle
//!   long enough to be cut off, is cut off by these.
//! - Bodies are capped by `server.body_limit` on every route.
//!
//! It holds connections to limits; it knows no route.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A listener that holds its connections to a count and an idle timeout.
pub struct Guarded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Guarded {
    pub fn new(inner: TcpListener, max_connections: usize, idle: Duration) -> Guarded {
        Guarded {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            idle,
        }
    }
}

impl Listener for Guarded {
    type Io = IdleTimed;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (IdleTimed, SocketAddr) {
        // The semaphore is never closed, so this waits and never fails.
        let slot = loop {
            if let Ok(slot) = self.slots.clone().acquire_owned().await {
                break slot;
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    let _ = io.set_nodelay(true);
                    return (IdleTimed::new(io, slot, self.idle), addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, then retry.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits
/// for the connections still open to finish their requests.
///
/// This is `axum::serve` with two differences that matter at the edge:
/// connections get a timer, so hyper enforces `header_timeout` on every
/// request's headers; and only HTTP/1 is spoken.
pub async fn serve(
    mut listener: Guarded,
    router: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    // HTTP/1 only: the header timeout is HTTP/1's, and an HTTP/2
    // connection would carry many bodies (each buffered by `whole_body`)
    // for one connection slot.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // The router takes hyper's body as it comes.
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    // Stop taking connections, then let the open ones finish.
    drop(listener);
    graceful.shutdown().await;
}

/// What [`whole_body`] holds a request body to.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The whole body must arrive within this, from the end of the headers.
    pub timeout: Duration,
    /// The largest body, in bytes.
    pub limit: usize,
}

/// Middleware: reads the whole request body within its time and size
/// limits before the route sees it (every route takes a small body), so
/// a body sent a byte at a time cannot hold a connection: 408 past the
/// time, 413 past the size.
pub async fn whole_body(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.limit);
    let bytes = match tokio::time::timeout(limits.timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is over the limit of {} bytes (server.body_limit)\n",
                        limits.limit
                    ),
                )
                    .into_response()
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read\n",
                )
                    .into_response()
            };
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} (server.request_timeout)\n",
                    humantime::format_duration(limits.timeout)
                ),
            )
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A connection that fails with `TimedOut` once it has made no progress
/// for its idle time; it holds its connection slot until dropped.
pub struct IdleTimed {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl IdleTimed {
    fn new(io: TcpStream, slot: OwnedSemaphorePermit, idle: Duration) -> IdleTimed {
        IdleTimed {
            io,
            _slot: slot,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// Progress was made: the idle time starts again.
    fn progressed(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// Nothing is ready: has the idle time run out?
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client was idle too long")
}

impl AsyncRead for IdleTimed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleTimed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_clients_are_closed_and_slots_are_capped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut guarded = Guarded::new(listener, 1, Duration::from_secs(1));
        let mut first = TcpStream::connect(addr).await.unwrap();
        let (mut served, _) = guarded.accept().await;
        // A second client waits: the only slot is taken.
        let _second = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(100), guarded.accept()).await;
        assert!(
            waiting.is_err(),
            "a second connection was accepted past the cap"
        );
        // The first one sends one byte, then nothing: it is cut off.
        first.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(served.read(&mut buf).await.unwrap(), 1);
        let err = served.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Once it is gone, the next client gets the slot.
        drop(served);
        let next = tokio::time::timeout(Duration::from_secs(2), guarded.accept()).await;
        assert!(next.is_ok(), "the freed slot was not reused");
    }
}
