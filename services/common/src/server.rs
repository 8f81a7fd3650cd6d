//! The HTTP/1.1 server of both services: binding, the accept loop, per-
//! connection limits and graceful shutdown.
//!
//! Served with hyper's HTTP/1 connection builder (not `axum::serve`) so that
//! every connection has a header-read timeout: a client that opens a
//! connection and sends no request, or only part of its headers, is cut after
//! [`ServeOptions::header_read_timeout`] and cannot hold file descriptors.
//! The timer also runs while a keep-alive connection waits for its next
//! request, so proxies must keep idle pooled connections for less than that
//! (the local nginx gateway keeps them 5 s).
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
//! hyper answers requests it cannot parse (400, 414 URI too long, 431 headers
//! too large) itself, with an empty body; [`JsonParseErrors`] gives those
//! answers the services' JSON error body. Nothing here knows about routes.

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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Env;

/// Variable setting the header-read timeout in seconds.
pub const HTTP_HEADER_READ_TIMEOUT: &str = "HTTP_HEADER_READ_TIMEOUT";
/// Default time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// Longest wait for requests in progress after the shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

impl ServeOptions {
    /// Reads `HTTP_HEADER_READ_TIMEOUT` (whole seconds, 1 to 300).
    pub fn from_env(env: &mut Env<'_>) -> Self {
        let expected = "a whole number of seconds from 1 to 300";
        let secs = env.parse(
            HTTP_HEADER_READ_TIMEOUT,
            HEADER_READ_TIMEOUT.as_secs(),
            expected,
        );
        let secs = if (1..=300).contains(&secs) {
            secs
        } else {
            env.problem(HTTP_HEADER_READ_TIMEOUT, Some(secs.to_string()), expected);
            HEADER_READ_TIMEOUT.as_secs()
        };
        Self {
            header_read_timeout: Duration::from_secs(secs),
            ..Self::default()
        }
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

/// Binds `addr`.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
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
    tokio::pin!(shutdown);
    loop {
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
        connections.spawn(serve_connection(
            builder.clone(),
            stream,
            router.clone(),
            draining.clone(),
        ));
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
    stream: tokio::net::TcpStream,
    router: Router,
    draining: CancellationToken,
) {
    let active = Arc::new(AtomicUsize::new(0));
    // Set by every read, cleared when a response is done: set while nothing is
    // active means part of the next request arrived.
    let input = Arc::new(AtomicBool::new(false));
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
    let io = TokioIo::new(MarkInput {
        inner: stream,
        input: Arc::clone(&input),
    });
    let connection = builder.serve_connection(JsonParseErrors::new(io), service);
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

/// A connection's stream that notes every read of at least one byte in
/// `input`.
struct MarkInput<S> {
    inner: S,
    input: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for MarkInput<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for MarkInput<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
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

/// Status lines hyper writes itself, with an empty body, for requests it
/// cannot parse; each with the JSON error text that replaces the empty body.
const PARSE_ERRORS: [(&[u8], &str); 3] = [
    (b" 400 ", "bad request: malformed HTTP"),
    (b" 414 ", "request URI too long"),
    (b" 431 ", "request header fields too large"),
];

/// The connection's I/O, rewriting hyper's automatic parse-error answers
/// (status line plus `content-length: 0`) into `{"error": "..."}` answers.
///
/// Only a response head with one of [`PARSE_ERRORS`]' statuses *and* an empty
/// body is rewritten: every error response of the services themselves has a
/// JSON body, so their answers never match. hyper closes the connection after
/// such an answer, so nothing is written after it.
pub struct JsonParseErrors<I> {
    inner: I,
    /// Rewritten bytes still to be written before anything else.
    pending: Vec<u8>,
    written: usize,
}

impl<I> JsonParseErrors<I> {
    /// Wraps the I/O of one connection.
    pub fn new(inner: I) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The JSON answer replacing `head` when it is one of hyper's automatic
/// parse-error answers.
fn rewrite_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let status_line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let status_line = &head[..status_line_end];
    if !status_line.starts_with(b"HTTP/1.") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let (_, message) = PARSE_ERRORS
        .iter()
        .find(|(code, _)| status_line.get(8..13) == Some(*code))?;
    let headers = &head[status_line_end..head.len() - 2];
    let lower = headers.to_ascii_lowercase();
    if !lower
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w == b"\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(status_line);
    for line in headers.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.to_ascii_lowercase().starts_with(b"content-length:") {
            continue;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\nconnection: close\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<I: hyper::rt::Write + Unpin> JsonParseErrors<I> {
    /// Writes what is pending; Ready(Ok) once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for JsonParseErrors<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for JsonParseErrors<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(rewritten) = rewrite_parse_error(buf) {
            self.pending = rewritten;
            // The caller's bytes are taken; the replacement goes out from
            // poll_pending (here, or on the next write, flush or shutdown).
            if let Poll::Ready(Err(error)) = self.poll_pending(cx) {
                return Poll::Ready(Err(error));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A lone head (no body) arrives as one slice: treat it as a write.
        if let [only] = bufs {
            return self.poll_write(cx, only);
        }
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_parse_error;

    #[test]
    fn hypers_empty_parse_error_answers_become_json() {
        for (code, reason) in [
            ("400", "Bad Request"),
            ("414", "URI Too Long"),
            ("431", "Request Header Fields Too Large"),
        ] {
            let head = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 22:00:00 GMT\r\n\r\n"
            );
            let out = String::from_utf8(rewrite_parse_error(head.as_bytes()).unwrap()).unwrap();
            let (head_out, body) = out.split_once("\r\n\r\n").unwrap();
            assert!(head_out.starts_with(&format!("HTTP/1.1 {code} {reason}\r\n")));
            assert!(head_out.contains("\r\ndate: Mon, 30 Nov 2026 22:00:00 GMT"));
            assert!(head_out.contains("\r\ncontent-type: application/json"));
            assert!(!head_out.contains("content-length: 0"));
            assert!(head_out.contains(&format!("\r\ncontent-length: {}", body.len())));
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(json["error"].as_str().unwrap().len() > 5, "{json}");
        }
    }

    #[test]
    fn the_services_own_answers_pass_untouched() {
        for head in [
            // A JSON 400 of a handler: it has a body.
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 25\r\n\r\n",
            // Other statuses, even without a body.
            "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            // Not a head at all (a body chunk).
            "{\"error\":\"x\"}",
            // A head without its end.
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        ] {
            assert!(rewrite_parse_error(head.as_bytes()).is_none(), "{head}");
        }
    }
}
