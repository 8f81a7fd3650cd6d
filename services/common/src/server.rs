//! The HTTP/1.1 server of both services: binding, the accept loop, per-
//! connection limits and graceful shutdown.
//!
//! Why not `axum::serve`: it serves connections without a timer (so without
//! hyper's header-read timeout), without a bound on connections or on the
//! time a response may take to write, and its graceful shutdown closes idle
//! keep-alive connections, which races with a proxy sending its next POST
//! there. What is kept here is what these guarantees need, and nothing else:
//! - every connection has a header-read timeout
//!   ([`ServeOptions::header_read_timeout`]): a client that opens a
//!   connection and sends no request, or only part of its headers, is cut and
//!   cannot hold file descriptors. The timer also runs while a keep-alive
//!   connection waits for its next request, so proxies must keep idle pooled
//!   connections for less than that (the local nginx gateway keeps them 5 s);
//! - every response must be written within [`ServeOptions::write_timeout`]
//!   of its first byte, or the connection is cut ([`ConnectionIo`]): a client
//!   that reads slowly cannot keep a page in memory for long;
//! - at most [`ServeOptions::max_connections`] connections are served at
//!   once; more wait in the kernel's listen backlog until one closes, so
//!   memory and file descriptors stay bounded whatever clients do.
//!
//! On shutdown the listener closes first (new connections are refused, which
//! a proxy retries on another server). Every answer from then on carries
//! `Connection: close`, so a client never sends a second request on the
//! connection. A connection without a request in progress is closed by the
//! server only while a client is still sending headers; an idle keep-alive
//! connection is left for the client to close (or to use once more): a server
//! that closes it could do so just as a proxy sends a POST on it, which the
//! proxy must not retry (it may have been published), so the client would get
//! a 502. The header-read timeout still cuts an idle connection, and all of
//! it is bounded by [`ServeOptions::drain_timeout`].
//!
//! Requests hyper cannot parse (400, 414 URI too long, 431 headers too large)
//! are answered by hyper itself, with an empty body. Nothing here knows about
//! routes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Env;

/// Variable setting the header-read timeout in seconds.
pub const HTTP_HEADER_READ_TIMEOUT: &str = "HTTP_HEADER_READ_TIMEOUT";
/// Variable setting the response write timeout in seconds.
pub const HTTP_WRITE_TIMEOUT: &str = "HTTP_WRITE_TIMEOUT";
/// Variable setting the most connections served at once.
pub const HTTP_MAX_CONNECTIONS: &str = "HTTP_MAX_CONNECTIONS";
/// Default time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a response may take to write, from its first byte.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a shutdown signal, how long a connection that has received part of a
/// request may take to start handling it before it is closed.
const IDLE_GRACE: Duration = Duration::from_millis(100);
/// Pause after an accept error that is not about one connection (EMFILE).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How a listener is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Time a client has to send the complete headers of a request (also the
    /// longest a keep-alive connection may sit idle).
    pub header_read_timeout: Duration,
    /// Time a response may take to write, from its first byte to the last
    /// (each chunk of a streamed body); then the connection is cut.
    pub write_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest wait for requests in progress after the shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

impl ServeOptions {
    /// Reads `HTTP_HEADER_READ_TIMEOUT` and `HTTP_WRITE_TIMEOUT` (whole
    /// seconds, 1 to 300) and `HTTP_MAX_CONNECTIONS` (1 to 65536).
    pub fn from_env(env: &mut Env<'_>) -> Self {
        let seconds = "a whole number of seconds from 1 to 300";
        let header_read = bounded(
            env,
            HTTP_HEADER_READ_TIMEOUT,
            HEADER_READ_TIMEOUT.as_secs(),
            1..=300,
            seconds,
        );
        let write = bounded(
            env,
            HTTP_WRITE_TIMEOUT,
            WRITE_TIMEOUT.as_secs(),
            1..=300,
            seconds,
        );
        let max_connections = bounded(
            env,
            HTTP_MAX_CONNECTIONS,
            MAX_CONNECTIONS as u64,
            1..=65_536,
            "a whole number from 1 to 65536",
        );
        Self {
            header_read_timeout: Duration::from_secs(header_read),
            write_timeout: Duration::from_secs(write),
            max_connections: usize::try_from(max_connections).unwrap_or(MAX_CONNECTIONS),
            ..Self::default()
        }
    }
}

