//! The accept loop: at most `--web.max-connections` connections at once (more wait in the
//! kernel's backlog, so a flood of idle sockets cannot exhaust the process' open files),
//! `--web.read-header-timeout` for the TLS handshake and for each request's headers (which
//! also closes keep-alive connections idle that long), `--web.read-timeout` for a response the
//! client stops reading (see [`StallTimeout`]), HTTP/1.1 through hyper, optionally
//! inside TLS. On shutdown it stops accepting and lets requests in flight finish.
//!
//! axum's own `serve` has no connection limit, header timeout or TLS; hyper-util's
//! connection builder has the first two pieces, so this loop only puts them together.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use tower::ServiceExt;

use super::tls::{ClientCertificate, ReloadingTls};

pub struct ServeOptions {
    pub header_timeout: Duration,
    /// Longest a response may wait for the client to take more of it; a client that stops
    /// reading loses its connection (and frees its slot).
    pub write_stall_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<Arc<ReloadingTls>>,
    /// Longest shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

pub async fn serve(listener: TcpListener, app: Router, options: ServeOptions, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, watcher, header_timeout) = (app.clone(), graceful.watcher(), options.header_timeout);
        let stall = options.write_stall_timeout;
        match options.tls.clone() {
            None => {
                tokio::spawn(async move {
                    let stream = StallTimeout::new(stream, stall);
                    serve_connection(stream, app, header_timeout, watcher, ClientCertificate(false)).await;
                    drop(permit);
                });
            }
            Some(tls) => {
                tokio::spawn(async move {
                    // Reloading reads files: here, not in the accept loop.
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    let stream = StallTimeout::new(stream, stall);
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let verified = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                            serve_connection(tls, app, header_timeout, watcher, ClientCertificate(verified)).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?options.drain_timeout, "requests still in flight at shutdown were cut off");
    }
}

async fn serve_connection<I>(
    io: I,
    app: Router,
    header_timeout: Duration,
    watcher: Watcher,
    certificate: ClientCertificate,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(certificate);
        request
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A stream whose writes fail once they have waited `limit` for the peer to make room: hyper
/// stops reading a connection while its response cannot be written, so without this a client
/// that never reads would keep its connection (and a connection slot) forever.
struct StallTimeout<I> {
    inner: I,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> StallTimeout<I> {
    fn new(inner: I, limit: Duration) -> Self {
        StallTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `Pending` from the inner stream starts (or continues) the stall clock; anything else
    /// stops it.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        result: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        match result {
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StallTimeout<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StallTimeout<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, result)
    }
}
