//! Graceful shutdown: what asks the proxy to stop, and how long open requests may finish.
//!
//! On the signal the server stops accepting connections and lets open requests complete. Streams
//! can last minutes, so draining is bounded by a grace period (`[server] shutdown_grace_ms`,
//! 10 s by default); after it the remaining requests are dropped, which also cancels their
//! upstream requests.
//!
//! An upgraded connection (a WebSocket, `/api/ws`) is no longer hyper's to close: the `Drain`
//! tells it to refuse new requests and close with `1001` once its open ones have ended, or at
//! once when the grace period is over, and the drain waits for it like for any request.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::{Listener, ListenerExt};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Where a graceful shutdown stands, as long-lived connections (WebSockets) see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainPhase {
    /// Serving.
    Serving,
    /// Stopping: open requests may finish, new ones are refused.
    Draining,
    /// The grace period is over: close now.
    Cut,
}

/// What the drain tells upgraded connections, which hyper no longer serves and so cannot close
/// itself, and how it waits for them.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    phase: std::sync::Arc<watch::Sender<DrainPhase>>,
    open: TaskTracker,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            phase: std::sync::Arc::new(watch::Sender::new(DrainPhase::Serving)),
            open: TaskTracker::new(),
        }
    }
}

impl Drain {
    /// Follows the drain's phase.
    pub(crate) fn watch(&self) -> watch::Receiver<DrainPhase> {
        self.phase.subscribe()
    }

    /// Held by an upgraded connection for as long as it is open: the drain waits for it.
    pub(crate) fn hold(&self) -> TaskTrackerToken {
        self.open.token()
    }

    fn enter(&self, phase: DrainPhase) {
        self.phase.send_replace(phase);
    }
}

/// How long WebSockets get to send their close frame once the grace period is over.
const SOCKETS_CLOSE: Duration = Duration::from_secs(1);

/// Resolves on Ctrl-C, or SIGTERM (what container runtimes send) on Unix.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Serves `app` until `stop` resolves, then lets open requests finish for at most `grace`.
///
/// Each connection is served by hyper's HTTP/1 connection directly rather than through
/// `axum::serve`, which costs an open connection (an open stream, above all) far more memory:
/// `axum::serve` copies the whole router for every connection (a boxed copy of the layer stack
/// for each route: 19 KB with today's routes), and its protocol sniffing hands hyper a first read
/// of 24 bytes, after which hyper grows its read buffer from 8 to 16 KB (`cargo xtask bench
/// memory`). The proxy speaks HTTP/1.1 only (axum is built without HTTP/2), so nothing is lost.
pub(crate) async fn serve_draining(
    listener: TcpListener,
    app: Router,
    grace: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = watch::channel(false);
    // Stream events are small writes that must leave at once; Nagle's algorithm would hold them.
    // (axum's listener also rides out accept errors such as running out of descriptors.)
    let mut listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    // Every connection task holds a receiver, so the sender learns when the last one has ended.
    let (open_tx, open_rx) = watch::channel(());
    let mut drain_started = stopping_rx.clone();
    let sockets = drain.clone();
    let server = async move {
        let mut stop = std::pin::pin!(stop);
        loop {
            let (tcp, _) = tokio::select! {
                accepted = Listener::accept(&mut listener) => accepted,
                () = &mut stop => break,
            };
            // A clone of the router is a reference count; its routes are shared.
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(serve_connection(
                tcp,
                service,
                stopping_rx.clone(),
                open_rx.clone(),
            ));
        }
        tracing::info!("shutting down: no new connections, draining open requests");
        drop(listener);
        drop(open_rx);
        // Cannot fail: `drain_started` still listens.
        let _ = stopping_tx.send(true);
        sockets.enter(DrainPhase::Draining);
        sockets.open.close();
        open_tx.closed().await;
        sockets.open.wait().await;
    };
    let sockets = drain;
    // A stream may last minutes: the drain is cut off after the grace period.
    let drain_deadline = async move {
        if drain_started.wait_for(|stopping| *stopping).await.is_err() {
            // The server ended without a signal.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = server => {}
        () = drain_deadline => {
            tracing::warn!("requests still open {grace:?} after the shutdown signal; dropping them");
            // WebSockets close themselves (1001), which takes a moment.
            sockets.enter(DrainPhase::Cut);
            let _ = tokio::time::timeout(SOCKETS_CLOSE, sockets.open.wait()).await;
        }
    }
    Ok(())
}

/// Serves one connection until the client closes it, or, once `stopping` turns true, until its
/// request in progress is answered. `open` is held for as long as the connection is served.
async fn serve_connection(
    tcp: TcpStream,
    service: TowerToHyperService<Router>,
    mut stopping: watch::Receiver<bool>,
    open: watch::Receiver<()>,
) {
    // Upgrades (`/api/ws`) are served as `axum::serve` serves them; the upgraded connection then
    // lives in a task of its own, which the `Drain` follows.
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let stop_asked = async {
        // An error means the server itself is gone: stop as well.
        while stopping.changed().await.is_ok() && !*stopping.borrow() {}
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop_asked => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Clients that go away mid-request are routine, as they are for `axum::serve`.
    if let Err(error) = result {
        tracing::trace!(%error, "connection ended with an error");
    }
    drop(open);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use tokio::sync::{Notify, oneshot};

    use super::serve_draining;

    /// A request in progress when the signal comes is answered; an idle keep-alive connection does
    /// not hold the drain up; and no connection is accepted after the signal.
    #[tokio::test]
    async fn the_signal_lets_requests_in_progress_finish_and_closes_the_rest() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (in_slow, out_slow) = (Arc::clone(&entered), Arc::clone(&release));
        let app = Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route(
                "/slow",
                get(move || async move {
                    in_slow.notify_one();
                    out_slow.notified().await;
                    "slow"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_draining(
            listener,
            app,
            Duration::from_secs(10),
            async {
                let _ = stopped.await;
            },
            super::Drain::default(),
        ));
        let client = reqwest::Client::new();
        // Leaves an idle keep-alive connection in the client's pool.
        let fast = client
            .get(format!("http://{addr}/fast"))
            .send()
            .await
            .unwrap();
        assert_eq!(fast.text().await.unwrap(), "fast");
        let slow = tokio::spawn(client.get(format!("http://{addr}/slow")).send());
        entered.notified().await;

        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!server.is_finished(), "the drain waits for the request");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no new connections after the signal"
        );
        release.notify_one();
        let slow = slow.await.unwrap().unwrap();
        assert_eq!(slow.text().await.unwrap(), "slow");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stopped once the request was answered")
            .unwrap()
            .unwrap();
    }
}