/// A whole number in `range`, else a recorded problem and `default`.
fn bounded(
    env: &mut Env<'_>,
    variable: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    expected: &str,
) -> u64 {
    let value = env.parse(variable, default, expected);
    if range.contains(&value) {
        value
    } else {
        env.problem(variable, Some(value.to_string()), expected);
        default
    }
}

/// Why serving HTTP failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] io::Error),
}

impl ServeError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "Bind",
            Self::Serve(_) => "Serve",
        }
    }
}

/// Kernel send buffer of every connection (the kernel doubles it for its
/// bookkeeping). Fixed instead of auto-tuned (up to 4 MiB per socket on
/// Linux): a response a client does not read stays in our memory, where the
/// write timeout can drop it, instead of several MiB per connection in the
/// kernel that nothing bounds. 256 KiB keeps a LAN or loopback link busy.
pub const SEND_BUFFER_BYTES: u32 = 256 * 1024;

/// Pending connections the kernel keeps for the accept loop.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr`; accepted connections inherit [`SEND_BUFFER_BYTES`].
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    let bind = || -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_send_buffer_size(SEND_BUFFER_BYTES)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `router` with the default [`ServeOptions`] until `shutdown`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(listener, router, shutdown, ServeOptions::default()).await
}

/// Serves `router` until `shutdown` resolves, then stops accepting, closes
/// connections without a request in progress and lets the others finish for
/// at most `options.drain_timeout`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let draining = CancellationToken::new();
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, connections wait in the listen backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // Never closed.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let connection = serve_connection(
            builder.clone(),
            ConnectionIo::new(stream, options.write_timeout),
            router.clone(),
            draining.clone(),
        );
        connections.spawn(async move {
            connection.await;
            drop(slot);
        });
    }
    drop(listener);
    draining.cancel();
    connections.close();
    if tokio::time::timeout(options.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = options.drain_timeout.as_secs(),
            "in-flight requests did not finish in time"
        );
    }
    Ok(())
}

/// Accept errors that concern one connection only (it went away before we
/// took it): accept again at once.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes. After the shutdown signal, answers
/// close it, and a client still sending a request's headers is cut.
async fn serve_connection(
    builder: hyper::server::conn::http1::Builder,
    io: ConnectionIo<tokio::net::TcpStream>,
    router: Router,
    draining: CancellationToken,
) {
    let active = Arc::new(AtomicUsize::new(0));
    // Set by every read, cleared when a response is done: set while nothing is
    // active means part of the next request arrived.
    let input = Arc::clone(&io.input);
    let service = {
        let active = Arc::clone(&active);
        let input = Arc::clone(&input);
        let draining = draining.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = ActiveRequest::start(&active, &input);
            let router = router.clone();
            let draining = draining.clone();
            async move {
                let mut response = router.oneshot(request.map(Body::new)).await?;
                if draining.is_cancelled() {
                    // hyper closes the connection after this answer.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                // The guard lives until the response body is sent (or dropped).
                Ok::<_, std::convert::Infallible>(response.map(|body| GuardedBody {
                    body,
                    _guard: guard,
                }))
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            log_connection_end(result);
            return;
        }
        () = draining.cancelled() => {}
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                log_connection_end(result);
                return;
            }
            () = tokio::time::sleep(IDLE_GRACE) => {
                if active.load(Ordering::Acquire) == 0 && input.load(Ordering::Acquire) {
                    // A client still sending its headers (or a request hyper
                    // did not start in IDLE_GRACE): close now instead of
                    // holding shutdown until the header timeout.
                    return;
                }
            }
        }
    }
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // Header timeouts, resets and parse errors: the client's doing.
        tracing::debug!(%error, "connection closed with an error");
    }
}

