//! A lean blocking HTTP/1.1 client: one keep-alive hyper connection driven by the calling
//! thread's own current-thread runtime, so each load-generating client is one OS thread and
//! its timings include no cross-thread hand-off.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// One answer, fully read.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// From just before the request was written to the last body byte.
    pub elapsed: Duration,
}

impl Answer {
    /// The body as text (lossy), cut to `max` bytes, for error messages.
    pub fn snippet(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        match text.char_indices().nth(max) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.into_owned(),
        }
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("answer is not JSON ({e}): {}", self.snippet(200)))
    }
}

/// Whose event stream is being read: the service's (`event: chunk` relays each upstream chunk)
/// or the upstream's own (`data: {...}` per chunk, then `data: [DONE]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Service,
    Upstream,
}

/// A streamed answer with the arrival time of every chunk event.
#[derive(Debug, Default)]
pub struct StreamAnswer {
    pub status: u16,
    /// Arrival of each chunk event, measured from just before the request was written.
    pub chunk_times: Vec<Duration>,
    /// The stream ended as it should: `turn.completed` (service) or `data: [DONE]` (upstream).
    pub completed: bool,
    /// `turn.failed` data, or the body of a non-200 answer.
    pub failure: Option<String>,
    pub elapsed: Duration,
}

pub struct Client {
    rt: Runtime,
    addr: SocketAddr,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Client {
    /// A client of `addr`; connects lazily (and again after a connection failed).
    pub fn new(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a client runtime: {e}"))?;
        Ok(Client {
            rt,
            addr,
            host: addr.to_string(),
            sender: None,
            timeout,
        })
    }

    pub fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.send(Method::GET, path, None)
    }

    pub fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Result<Answer, String> {
        self.send(Method::POST, path, Some(body.into()))
    }

    pub fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, String> {
        let request = self.request(method, path, body)?;
        let Client {
            rt,
            addr,
            sender,
            timeout,
            ..
        } = self;
        let result = rt.block_on(async {
            let sender = ready(sender, *addr).await?;
            tokio::time::timeout(*timeout, async {
                let start = Instant::now();
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("reading the answer failed: {e}"))?
                    .to_bytes();
                Ok(Answer {
                    status,
                    body,
                    elapsed: start.elapsed(),
                })
            })
            .await
            .map_err(|_| format!("no complete answer within {timeout:?}"))?
        });
        if result.is_err() {
            // The connection's state is unknown: start afresh next time.
            self.sender = None;
        }
        result
    }

    /// POSTs `body` and reads the answer as an event stream, timing each chunk event.
    pub fn stream(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        dialect: Dialect,
    ) -> Result<StreamAnswer, String> {
        let request = self.request(Method::POST, path, Some(body.into()))?;
        let Client {
            rt,
            addr,
            sender,
            timeout,
            ..
        } = self;
        let result = rt.block_on(async {
            let sender = ready(sender, *addr).await?;
            tokio::time::timeout(*timeout, async {
                let start = Instant::now();
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                let mut answer = StreamAnswer {
                    status: response.status().as_u16(),
                    ..StreamAnswer::default()
                };
                let mut body = response.into_body();
                let mut pending: Vec<u8> = Vec::new();
                let mut raw: Vec<u8> = Vec::new();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| format!("reading the stream failed: {e}"))?;
                    let arrived = start.elapsed();
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if answer.status != 200 {
                        raw.extend_from_slice(&data);
                        continue;
                    }
                    pending.extend_from_slice(&data);
                    while let Some(end) = find(&pending, b"\n\n") {
                        let event: Vec<u8> = pending.drain(..end + 2).collect();
                        classify(&event, dialect, arrived, &mut answer);
                    }
                }
                if answer.status != 200 {
                    answer.failure = Some(String::from_utf8_lossy(&raw).into_owned());
                }
                answer.elapsed = start.elapsed();
                Ok(answer)
            })
            .await
            .map_err(|_| format!("no complete stream within {timeout:?}"))?
        });
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.as_str());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("bad request {path}: {e}"))
    }
}

/// The connection, (re)connected if there is none or it closed, ready for a request.
async fn ready(
    slot: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
) -> Result<&mut SendRequest<Full<Bytes>>, String> {
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set_nodelay: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
        // Driven by this thread's runtime whenever a request is in progress.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        *slot = Some(sender);
    }
    let sender = slot.as_mut().ok_or_else(|| "no connection".to_owned())?;
    sender
        .ready()
        .await
        .map_err(|e| format!("connection to {addr} not usable: {e}"))?;
    Ok(sender)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sorts one SSE event (its text up to and including the blank line) into the answer.
fn classify(event: &[u8], dialect: Dialect, arrived: Duration, answer: &mut StreamAnswer) {
    let text = String::from_utf8_lossy(event);
    let mut name = None;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    match dialect {
        Dialect::Service => match name.as_deref() {
            Some("chunk") => answer.chunk_times.push(arrived),
            Some("turn.completed") => answer.completed = true,
            Some("turn.failed") => answer.failure = Some(data),
            _ => {}
        },
        Dialect::Upstream => {
            if data == "[DONE]" {
                answer.completed = true;
            } else if !data.is_empty() {
                answer.chunk_times.push(arrived);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_service_and_upstream_events() {
        let mut a = StreamAnswer::default();
        let t = Duration::from_millis(1);
        classify(
            b"event: turn.started\ndata: {}\n\n",
            Dialect::Service,
            t,
            &mut a,
        );
        classify(
            b"event: chunk\ndata: {\"a\":1}\n\n",
            Dialect::Service,
            t,
            &mut a,
        );
        classify(b":\n\n", Dialect::Service, t, &mut a);
        classify(
            b"event: turn.completed\ndata: {}\n\n",
            Dialect::Service,
            t,
            &mut a,
        );
        assert_eq!(a.chunk_times.len(), 1);
        assert!(a.completed);

        let mut b = StreamAnswer::default();
        classify(b": OPENROUTER PROCESSING\n\n", Dialect::Upstream, t, &mut b);
        classify(b"data: {\"a\":1}\n\n", Dialect::Upstream, t, &mut b);
        classify(b"data: [DONE]\n\n", Dialect::Upstream, t, &mut b);
        assert_eq!(b.chunk_times.len(), 1);
        assert!(b.completed);
    }
}
