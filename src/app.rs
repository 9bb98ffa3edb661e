//! The application: shared state, start-up (database, migrations, the sweep of turns whose
//! process died) and `serve(listener, shutdown)`, which tests call on a port-0 listener.

use std::future::Future;
use std::sync::Arc;

use std::future::IntoFuture;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::auth::Auth;
use crate::config::Config;
use crate::domain::context::Defaults;
use crate::storage::Storage;
use crate::upstream::UpstreamClient;

/// What every request handler and running turn shares. Cloned for each request (axum hands
/// each handler and middleware its own copy), so it is one `Arc`: a clone is one reference
/// count, not one per service inside (about a dozen, and a URL copied).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub config: Arc<Config>,
    pub defaults: Arc<Defaults>,
    pub storage: Storage,
    pub upstream: UpstreamClient,
    /// Running turns: they outlive their requests, and shutdown waits for them.
    pub turns: TaskTracker,
    /// The threads this process is running a turn on (answered 409 without the database).
    pub running: crate::turns::RunningThreads,
    pub auth: Arc<Auth>,
}

impl AppState {
    /// Opens the database (applying migrations) and builds the upstream client.
    pub async fn build(config: Config) -> Result<Self, String> {
        crate::telemetry::metrics::install();
        let storage = Storage::connect(&config.database_url, config.durable)
            .await
            .map_err(|e| format!("cannot open the database {}: {e}", config.database_url))?
            .with_context_cache(config.context_cache);
        let interrupted = storage
            .interrupt_abandoned_turns()
            .await
            .map_err(|e| format!("cannot sweep abandoned turns: {e}"))?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "marked turns of a stopped process as interrupted"
            );
        }
        let upstream = UpstreamClient::new(&config)?;
        let config_rate_limit = config.rate_limit_per_minute;
        if !upstream.is_configured() {
            tracing::warn!(
                "OPENROUTER_API_KEY is not set: turns will answer 503 upstream_not_configured"
            );
        }
        Ok(Self(Arc::new(Services {
            defaults: Arc::new(Defaults {
                model: config.default_model.clone(),
                reasoning: config.default_reasoning.clone(),
            }),
            config: Arc::new(config),
            storage,
            upstream,
            turns: TaskTracker::new(),
            running: crate::turns::RunningThreads::default(),
            auth: Arc::new(Auth::new(config_rate_limit)),
        })))
    }
}

/// Serves until `shutdown` resolves; then stops accepting, lets requests and running turns
/// finish within the configured grace period, and returns. Turns still running after it are
/// marked `interrupted` at the next start.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let storage = state.storage.clone();
    let turns = state.turns.clone();
    let grace = state.config.shutdown_grace;
    // Dropped (and so stopped) when `serve` returns.
    let _trimming = AbortOnDropHandle::new(tokio::spawn(crate::memory::release_when_idle(
        turns.clone(),
    )));
    let app = crate::http::router(state);
    // Without TCP_NODELAY, small responses can wait ~40 ms for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // When the stop was asked for: the grace period counts from then, however long the
    // connections take to drain.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(Some(tokio::time::Instant::now()));
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    let mut asked = stopping.clone();
    let grace_over = async {
        match asked.wait_for(Option::is_some).await.map(|at| *at) {
            Ok(Some(at)) => tokio::time::sleep_until(at + grace).await,
            // No stop was asked for: the server's own end decides.
            _ => std::future::pending().await,
        }
    };
    let deadline = tokio::select! {
        result = server => {
            result?;
            let asked_at = *stopping.borrow();
            asked_at.unwrap_or_else(tokio::time::Instant::now) + grace
        }
        () = grace_over => tokio::time::Instant::now(),
    };
    turns.close();
    if tokio::time::timeout_at(deadline, turns.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = turns.len(),
            "shutdown grace period over: turns still running will read interrupted"
        );
    }
    storage.close().await;
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}
