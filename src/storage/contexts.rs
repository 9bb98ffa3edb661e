//! Thread contexts kept in memory between turns, so a turn reads only the messages added
//! since the last one instead of the whole thread.
//!
//! Messages never change once stored and each thread numbers them 1, 2, 3, … (`seq`), so a
//! cached context stays a correct prefix of its thread for as long as the thread row exists.
//! Each insert of a thread row (create or import) draws a new random `incarnation`; a read
//! fetches what follows the cached prefix only if the thread still has the cached
//! incarnation and the message at the cached last `seq` still has the cached id, in the same
//! query. Otherwise (the thread was deleted and imported again, say by another process) it
//! reads the whole thread. So the cache changes the cost of a context, never its content.
//!
//! Bounded by an approximate byte budget, least recently used first out.

use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use super::audit::LastRequest;
use crate::domain::records::MessageRecord;

/// A thread's messages in `seq` order, shared without copying.
pub type Context = Arc<Vec<Arc<MessageRecord>>>;

pub(super) struct ContextCache {
    budget: usize,
    inner: Mutex<Inner>,
}

/// A thread's context as read, with the incarnation of the thread it was read from and its
/// approximate size (kept as it grows, not summed again).
#[derive(Clone)]
pub(super) struct Cached {
    pub incarnation: Arc<str>,
    pub messages: Context,
    bytes: usize,
}

impl Cached {
    pub(super) fn new(incarnation: Arc<str>, messages: Vec<Arc<MessageRecord>>) -> Self {
        let bytes = messages.iter().map(|m| approximate_size(m)).sum();
        Self {
            incarnation,
            messages: Arc::new(messages),
            bytes,
        }
    }

    /// This context followed by `added` (sharing the messages it already holds).
    pub(super) fn extended(&self, added: impl IntoIterator<Item = Arc<MessageRecord>>) -> Self {
        let mut messages = Vec::with_capacity(self.messages.len() + 2);
        messages.extend(self.messages.iter().cloned());
        let mut bytes = self.bytes;
        for message in added {
            bytes += approximate_size(&message);
            messages.push(message);
        }
        Self {
            incarnation: self.incarnation.clone(),
            messages: Arc::new(messages),
            bytes,
        }
    }
}

/// What is kept of one thread; the thread leaves the cache whole.
#[derive(Default)]
struct Entry {
    context: Option<(Cached, usize)>,
    /// The thread's last stored upstream request (`audit.rs`).
    request: Option<(LastRequest, usize)>,
}

impl Entry {
    fn size(&self) -> usize {
        self.context.as_ref().map_or(0, |(_, s)| *s) + self.request.as_ref().map_or(0, |(_, s)| *s)
    }
}

struct Inner {
    /// Least recently used thread first out.
    entries: LruCache<String, Entry>,
    bytes: usize,
}

impl Inner {
    /// Applies `change` to the entry of `thread_id` (created if missing), keeping `bytes`
    /// exact and dropping an entry left empty.
    fn update(&mut self, thread_id: &str, change: impl FnOnce(&mut Entry)) {
        let entry = self
            .entries
            .get_or_insert_mut(thread_id.to_owned(), Entry::default);
        let before = entry.size();
        change(entry);
        let after = entry.size();
        let empty = entry.context.is_none() && entry.request.is_none();
        self.bytes = self.bytes - before + after;
        if empty {
            self.entries.pop(thread_id);
        }
    }
}

impl ContextCache {
    /// A cache holding up to about `budget` bytes of messages; 0 turns it off.
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    pub(super) fn get(&self, thread_id: &str) -> Option<Cached> {
        if self.budget == 0 {
            return None;
        }
        let mut inner = self.lock();
        let entry = inner.entries.get(thread_id)?;
        entry.context.as_ref().map(|(c, _)| c.clone())
    }

    pub(super) fn put(&self, thread_id: &str, context: Cached) {
        let mut inner = self.lock();
        self.put_locked(&mut inner, thread_id, context);
    }

