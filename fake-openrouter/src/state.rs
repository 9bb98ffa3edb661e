//! Shared mutable state of one running fake: the reply queue, the request log and strict mode's
//! memory of what it sent. Everything sits behind one mutex that is never held across an await, so
//! "pop a reply, record the request, remember what was sent" happens atomically in arrival order.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::reply::Reply;
use crate::FakeConfig;

/// One chat-completions request the fake received, with the status it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The exact request body bytes (lossily decoded if they were not UTF-8).
    pub body: String,
    /// The `Authorization` header value, if any was sent.
    pub authorization: Option<String>,
    /// The request path, e.g. `/api/v1/chat/completions`.
    pub path: String,
    /// The HTTP status the fake chose; 0 when it sent no status line at all (hang, close).
    pub reply_status: u16,
}

impl RecordedRequest {
    /// The body parsed as JSON; `Value::Null` when it is not valid JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What strict mode remembers about replies it sent (see `strict`).
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// Exact bytes of every `reasoning_details` value sent.
    pub reasoning_details: HashSet<String>,
    /// Ids of tool calls whose reply carried reasoning (DeepSeek then requires it back).
    pub reasoning_tool_calls: HashSet<String>,
}

/// A request as recorded: its body is the received buffer itself (shared, not copied: the
/// benchmark's fake records every request of its load), read as text when asked for.
#[derive(Debug)]
pub(crate) struct Received {
    pub body: Bytes,
    pub authorization: Option<String>,
    pub path: String,
    pub reply_status: u16,
}

impl Received {
    fn recorded(&self) -> RecordedRequest {
        RecordedRequest {
            body: String::from_utf8_lossy(&self.body).into_owned(),
            authorization: self.authorization.clone(),
            path: self.path.clone(),
            reply_status: self.reply_status,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub queue: VecDeque<Reply>,
    pub requests: Vec<Received>,
    pub strict: bool,
    pub memory: Memory,
}

/// State shared by the server tasks and the [`crate::FakeUpstream`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: FakeConfig,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(config: FakeConfig) -> Shared {
        Shared {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                requests: Vec::new(),
                strict: config.strict,
                memory: Memory::default(),
            }),
            config,
        }
    }

    /// Lock the state. A panic while holding the lock (only possible in a test thread) must not
    /// turn every later request into a panic too, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, reply: Reply) {
        self.lock().queue.push_back(reply);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .map(Received::recorded)
            .collect()
    }

    pub fn set_strict(&self, strict: bool) {
        self.lock().strict = strict;
    }

    /// Forget queued replies, recorded requests and strict memory. The strict flag itself stays.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.queue.clear();
        inner.requests.clear();
        inner.memory = Memory::default();
    }
}
