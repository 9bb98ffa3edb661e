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

/// A thread's context as read, with the incarnation of the thread it was read from.
#[derive(Clone)]
pub(super) struct Cached {
    pub incarnation: Arc<str>,
    pub messages: Context,
}

struct Inner {
    entries: LruCache<String, (Cached, usize)>,
    /// Each thread's last stored upstream request (`audit.rs`), under the same budget.
    requests: LruCache<String, (LastRequest, usize)>,
    bytes: usize,
}

impl ContextCache {
    /// A cache holding up to about `budget` bytes of messages; 0 turns it off.
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                requests: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    pub(super) fn get(&self, thread_id: &str) -> Option<Cached> {
        if self.budget == 0 {
            return None;
        }
        self.lock().entries.get(thread_id).map(|(c, _)| c.clone())
    }

    pub(super) fn put(&self, thread_id: &str, context: Cached) {
        let size = context
            .messages
            .iter()
            .map(|m| approximate_size(m))
            .sum::<usize>();
        if size > self.budget / 4 {
            // One huge thread would evict everything else; it is read from the database.
            self.remove(thread_id);
            return;
        }
        let mut inner = self.lock();
        if let Some((_, old)) = inner.entries.put(thread_id.to_owned(), (context, size)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        self.evict(&mut inner);
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
        let (cached, _) = inner.entries.get(thread_id)?;
        let current = &*cached.incarnation == incarnation
            && cached.messages.len() as i64 == count
            && cached.messages.last().is_some_and(|m| m.seq == count);
        if !current {
            return None;
        }
        let mut messages = Vec::with_capacity(cached.messages.len() + added.len());
        messages.extend(cached.messages.iter().cloned());
        messages.extend(added.into_iter().map(Arc::new));
        let context: Context = Arc::new(messages);
        let entry = Cached {
            incarnation: cached.incarnation.clone(),
            messages: context.clone(),
        };
        drop(inner);
        self.put(thread_id, entry);
        Some(context)
    }

    pub(super) fn last_request(&self, thread_id: &str) -> Option<LastRequest> {
        if self.budget == 0 {
            return None;
        }
        self.lock().requests.get(thread_id).map(|(r, _)| r.clone())
    }

    pub(super) fn put_last_request(&self, thread_id: &str, request: LastRequest) {
        let size = request.body.len() + request.turn_id.len();
        if size > self.budget / 4 {
            let mut inner = self.lock();
            if let Some((_, old)) = inner.requests.pop(thread_id) {
                inner.bytes -= old;
            }
            return;
        }
        let mut inner = self.lock();
        if let Some((_, old)) = inner.requests.put(thread_id.to_owned(), (request, size)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        self.evict(&mut inner);
    }

    /// Drops least recently used entries, requests first (losing one only means the next
    /// request is stored whole), until the cache fits its budget.
    fn evict(&self, inner: &mut Inner) {
        while inner.bytes > self.budget {
            if let Some((_, (_, evicted))) = inner.requests.pop_lru() {
                inner.bytes -= evicted;
            } else if let Some((_, (_, evicted))) = inner.entries.pop_lru() {
                inner.bytes -= evicted;
            } else {
                break;
            }
        }
    }

    pub(super) fn remove(&self, thread_id: &str) {
        let mut inner = self.lock();
        if let Some((_, size)) = inner.entries.pop(thread_id) {
            inner.bytes -= size;
        }
        if let Some((_, size)) = inner.requests.pop(thread_id) {
            inner.bytes -= size;
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

/// Bytes a message holds, near enough for a budget.
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
    std::mem::size_of::<MessageRecord>() + strings.iter().flatten().map(|s| s.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(thread: &str, n: usize, content_len: usize) -> Cached {
        let messages = Arc::new(
            (0..n)
                .map(|i| {
                    Arc::new(MessageRecord {
                        id: format!("m{i}"),
                        thread_id: thread.into(),
                        seq: i as i64 + 1,
                        content: Some("x".repeat(content_len)),
                        ..Default::default()
                    })
                })
                .collect(),
        );
        Cached {
            incarnation: "i".into(),
            messages,
        }
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
    fn a_thread_larger_than_a_quarter_of_the_budget_is_not_kept() {
        let cache = ContextCache::new(10_000);
        cache.put("big", context("big", 10, 1000));
        assert!(cache.get("big").is_none());
        let off = ContextCache::new(0);
        off.put("a", context("a", 1, 1));
        assert!(off.get("a").is_none());
    }
}
