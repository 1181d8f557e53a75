//! Graceful shutdown: what asks the proxy to stop, and how long open requests may finish.
//!
//! On the signal the server stops accepting connections and lets open requests complete. Streams
//! can last minutes, so draining is bounded by [`DRAIN_GRACE`]; after it the remaining requests
//! are dropped, which also cancels their upstream requests.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

/// How long open requests may run on after the shutdown signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

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

/// Serves `app` until `stop` resolves, then lets open requests finish for at most
/// [`DRAIN_GRACE`].
pub(crate) async fn serve_draining(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        stop.await;
        tracing::info!("shutting down: no new connections, draining open requests");
        // The receiver lives until this function returns; nothing to do if it is gone.
        let _ = stopping_tx.send(true);
    };
    // Stream events are small writes that must leave at once; Nagle's algorithm would hold them.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    // axum's graceful shutdown waits for every open request, and a stream may last minutes.
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    let drain_deadline = async move {
        if stopping_rx.wait_for(|stopping| *stopping).await.is_err() {
            // The server ended without a signal; its own result decides.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        result = server => result,
        () = drain_deadline => {
            tracing::warn!("requests still open {DRAIN_GRACE:?} after the shutdown signal; dropping them");
            Ok(())
        }
    }
}
