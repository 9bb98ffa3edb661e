//! The running server: [`FakeUpstream`], its accept loop and the HTTP/1.1 connections.
//!
//! Connections are served with hyper directly instead of `axum::serve` because the fake must be
//! able to drop a TCP connection without answering ([`crate::Reply::close`]); each connection gets
//! a [`ConnCtl`] (visible to handlers as a request extension) whose `close` ends that connection's
//! task, which drops the socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::state::{RecordedRequest, Shared};
use crate::{admin, chat, FakeConfig, Reply};

/// Largest request body accepted; long conversations with reasoning get big.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Per-connection control handed to handlers.
#[derive(Clone, Debug)]
pub(crate) struct ConnCtl {
    close: Arc<Notify>,
}

impl ConnCtl {
    /// End this connection without writing anything more.
    pub fn close(&self) {
        // notify_one stores a permit, so this works even before the connection task waits.
        self.close.notify_one();
    }
}

/// A running fake OpenRouter. Dropping it (or [`FakeUpstream::shutdown`]) stops the server and
/// drops every open connection.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Start on `127.0.0.1` with an OS-chosen port.
    pub async fn start(config: FakeConfig) -> io::Result<FakeUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        FakeUpstream::start_on(listener, config).await
    }

    /// Start on an already bound listener (the binary uses this for `--bind`).
    pub async fn start_on(listener: TcpListener, config: FakeConfig) -> io::Result<FakeUpstream> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, router(shared.clone()), stopped));
        Ok(FakeUpstream {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v1`: the value for the service's `--upstream-url`.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/api/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// Queue a scripted reply; replies are consumed first in, first out, one per request.
    pub fn push(&self, reply: Reply) {
        self.shared.push(reply);
    }

    /// Every chat-completions request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Switch strict mode (see the crate docs) on or off.
    pub fn set_strict(&self, strict: bool) {
        self.shared.set_strict(strict);
    }

    /// Clear queued replies, recorded requests and strict mode's memory (the flag stays).
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stop the server and wait until every connection is closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        // The accept loop aborts its connections when it sees this (or when the sender is gone).
        let _ = self.stop.send(true);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/chat/completions", post(chat::chat_completions))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(admin::routes())
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        chat::error_body(404, "Not Found"),
    )
}

async fn accept_loop(listener: TcpListener, router: Router, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        // A dropped sender counts as a stop, hence the `is_err`.
        let stop = async { stopped.wait_for(|stop| *stop).await.is_err() };
        tokio::select! {
            _ = stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, router: Router) {
    // SSE events are small writes; without NODELAY they could sit in the kernel waiting for ACKs.
    let _ = stream.set_nodelay(true);
    let ctl = ConnCtl {
        close: Arc::new(Notify::new()),
    };
    let close = ctl.close.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ctl.clone());
        router.clone().oneshot(request)
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = close.notified() => {}
    }
}