    fn put_locked(&self, inner: &mut Inner, thread_id: &str, context: Cached) {
        let size = context.bytes;
        // One huge thread would evict everything else: it is read from the database.
        let kept = (size <= self.budget / 4).then_some((context, size));
        inner.update(thread_id, |entry| entry.context = kept);
        self.evict(inner);
    }

    /// When the cached context of `thread_id` is its whole first `count` messages (in this
    /// `incarnation`), appends `added` (the messages a write transaction just stored after
    /// them) and returns the result; else leaves the cache to the next read.
    pub(super) fn extend_if_current(
        &self,
        thread_id: &str,
        incarnation: &str,
        count: i64,
        added: Vec<MessageRecord>,
    ) -> Option<Context> {
        if self.budget == 0 {
            return None;
        }
        let mut inner = self.lock();
        let (cached, _) = inner.entries.get(thread_id)?.context.as_ref()?;
        let current = &*cached.incarnation == incarnation
            && cached.messages.len() as i64 == count
            && cached.messages.last().is_some_and(|m| m.seq == count);
        if !current {
            return None;
        }
        let grown = cached.extended(added.into_iter().map(Arc::new));
        let context = grown.messages.clone();
        self.put_locked(&mut inner, thread_id, grown);
        Some(context)
    }

    pub(super) fn last_request(&self, thread_id: &str) -> Option<LastRequest> {
        if self.budget == 0 {
            return None;
        }
        let mut inner = self.lock();
        let entry = inner.entries.get(thread_id)?;
        entry.request.as_ref().map(|(r, _)| r.clone())
    }

    pub(super) fn put_last_request(&self, thread_id: &str, request: LastRequest) {
        if self.budget == 0 {
            return;
        }
        let size = request_size(&request);
        let kept = (size <= self.budget / 4).then_some((request, size));
        let mut inner = self.lock();
        inner.update(thread_id, |entry| entry.request = kept);
        self.evict(&mut inner);
    }

    /// Drops least recently used threads until the cache fits its budget.
    fn evict(&self, inner: &mut Inner) {
        while inner.bytes > self.budget {
            match inner.entries.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.size(),
                None => break,
            }
        }
    }

    pub(super) fn remove(&self, thread_id: &str) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.pop(thread_id) {
            inner.bytes -= entry.size();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change keeps `bytes` equal to the sum of the entries' sizes before it can
        // panic, so a poisoned lock holds a consistent cache.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one heap allocation of `len` bytes takes from glibc's allocator: the bytes and an
/// 8-byte header, rounded up to 16, at least 32. Counted so that the budget is near the memory
/// the cache really holds: a message is a score of allocations, many of them small. (The
/// binary allocates with mimalloc, which has no header and finer size classes: there this
/// counts small allocations high, and the cache holds somewhat less than its budget.)
fn allocated(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len + 8).div_ceil(16).max(2) * 16
    }
}

/// Bytes a thread's last request holds: its text (in an `Arc`, with its two counts) and its
/// turn id.
fn request_size(request: &LastRequest) -> usize {
    allocated(request.body.len() + 16)
        + allocated(request.turn_id.len())
        + std::mem::size_of::<crate::domain::context::RequestLayout>()
}

