//! The application: shared state, start-up (database, migrations, the sweep of turns whose
//! process died) and `serve(listener, shutdown)`, which tests call on a port-0 listener.

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::context::Defaults;
use crate::storage::Storage;
use crate::upstream::UpstreamClient;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub defaults: Arc<Defaults>,
    pub storage: Storage,
    pub upstream: UpstreamClient,
}

impl AppState {
    /// Opens the database (applying migrations) and builds the upstream client.
    pub async fn build(config: Config) -> Result<Self, String> {
        let storage = Storage::connect(&config.database_url)
            .await
            .map_err(|e| format!("cannot open the database {}: {e}", config.database_url))?;
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
        if !upstream.is_configured() {
            tracing::warn!(
                "OPENROUTER_API_KEY is not set: turns will answer 503 upstream_not_configured"
            );
        }
        Ok(Self {
            defaults: Arc::new(Defaults {
                model: config.default_model.clone(),
                reasoning: config.default_reasoning.clone(),
            }),
            config: Arc::new(config),
            storage,
            upstream,
        })
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests (and so running turns)
/// finish before returning.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let storage = state.storage.clone();
    let app = crate::http::router(state);
    // Without TCP_NODELAY, small responses can wait ~40 ms for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    storage.close().await;
    result
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
