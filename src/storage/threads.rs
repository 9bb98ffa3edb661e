//! Thread operations: create (with imported history), read, list, patch, delete.

use std::sync::LazyLock;

use rusqlite::{params, params_from_iter, OptionalExtension};
use sqlx::sqlite::SqliteArguments;
use sqlx::Arguments;

use super::lists::{finish, paginate, Page, PageQuery};
use super::messages::insert_messages;
use super::rows::{self, Columns, Named, THREAD_COLUMNS};
use super::{Claim, Error, Storage, Tx};
use crate::domain::ids;
use crate::domain::records::{MessageRecord, ThreadRecord};
use crate::domain::thread::{Change, CreateThread, ThreadPatch};

impl Storage {
    /// Creates a thread and imports its initial messages in one transaction.
    pub async fn create_thread(
        &self,
        tenant: &str,
        thread_id: &str,
        create: &CreateThread,
    ) -> Result<ThreadRecord, Error> {
        let now = ids::now();
        let metadata = serde_json::to_string(&create.metadata)
            .map_err(|e| Error::Internal(format!("metadata: {e}")))?;
        let tenant = tenant.to_owned();
        let thread_id = thread_id.to_owned();
        let create = create.clone();
        self.write(move |tx| {
            let s = &create.settings;
            tx.prepare_cached(
                "INSERT INTO threads (id, tenant, created_at, updated_at, metadata, model, \
                 system, reasoning, reasoning_replay, params, incarnation) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, lower(hex(randomblob(16))))",
            )?
            .execute(params![
                thread_id,
                tenant,
                now,
                now,
                metadata,
                s.model,
                s.system,
                s.reasoning,
                s.reasoning_replay.map(|r| r.as_str()),
                s.params,
            ])?;
            if !create.messages.is_empty() {
                let stored = insert_messages(tx, &thread_id, 0, &create.messages, None, &now)?;
                bump_thread(tx, &thread_id, &stored, &now)?;
            }
            fetch_thread(tx, &tenant, &thread_id)?
                .ok_or_else(|| Error::Internal("the new thread was not stored".into()))
        })
        .await
    }

    pub async fn get_thread(
        &self,
        tenant: &str,
        thread_id: &str,
    ) -> Result<Option<ThreadRecord>, Error> {
        self.readers
            .read(|conn| fetch_thread(conn, tenant, thread_id))
    }

    pub async fn list_threads(
        &self,
        tenant: &str,
        query: &PageQuery<String>,
    ) -> Result<Page<ThreadRecord>, Error> {
        let mut sql = format!("SELECT {THREAD_COLUMNS} FROM threads WHERE tenant = ?");
        let mut args = SqliteArguments::default();
        args.add(tenant).map_err(sqlx::Error::Encode)?;
        let reversed = paginate(&mut sql, &mut args, "id", query)?;
        let mut conn = self.reader().await?;
        let rows = sqlx::query_with(&sql, args).fetch_all(&mut *conn).await?;
        let items = rows
            .iter()
            .map(rows::thread)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(finish(items, query.limit, reversed))
    }

    pub async fn update_thread(
        &self,
        tenant: &str,
        thread_id: &str,
        patch: &ThreadPatch,
    ) -> Result<Option<ThreadRecord>, Error> {
        let mut sets = vec!["updated_at = ?"];
        let mut values: Vec<Option<String>> = vec![Some(ids::now())];
        let mut set = |column: &'static str, value: Option<String>| {
            sets.push(column);
            values.push(value);
        };
        match &patch.metadata {
            Change::Keep => {}
            Change::Clear => set("metadata = ?", Some("{}".into())),
            Change::Set(m) => set(
                "metadata = ?",
                Some(serde_json::to_string(m).map_err(|e| Error::Internal(e.to_string()))?),
            ),
        }
        for (column, change) in [
            ("model = ?", &patch.model),
            ("system = ?", &patch.system),
            ("reasoning = ?", &patch.reasoning),
            ("params = ?", &patch.params),
        ] {
            match change {
                Change::Keep => {}
                Change::Clear => set(column, None),
                Change::Set(v) => set(column, Some(v.clone())),
            }
        }
        match patch.reasoning_replay {
            Change::Keep => {}
            Change::Clear => set("reasoning_replay = ?", None),
            Change::Set(r) => set("reasoning_replay = ?", Some(r.as_str().into())),
        }
        let sql = format!(
            "UPDATE threads SET {} WHERE id = ? AND tenant = ?",
            sets.join(", ")
        );
        values.push(Some(thread_id.to_owned()));
        values.push(Some(tenant.to_owned()));
        let tenant = tenant.to_owned();
        let thread_id = thread_id.to_owned();
        self.write(move |tx| {
            if tx.execute(&sql, params_from_iter(&values))? == 0 {
                return Ok(None);
            }
            fetch_thread(tx, &tenant, &thread_id)
        })
        .await
    }

    /// Deletes a thread with its messages and turns. A thread with a turn in progress is
    /// busy: deleting it would pull the rows from under the running turn.
    pub async fn delete_thread(&self, tenant: &str, thread_id: &str) -> Result<Claim<()>, Error> {
        let tenant = tenant.to_owned();
        let id = thread_id.to_owned();
        let deleted = self
            .write(move |tx| {
                match lease_state(tx, &tenant, &id, ids::now_millis())?.lease {
                    Lease::Missing => return Ok(Claim::NotFound),
                    Lease::Held => return Ok(Claim::Busy),
                    Lease::Free | Lease::Expired(_) => {}
                }
                tx.prepare_cached("DELETE FROM threads WHERE id = ? AND tenant = ?")?
                    .execute(params![id, tenant])?;
                Ok(Claim::Done(()))
            })
            .await?;
        // Only once it is gone: another tenant's DELETE (answered 404) leaves the owner's
        // cached context alone. (A context cached meanwhile is harmless: the thread's
        // incarnation no longer exists, so nothing reads it.)
        if matches!(deleted, Claim::Done(())) {
            self.contexts.remove(thread_id);
        }
        Ok(deleted)
    }
}

