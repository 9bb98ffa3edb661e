//! Message operations. Messages are immutable: they are inserted, read and listed, and only
//! deleting their thread removes them.

use std::sync::Arc;

use rusqlite::params;
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteArguments;
use sqlx::Arguments;

use super::contexts::{Cached, Context};
use super::lists::{finish, paginate, Page, PageQuery};
use super::rows::{self, Named, MESSAGE_COLUMNS, MESSAGE_FIELDS};
use super::threads::{bump_thread, lease_state, Lease};
use super::turns::{interrupt, release};
use super::{row_in_thread, thread_of_tenant, Claim, Error, ReadConn, Storage, Tx};
use crate::domain::ids;
use crate::domain::message::NewMessage;
use crate::domain::records::MessageRecord;
use crate::telemetry::metrics as m;

/// Hex SHA-256 of stored reasoning bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

impl Storage {
    /// Appends messages without calling the model. Refused while a turn runs, so a turn's
    /// reply never lands after messages its context did not contain.
    pub async fn append_messages(
        &self,
        tenant: &str,
        thread_id: &str,
        messages: &[NewMessage],
    ) -> Result<Claim<Vec<MessageRecord>>, Error> {
        let now = ids::now();
        let tenant = tenant.to_owned();
        let thread_id = thread_id.to_owned();
        let messages = messages.to_vec();
        self.write(move |tx| {
            let state = lease_state(tx, &tenant, &thread_id, ids::now_millis())?;
            let count = state.count;
            match state.lease {
                Lease::Missing => return Ok(Claim::NotFound),
                Lease::Held => return Ok(Claim::Busy),
                // The turn that held the lease stalled past it: it ends here, so that its
                // reply (should its process wake up) never lands after these messages.
                Lease::Expired(stale) => {
                    interrupt(tx, &stale, &now)?;
                    release(tx, &thread_id, &stale)?;
                }
                Lease::Free => {}
            }
            let stored = insert_messages(tx, &thread_id, count, &messages, None, &now)?;
            bump_thread(tx, &thread_id, &stored, &now)?;
            Ok(Claim::Done(stored))
        })
        .await
    }

    pub async fn get_message(
        &self,
        tenant: &str,
        thread_id: &str,
        message_id: &str,
    ) -> Result<Option<MessageRecord>, Error> {
        let mut conn = self.reader().await?;
        let table = ("messages", MESSAGE_COLUMNS);
        row_in_thread(
            &mut conn,
            table,
            rows::message,
            tenant,
            thread_id,
            message_id,
        )
        .await
    }

    /// Lists a thread's messages; `None` when the thread does not exist for this tenant.
    /// Cursors are message ids of this thread; an unknown one is reported as
    /// `Err((parameter, cursor))`.
    pub async fn list_messages(
        &self,
        tenant: &str,
        thread_id: &str,
        query: &PageQuery<String>,
    ) -> Result<Option<Result<Page<MessageRecord>, (&'static str, String)>>, Error> {
        let mut conn = self.reader().await?;
        if !thread_of_tenant(&mut conn, tenant, thread_id).await? {
            return Ok(None);
        }
        let after = match cursor_seq(&mut conn, thread_id, query.after.as_deref()).await? {
            Ok(seq) => seq,
            Err(id) => return Ok(Some(Err(("after", id)))),
        };
        let before = match cursor_seq(&mut conn, thread_id, query.before.as_deref()).await? {
            Ok(seq) => seq,
            Err(id) => return Ok(Some(Err(("before", id)))),
        };
        let by_seq = PageQuery {
            limit: query.limit,
            after,
            before,
            order: query.order,
        };
        let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ?");
        let mut args = SqliteArguments::default();
        args.add(thread_id).map_err(sqlx::Error::Encode)?;
        let reversed = paginate(&mut sql, &mut args, "seq", &by_seq)?;
        let rows = sqlx::query_with(&sql, args).fetch_all(&mut *conn).await?;
        let items = rows
            .iter()
            .map(rows::message)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Ok(finish(items, query.limit, reversed))))
    }

    /// Every message of a thread in `seq` order, for the context rebuild: the messages
    /// added since the cached context (`contexts.rs`), or the whole thread, in one query.
    pub async fn context_messages(&self, thread_id: &str) -> Result<Context, Error> {
        let cached = self.contexts.get(thread_id);
        let fresh = self.readers.read(|conn| {
            if let Some(cached) = &cached {
                if let Some(extended) = extend_context(conn, thread_id, cached)? {
                    metrics::counter!(m::CONTEXT_READS, "source" => "delta").increment(1);
                    return Ok(Some(extended));
                }
            }
            metrics::counter!(m::CONTEXT_READS, "source" => "database").increment(1);
            // The thread's incarnation rides on every row: one statement, one snapshot.
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS}, (SELECT incarnation FROM threads WHERE id = ?1) \
                 FROM messages WHERE thread_id = ?1 ORDER BY seq"
            );
            let mut select = conn.prepare_cached(&sql)?;
            let mut found = select.query([thread_id])?;
            let mut messages = Vec::new();
            let mut incarnation: Option<Arc<str>> = None;
            while let Some(row) = found.next()? {
                if incarnation.is_none() {
                    incarnation = row.get::<_, Option<String>>(MESSAGE_FIELDS)?.map(Arc::from);
                }
                messages.push(Arc::new(rows::message(&Named::new(row))?));
            }
            Ok(incarnation.map(|incarnation| Cached::new(incarnation, messages)))
        })?;
        match fresh {
            Some(fresh) => {
                let messages = fresh.messages.clone();
                self.contexts.put(thread_id, fresh);
                Ok(messages)
            }
            // No messages (or no thread): nothing worth keeping.
            None => Ok(Arc::default()),
        }
    }
}