/// Bytes a message holds, near enough for a budget: its own allocation (in an `Arc`, with
/// its two counts), its slot in the context's vector, and each field's text.
fn approximate_size(m: &MessageRecord) -> usize {
    let strings = [
        Some(&m.id),
        Some(&m.thread_id),
        Some(&m.role),
        m.content.as_ref(),
        m.name.as_ref(),
        m.tool_calls.as_ref(),
        m.tool_call_id.as_ref(),
        m.reasoning.as_ref(),
        m.reasoning_details.as_ref(),
        m.reasoning_details_sha256.as_ref(),
        m.turn_id.as_ref(),
        Some(&m.created_at),
        m.model.as_ref(),
        m.requested_model.as_ref(),
        m.provider.as_ref(),
        m.generation_id.as_ref(),
        m.finish_reason.as_ref(),
        m.native_finish_reason.as_ref(),
        m.usage.as_ref(),
    ];
    allocated(std::mem::size_of::<MessageRecord>() + 16)
        + std::mem::size_of::<Arc<MessageRecord>>()
        + strings
            .iter()
            .flatten()
            .map(|s| allocated(s.len()))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(thread: &str, n: usize, content_len: usize) -> Cached {
        let messages = (0..n)
            .map(|i| {
                Arc::new(MessageRecord {
                    id: format!("m{i}"),
                    thread_id: thread.into(),
                    seq: i as i64 + 1,
                    content: Some("x".repeat(content_len)),
                    ..Default::default()
                })
            })
            .collect();
        Cached::new("i".into(), messages)
    }

    #[test]
    fn least_recently_used_threads_leave_first_when_over_budget() {
        let one = approximate_size(&context("a", 1, 1000).messages[0]);
        let cache = ContextCache::new(one * 13);
        for thread in ["a", "b", "c", "d"] {
            cache.put(thread, context(thread, 3, 1000));
        }
        assert!(cache.get("a").is_some()); // a is now more recent than b
        cache.put("e", context("e", 3, 1000));
        assert!(cache.get("b").is_none());
        for kept in ["a", "c", "d", "e"] {
            assert!(cache.get(kept).is_some(), "{kept} was evicted");
        }
        assert_eq!(cache.lock().bytes, one * 12);
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count_exact() {
        let cache = ContextCache::new(1 << 20);
        cache.put("a", context("a", 2, 100));
        cache.put("a", context("a", 4, 100));
        let four = cache.lock().bytes;
        assert_eq!(
            four,
            context("a", 4, 100)
                .messages
                .iter()
                .map(|m| approximate_size(m))
                .sum::<usize>()
        );
        cache.remove("a");
        assert_eq!(cache.lock().bytes, 0);
    }

    #[test]
    fn a_thread_leaves_with_its_last_request_and_requests_count_in_the_budget() {
        let one = approximate_size(&context("a", 1, 1000).messages[0]);
        let cache = ContextCache::new(one * 8);
        let request = |turn: &str| LastRequest {
            turn_id: turn.into(),
            body: "r".repeat(one).into(),
            chain: 0,
            incarnation: "i".into(),
            layout: None,
        };
        cache.put("a", context("a", 2, 1000));
        cache.put_last_request("a", request("t1"));
        cache.put("b", context("b", 2, 1000));
        cache.put_last_request("b", request("t2"));
        assert!(cache.last_request("a").is_some()); // a is now more recent than b
        cache.put("c", context("c", 2, 1000));
        cache.put_last_request("c", request("t3"));
        // 3 x (2 + 1) > 8 (a request is a little over `one`): the least recently used thread
        // left, context and request.
        assert!(cache.get("b").is_none() && cache.last_request("b").is_none());
        assert!(cache.get("a").is_some() && cache.last_request("a").is_some());
        cache.remove("a");
        assert!(cache.last_request("a").is_none());
        let expected = 2 * one + request_size(&request("t3"));
        assert_eq!(cache.lock().bytes, expected);
    }

    #[test]
    fn sizes_count_what_the_allocator_takes() {
        assert_eq!(allocated(0), 0);
        assert_eq!(allocated(1), 32);
        assert_eq!(allocated(24), 32);
        assert_eq!(allocated(25), 48);
        assert_eq!(allocated(1000), 1008);
        // An id-sized field costs more than its text.
        let small = approximate_size(&context("a", 1, 1).messages[0]);
        assert!(
            small > std::mem::size_of::<MessageRecord>() + 3 * 32,
            "{small}"
        );
    }

    #[test]
    fn a_thread_larger_than_a_quarter_of_the_budget_is_not_kept() {
        let cache = ContextCache::new(10_000);
        cache.put("big", context("big", 10, 1000));
        assert!(cache.get("big").is_none());
        let off = ContextCache::new(0);
        off.put("a", context("a", 1, 1));
        assert!(off.get("a").is_none());
    }
}
