//! The HTTP server under the router: one port for HTTP/1.1 and h2c, with the protections a
//! server reachable by careless and hostile clients needs, which `axum::serve` does not give:
//!
//! - a header timeout: from the first byte of an HTTP/1 request to the end of its headers
//!   (`--server.http-read-header-timeout`), so a client dribbling headers is disconnected
//!   (HTTP/2 multiplexes and pings: its connections have the idle timeout only);
//! - an idle timeout: a connection with no request in flight and nothing written for
//!   `--server.http-idle-timeout` is closed (longer than agents' keep-alive pools, so they
//!   normally close first);
//! - a connection limit below the open-file limit (`--server.http-conn-limit`), so a flood of
//!   connections cannot take the descriptors the WAL, block files and the catalog need; at the
//!   limit, idle connections are closed to make room and new ones wait in the backlog;
//! - accept errors (out of descriptors) back off instead of spinning;
//! - graceful shutdown: stop accepting, let requests in flight finish, then close.
//!
//! Request bodies have their own deadline where they are read (`rpc::read_body`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// What the server allows a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From the first byte of a request to the end of its headers (HTTP/1).
    pub header_timeout: Option<Duration>,
    /// With no request in flight.
    pub idle_timeout: Option<Duration>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
}

/// How long a connection asked to close may take to finish what it is doing when the server
/// is not shutting down (an idle connection closes at once).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept: the usual cause, no descriptors left, does not clear at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The default connection limit: three quarters of the soft open-file limit, leaving the rest
/// to the WAL, blocks, the catalog and outgoing connections; 1,024 where the limit cannot be
/// read.
pub fn default_connection_limit() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(n) => (n / 4 * 3).max(1),
        None => 1024,
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(
        limits
            .max_connections
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS),
    ));
    let shed = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our own watchdog times headers out from the first byte of a request, not from the
    // moment a keep-alive connection starts waiting, as hyper's would.
    builder.http1().header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = slot(&permits, &shed) => permit,
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(
                        stream,
                        router.clone(),
                        builder.clone(),
                        limits,
                        Connection {
                            stop: stop_rx.clone(),
                            shed: Arc::clone(&shed),
                            drain,
                            _permit: permit,
                        },
                    ));
                }
                // A connection that went away before it was accepted: take the next one.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown timeout; closing them"
        );
    }
}

/// A connection slot; at the limit, idle connections are asked to close until one frees.
async fn slot(permits: &Arc<Semaphore>, shed: &Notify) -> OwnedSemaphorePermit {
    if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
        return permit;
    }
    tracing::debug!("connection limit reached; closing idle connections");
    loop {
        shed.notify_waiters();
        tokio::select! {
            permit = Arc::clone(permits).acquire_owned() => {
                return permit.expect("the semaphore is never closed");
            }
            () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
        }
    }
}

/// What a connection task gets besides its socket.
struct Connection {
    stop: watch::Receiver<bool>,
    shed: Arc<Notify>,
    drain: Duration,
    /// Returned to the limit when the connection ends.
    _permit: OwnedSemaphorePermit,
}

/// Why a connection's next deadline matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Nothing due: look again when the connection's state changes.
    None,
    /// A request's headers are late: close at once.
    Headers,
    /// Idle too long: close gracefully.
    Idle,
    /// Closing took too long: drop it.
    Closing,
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    mut connection: Connection,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Observed {
        inner: stream,
        activity: Arc::clone(&activity),
        preface: Some(Vec::new()),
    });
    let service = Tracked {
        router,
        activity: Arc::clone(&activity),
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // When the connection was asked to close, and how long it has.
    let mut closing: Option<(Instant, Duration)> = None;
    loop {
        let (at, why) = match closing {
            // A response still being written keeps its connection until it is sent.
            Some((since, grace)) => (since.max(activity.last_write()) + grace, Deadline::Closing),
            None => activity.deadline(&limits),
        };
        let shed = connection.shed.notified();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = connection.stop.changed(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some((Instant::now(), connection.drain));
            }
            () = shed, if closing.is_none() => {
                if activity.is_idle() {
                    conn.as_mut().graceful_shutdown();
                    closing = Some((Instant::now(), CLOSE_GRACE));
                }
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(at.into()), if why != Deadline::None => match why {
                Deadline::Headers => {
                    tracing::debug!("closing a connection: request headers not received in time");
                    return;
                }
                Deadline::Idle => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some((Instant::now(), CLOSE_GRACE));
                }
                Deadline::Closing | Deadline::None => return,
            },
        }
    }
}

