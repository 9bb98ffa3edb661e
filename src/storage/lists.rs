//! Cursor pagination shared by every list: `limit`, `after`, `before`, `order`.
//!
//! Items are keyed by a column that orders them (a UUIDv7 id, or a message's `seq`).
//! `after` pages forward in the list's order and `before` backward; a backward page is read
//! in reverse and flipped so that `data` is always in the requested order.

use sqlx::sqlite::SqliteArguments;
use sqlx::Arguments;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Debug, Clone)]
pub struct PageQuery<K> {
    pub limit: u32,
    pub after: Option<K>,
    pub before: Option<K>,
    pub order: Order,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// Appends the cursor conditions and ordering to `sql` (which ends in a WHERE clause) and
/// returns whether rows come back reversed.
pub(super) fn paginate<'q, K>(
    sql: &mut String,
    args: &mut SqliteArguments<'q>,
    key: &str,
    query: &'q PageQuery<K>,
) -> Result<bool, sqlx::Error>
where
    K: sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send + Sync + 'q,
{
    let (forward_cmp, backward_cmp) = match query.order {
        Order::Asc => (">", "<"),
        Order::Desc => ("<", ">"),
    };
    if let Some(after) = &query.after {
        sql.push_str(&format!(" AND {key} {forward_cmp} ?"));
        args.add(after).map_err(sqlx::Error::Encode)?;
    }
    if let Some(before) = &query.before {
        sql.push_str(&format!(" AND {key} {backward_cmp} ?"));
        args.add(before).map_err(sqlx::Error::Encode)?;
    }
    // Only `before`: read from the cursor backwards, so the page is the one next to it.
    let reversed = query.before.is_some() && query.after.is_none();
    let ascending = (query.order == Order::Asc) != reversed;
    sql.push_str(&format!(
        " ORDER BY {key} {} LIMIT ?",
        if ascending { "ASC" } else { "DESC" }
    ));
    args.add(i64::from(query.limit) + 1)
        .map_err(sqlx::Error::Encode)?;
    Ok(reversed)
}

/// Trims the look-ahead row and restores the requested order.
pub(super) fn finish<T>(mut items: Vec<T>, limit: u32, reversed: bool) -> Page<T> {
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    if reversed {
        items.reverse();
    }
    Page { items, has_more }
}