/// `cached` with the messages stored after it, when it is still a prefix of the thread: the
/// thread has the same incarnation and the message at its last `seq` the same id.
fn extend_context(
    conn: &rusqlite::Connection,
    thread_id: &str,
    cached: &Cached,
) -> Result<Option<Cached>, Error> {
    let Some(last) = cached.messages.last() else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ?1 AND seq >= ?2 \
         AND EXISTS (SELECT 1 FROM threads WHERE id = ?1 AND incarnation = ?3) ORDER BY seq"
    );
    let mut select = conn.prepare_cached(&sql)?;
    let mut found = select.query(params![thread_id, last.seq, &*cached.incarnation])?;
    match found.next()? {
        Some(row) if row.get::<_, String>("id")? == last.id => {}
        _ => return Ok(None),
    }
    let mut added = Vec::new();
    while let Some(row) = found.next()? {
        added.push(Arc::new(rows::message(&Named::new(row))?));
    }
    Ok(Some(cached.extended(added)))
}

/// A message-id cursor resolved to its `seq`; `Err(id)` when it is not in this thread.
async fn cursor_seq(
    conn: &mut ReadConn,
    thread_id: &str,
    cursor: Option<&str>,
) -> Result<Result<Option<i64>, String>, Error> {
    let Some(id) = cursor else {
        return Ok(Ok(None));
    };
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM messages WHERE id = ? AND thread_id = ?")
            .bind(id)
            .bind(thread_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(seq.map(Some).ok_or_else(|| id.to_owned()))
}

/// Inserts client messages after seq `last_seq`, stamped with `turn_id` when they are a
/// turn's input.
pub(super) fn insert_messages(
    tx: &Tx,
    thread_id: &str,
    last_seq: i64,
    messages: &[NewMessage],
    turn_id: Option<&str>,
    now: &str,
) -> Result<Vec<MessageRecord>, Error> {
    let mut stored = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let record = MessageRecord {
            id: ids::new_id(),
            thread_id: thread_id.to_owned(),
            seq: last_seq + 1 + i as i64,
            role: m.role.as_str().to_owned(),
            content: m.content.clone(),
            name: m.name.clone(),
            tool_calls: m.tool_calls.clone(),
            tool_call_id: m.tool_call_id.clone(),
            reasoning: m.reasoning.clone(),
            reasoning_details_sha256: m
                .reasoning_details
                .as_deref()
                .map(|r| sha256_hex(r.as_bytes())),
            reasoning_details: m.reasoning_details.clone(),
            turn_id: turn_id.map(str::to_owned),
            created_at: now.to_owned(),
            model: m.model.clone(),
            // An imported assistant message counts as produced by the model it names.
            requested_model: m.model.clone(),
            ..Default::default()
        };
        insert_message(tx, &record)?;
        stored.push(record);
    }
    Ok(stored)
}

pub(super) fn insert_message(tx: &Tx, m: &MessageRecord) -> Result<(), Error> {
    insert_message_at(tx, m, m.seq)
}

/// `insert_message`, at `seq` whatever `m.seq` says.
pub(super) fn insert_message_at(tx: &Tx, m: &MessageRecord, seq: i64) -> Result<(), Error> {
    tx.prepare_cached(
        "INSERT INTO messages (id, thread_id, seq, role, content, name, tool_calls, \
         tool_call_id, reasoning, reasoning_details, reasoning_details_sha256, turn_id, \
         created_at, model, requested_model, provider, generation_id, finish_reason, \
         native_finish_reason, usage) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        m.id,
        m.thread_id,
        seq,
        m.role,
        m.content,
        m.name,
        m.tool_calls,
        m.tool_call_id,
        m.reasoning,
        m.reasoning_details,
        m.reasoning_details_sha256,
        m.turn_id,
        m.created_at,
        m.model,
        m.requested_model,
        m.provider,
        m.generation_id,
        m.finish_reason,
        m.native_finish_reason,
        m.usage,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_hex_is_the_lowercase_hex_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            super::sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