/// What a connection is doing, shared by its socket, its service and its watchdog.
#[derive(Debug)]
struct Activity {
    state: Mutex<State>,
    /// Wakes the watchdog when the state changes.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// When the first byte of an HTTP/1 request arrived, until its headers are complete.
    request_started: Option<Instant>,
    /// Since when no request has been in flight.
    idle_since: Instant,
    /// When bytes were last written: a response outlives its request in flight (hyper drops
    /// the body once its last chunk is queued, not sent).
    last_write: Instant,
    /// HTTP/2 multiplexes and pings: bytes on an idle connection do not start a request.
    h2: bool,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                request_started: None,
                idle_since: Instant::now(),
                last_write: Instant::now(),
                h2: false,
            }),
            changed: Notify::new(),
        }
    }
}

impl Activity {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("connection state lock")
    }

    fn is_idle(&self) -> bool {
        let s = self.state();
        s.in_flight == 0 && s.request_started.is_none()
    }

    fn deadline(&self, limits: &ConnectionLimits) -> (Instant, Deadline) {
        let s = self.state();
        let none = (Instant::now(), Deadline::None);
        if s.in_flight > 0 {
            return none;
        }
        if let (Some(started), Some(timeout)) = (s.request_started, limits.header_timeout) {
            return (started + timeout, Deadline::Headers);
        }
        match limits.idle_timeout {
            Some(timeout) => (s.idle_since.max(s.last_write) + timeout, Deadline::Idle),
            None => none,
        }
    }

    fn last_write(&self) -> Instant {
        self.state().last_write
    }

    fn wrote(&self) {
        self.state().last_write = Instant::now();
    }

    /// Bytes arrived; `h2` once the connection's preface told HTTP/2 from HTTP/1.
    fn read(&self, h2: Option<bool>) {
        let mut s = self.state();
        if let Some(h2) = h2 {
            s.h2 = h2;
            if h2 {
                s.request_started = None;
            }
        }
        if !s.h2 && s.in_flight == 0 && s.request_started.is_none() {
            s.request_started = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    fn begin_request(&self) {
        let mut s = self.state();
        s.in_flight += 1;
        s.request_started = None;
        drop(s);
        self.changed.notify_one();
    }

    fn end_request(&self) {
        let mut s = self.state();
        s.in_flight -= 1;
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
        }
        drop(s);
        self.changed.notify_one();
    }
}

/// The HTTP/2 connection preface's first line, which tells h2c from HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The socket, telling [`Activity`] when a request's first bytes arrive and when bytes go out.
struct Observed {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// The connection's first bytes, until they tell HTTP/2 from HTTP/1 (reads may be short).
    preface: Option<Vec<u8>>,
}

impl Observed {
    /// Whether the connection is HTTP/2, once its first bytes tell.
    fn protocol(&mut self, bytes: &[u8]) -> Option<bool> {
        let preface = self.preface.as_mut()?;
        let want = H2_PREFACE.len() - preface.len();
        preface.extend_from_slice(&bytes[..bytes.len().min(want)]);
        let decided = if !H2_PREFACE.starts_with(preface) {
            Some(false)
        } else if preface.len() == H2_PREFACE.len() {
            Some(true)
        } else {
            None
        };
        if decided.is_some() {
            self.preface = None;
        }
        decided
    }
}

impl AsyncRead for Observed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let h2 = self.protocol(&buf.filled()[before..]);
            self.activity.read(h2);
        }
        result
    }
}

impl AsyncWrite for Observed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router, counting requests in flight until their response body is sent (or dropped).
#[derive(Clone)]
struct Tracked {
    router: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<http::Request<Incoming>> for Tracked {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let guard = InFlight::begin(&self.activity);
        let mut router = self.router.clone();
        Box::pin(async move {
            // axum's router is always ready: no poll_ready needed before call.
            let response =
                tower_service::Service::call(&mut router, request.map(Body::new)).await?;
            Ok(response.map(|body| {
                Body::new(GuardedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A request in flight, ended when dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.begin_request();
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
