//! Service keys: create, list, revoke, and the per-request lookup.

use rusqlite::{params, OptionalExtension};

use super::{Durability, Error, Storage};
use crate::domain::ids;

#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// An active key found by its hash.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    pub id: String,
    pub tenant: String,
    pub key_sha256: String,
    pub last_used_at: Option<String>,
}

type KeyRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

impl Storage {
    pub async fn create_key(
        &self,
        name: &str,
        tenant: &str,
        key_sha256: &str,
    ) -> Result<KeyRecord, Error> {
        let record = KeyRecord {
            id: ids::new_id(),
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            created_at: ids::now(),
            last_used_at: None,
            revoked_at: None,
        };
        let key_sha256 = key_sha256.to_owned();
        let inserted = record.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO service_keys (id, name, tenant, key_sha256, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )?
            .execute(params![
                inserted.id,
                inserted.name,
                inserted.tenant,
                key_sha256,
                inserted.created_at,
            ])?;
            Ok(())
        })
        .await?;
        Ok(record)
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, Error> {
        let mut conn = self.reader().await?;
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, name, tenant, created_at, last_used_at, revoked_at \
                            FROM service_keys ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, tenant, created_at, last_used_at, revoked_at)| KeyRecord {
                    id,
                    name,
                    tenant,
                    created_at,
                    last_used_at,
                    revoked_at,
                },
            )
            .collect())
    }

    /// Revokes a key at once; false when there is no such key (revoking twice is fine).
    pub async fn revoke_key(&self, id: &str) -> Result<bool, Error> {
        let id = id.to_owned();
        self.write(move |tx| {
            let revoked = tx
                .prepare_cached(
                    "UPDATE service_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                )?
                .execute(params![ids::now(), id])?;
            Ok(revoked == 1)
        })
        .await
    }

    /// Deletes a key that was never handed to anyone (its creation could not show it): unlike
    /// a revoked one, it does not count as a key ever created.
    pub async fn forget_key(&self, id: &str) -> Result<(), Error> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM service_keys WHERE id = ?")?
                .execute([&id])?;
            Ok(())
        })
        .await
    }

    /// Whether any key was ever created (revoked ones count: revoking every key does not
    /// reopen the service).
    pub async fn keys_exist(&self) -> Result<bool, Error> {
        self.readers.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM service_keys LIMIT 1")?
                .exists([])?)
        })
    }

    /// The active key with this hash, if any.
    pub async fn find_active_key(&self, key_sha256: &str) -> Result<Option<ActiveKey>, Error> {
        self.readers.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, tenant, key_sha256, last_used_at FROM service_keys \
                     WHERE key_sha256 = ? AND revoked_at IS NULL",
                )?
                .query_row([key_sha256], |r| {
                    Ok(ActiveKey {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        key_sha256: r.get(2)?,
                        last_used_at: r.get(3)?,
                    })
                })
                .optional()?)
        })
    }

    pub async fn touch_key(&self, id: &str) -> Result<(), Error> {
        let id = id.to_owned();
        self.write_short(Durability::Deferred, 0, move |tx| {
            tx.prepare_cached("UPDATE service_keys SET last_used_at = ? WHERE id = ?")?
                .execute(params![ids::now(), id])?;
            Ok(())
        })
        .await
    }
}