/// Counts a request as in progress from its dispatch until its response body
/// is done; then marks the connection as having no input of a next request.
struct ActiveRequest {
    active: Arc<AtomicUsize>,
    input: Arc<AtomicBool>,
}

impl ActiveRequest {
    fn start(active: &Arc<AtomicUsize>, input: &Arc<AtomicBool>) -> Self {
        active.fetch_add(1, Ordering::AcqRel);
        Self {
            active: Arc::clone(active),
            input: Arc::clone(input),
        }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        // Cleared before the count drops, so "nothing active and input seen"
        // only ever means bytes read after this response.
        self.input.store(false, Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's stream: notes every read of at least one byte in `input`
/// (for the shutdown rules) and bounds the time a response takes to write.
///
/// The write clock starts at the first write after the previous flush (hyper
/// flushes once a response, or a chunk of a streamed body, is in the
/// socket) and stops at the next flush. While writes are blocked (the client
/// does not read) a timer runs to the deadline; then writes fail with
/// `TimedOut` and hyper closes the connection, dropping the response. The
/// timer is touched only when a write blocks, not per response.
pub struct ConnectionIo<S> {
    inner: S,
    input: Arc<AtomicBool>,
    write_timeout: Duration,
    /// When the response being written started, if one is.
    writing_since: Option<Instant>,
    /// Wakes a blocked writer at the deadline; created on the first block.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> ConnectionIo<S> {
    /// Wraps `inner` with a write deadline of `write_timeout` per response.
    pub fn new(inner: S, write_timeout: Duration) -> Self {
        Self {
            inner,
            input: Arc::new(AtomicBool::new(false)),
            write_timeout,
            writing_since: None,
            timer: None,
        }
    }

    /// Starts the write clock unless a response is already being written.
    fn start_writing(&mut self) {
        if self.writing_since.is_none() {
            self.writing_since = Some(Instant::now());
        }
    }

    /// A write blocked: `Pending` until the deadline (the timer wakes the
    /// task), then the `TimedOut` error.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = self.writing_since.unwrap_or_else(Instant::now) + self.write_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the response was not written within the write timeout",
            ))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnectionIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.input.store(true, Ordering::Release);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnectionIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.start_writing();
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.start_writing();
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.writing_since = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.writing_since.is_some() => self.blocked(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as active.
struct GuardedBody {
    body: Body,
    /// Held for its `Drop`.
    _guard: ActiveRequest,
}

impl hyper::body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::ConnectionIo;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_response_the_client_does_not_read_is_cut_at_the_deadline() {
        // The client's side holds 1 KiB and reads nothing.
        let (server, _client) = tokio::io::duplex(1024);
        let mut io = ConnectionIo::new(server, TIMEOUT);
        let error = io.write_all(&[b'x'; 64 * 1024]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn each_flushed_response_gets_its_own_deadline() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut io = ConnectionIo::new(server, TIMEOUT);
        let mut buf = [0; 512];
        // Many small responses, each read at once, over far longer than
        // the deadline: none is cut.
        for _ in 0..10 {
            io.write_all(&buf).await.unwrap();
            io.flush().await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(TIMEOUT / 2).await;
        }
        // A response read slowly but completely within the deadline passes.
        let reader = tokio::spawn(async move {
            let mut all = vec![0; 4096];
            for chunk in all.chunks_mut(512) {
                tokio::time::sleep(TIMEOUT / 10).await;
                client.read_exact(chunk).await.unwrap();
            }
            client
        });
        io.write_all(&[b'y'; 4096]).await.unwrap();
        io.flush().await.unwrap();
        reader.await.unwrap();
    }
}