/// A thread, read by the writer or a reader.
fn fetch_thread(tx: &Tx, tenant: &str, thread_id: &str) -> Result<Option<ThreadRecord>, Error> {
    let sql = format!("SELECT {THREAD_COLUMNS} FROM threads WHERE id = ? AND tenant = ?");
    let mut select = tx.prepare_cached(&sql)?;
    let mut found = select.query(params![thread_id, tenant])?;
    found
        .next()?
        .map(|row| rows::thread(&Named::new(row)))
        .transpose()
}

/// Records newly stored messages on their thread: count (= last seq), last id, update time.
pub(super) fn bump_thread(
    tx: &Tx,
    thread_id: &str,
    stored: &[MessageRecord],
    now: &str,
) -> Result<(), Error> {
    let Some(last) = stored.last() else {
        return Ok(());
    };
    tx.prepare_cached(
        "UPDATE threads SET message_count = ?, last_message_id = ?, updated_at = ? WHERE id = ?",
    )?
    .execute(params![last.seq, last.id, now, thread_id])?;
    Ok(())
}

/// Who holds a thread's turn lease, read inside a write transaction.
pub(super) enum Lease {
    Missing,
    Free,
    Held,
    /// Held by a turn whose process stopped renewing it or died: it can be taken over.
    Expired(String),
}

/// Lease turn, lease expiry, lease owner, message count, incarnation.
type LeaseRow = (Option<String>, Option<i64>, Option<String>, i64, String);

/// What a write transaction reads of a thread before changing it.
pub(super) struct ThreadState {
    pub lease: Lease,
    /// Its message count (= its last `seq`).
    pub count: i64,
    pub incarnation: String,
}

/// A thread's lease, message count and incarnation, read in one query.
pub(super) fn lease_state(
    tx: &Tx,
    tenant: &str,
    thread_id: &str,
    now_millis: i64,
) -> Result<ThreadState, Error> {
    let row: Option<LeaseRow> = tx
        .prepare_cached(
            "SELECT lease_turn_id, lease_expires_at, lease_owner, message_count, incarnation \
             FROM threads WHERE id = ? AND tenant = ?",
        )?
        .query_row(params![thread_id, tenant], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((turn, expires, owner, count, incarnation)) = row else {
        return Ok(ThreadState {
            lease: Lease::Missing,
            count: 0,
            incarnation: String::new(),
        });
    };
    let lease = lease_of(turn, expires, owner.as_deref(), now_millis);
    Ok(ThreadState {
        lease,
        count,
        incarnation,
    })
}

/// Whether a lease is held: by a turn (`turn`), until `expires`, by a process still alive.
fn lease_of(
    turn: Option<String>,
    expires: Option<i64>,
    owner: Option<&str>,
    now_millis: i64,
) -> Lease {
    match turn {
        None => Lease::Free,
        Some(turn) => {
            let expired = expires.is_none_or(|e| e <= now_millis);
            let owner_gone = owner.is_some_and(|o| !super::owner::is_alive(o));
            if expired || owner_gone {
                Lease::Expired(turn)
            } else {
                Lease::Held
            }
        }
    }
}

/// A thread as a turn starts (its settings), with its lease, message count and incarnation,
/// read in one query inside the turn's opening write; `None` when the tenant has no such
/// thread.
pub(super) fn thread_for_turn(
    tx: &Tx,
    tenant: &str,
    thread_id: &str,
    now_millis: i64,
) -> Result<Option<(ThreadRecord, ThreadState)>, Error> {
    // Built once: this runs on every turn.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {THREAD_COLUMNS}, lease_turn_id, lease_expires_at, lease_owner, incarnation \
             FROM threads WHERE id = ? AND tenant = ?"
        )
    });
    let mut select = tx.prepare_cached(&SQL)?;
    let mut found = select.query(params![thread_id, tenant])?;
    let Some(row) = found.next()? else {
        return Ok(None);
    };
    let row = Named::new(row);
    let thread = rows::thread(&row)?;
    let lease = lease_of(
        row.get("lease_turn_id")?,
        row.get("lease_expires_at")?,
        row.get::<Option<String>>("lease_owner")?.as_deref(),
        now_millis,
    );
    let state = ThreadState {
        lease,
        count: thread.message_count,
        incarnation: row.get("incarnation")?,
    };
    Ok(Some((thread, state)))
}
