//! Putting a decided answer on the wire. A [`Plan`] is a status, headers and a list of body
//! [`Step`]s; each step's bytes are flushed on their own (hyper flushes whenever the body stream
//! is pending), so clients observe padding, SSE events, stalls and cuts as real traffic has them.
//! Answers without a response at all (hang, close) are handled here too.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream;

use crate::server::ConnCtl;

/// What happens before (or instead of) the response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Respond,
    /// Never answer.
    Hang,
    /// Drop the TCP connection without a response.
    Close,
}

/// One piece of a response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Bytes(Bytes),
    Sleep(Duration),
    /// Abort the connection mid-body (the chunked encoding is never terminated).
    Cut,
    /// Stop sending without ending the body.
    Stall,
}

/// A fully decided answer.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub head: Head,
    /// Wait before the head.
    pub delay: Duration,
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub steps: Vec<Step>,
}

/// Pause before a cut, long enough for hyper to write out what it buffered.
const FLUSH_PAUSE: Duration = Duration::from_millis(10);

pub(crate) const JSON: &str = "application/json";
pub(crate) const SSE: &str = "text/event-stream";

impl Plan {
    /// A JSON answer sent in one piece.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Plan {
        Plan {
            head: Head::Respond,
            delay: Duration::ZERO,
            status,
            content_type: JSON,
            headers: Vec::new(),
            steps: vec![Step::Bytes(body.into())],
        }
    }

    /// No response head at all.
    pub fn silent(head: Head, delay: Duration) -> Plan {
        Plan {
            head,
            delay,
            status: 0,
            content_type: JSON,
            headers: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// The status recorded for this answer: 0 when no status line is ever sent.
    pub fn recorded_status(&self) -> u16 {
        match self.head {
            Head::Respond => self.status,
            Head::Hang | Head::Close => 0,
        }
    }
}

/// Execute a plan for one request.
pub(crate) async fn respond(plan: Plan, conn: Option<ConnCtl>) -> Response {
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    match plan.head {
        Head::Respond => build(plan),
        Head::Hang => std::future::pending().await,
        Head::Close => {
            if let Some(conn) = conn {
                conn.close();
            }
            // The connection task drops this future together with the socket.
            std::future::pending().await
        }
    }
}

fn build(plan: Plan) -> Response {
    // An out-of-range scripted status must not panic; 500 is the least surprising stand-in.
    let status = StatusCode::from_u16(plan.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match plan.steps.as_slice() {
        [Step::Bytes(bytes)] => Body::from(bytes.clone()),
        [] => Body::empty(),
        _ => Body::from_stream(stream::unfold(plan.steps.into_iter(), next_chunk)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(plan.content_type));
    if plan.content_type == SSE {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    for (name, value) in &plan.headers {
        // Scripted headers that are not valid HTTP are skipped rather than failing the reply.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            if name == CONTENT_TYPE {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
    }
    response
}

/// Produce the next body chunk, sleeping through delays; a cut ends the body with an error, which
/// makes hyper abort the connection.
async fn next_chunk(
    mut steps: std::vec::IntoIter<Step>,
) -> Option<(Result<Bytes, io::Error>, std::vec::IntoIter<Step>)> {
    loop {
        match steps.next()? {
            Step::Bytes(bytes) => return Some((Ok(bytes), steps)),
            Step::Sleep(duration) => tokio::time::sleep(duration).await,
            Step::Cut => {
                // hyper drops its unflushed buffer when the body fails; pausing first makes it
                // flush, so the client receives everything written before the cut.
                tokio::time::sleep(FLUSH_PAUSE).await;
                let error = io::Error::new(io::ErrorKind::ConnectionAborted, "scripted cut");
                return Some((Err(error), steps));
            }
            Step::Stall => {
                let never: Infallible = std::future::pending().await;
                match never {}
            }
        }
    }
}
