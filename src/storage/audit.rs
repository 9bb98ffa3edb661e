//! Upstream request bodies in the audit record, stored as the part that is new.
//!
//! Turn N+1's request repeats turn N's up to the end of its messages (same model, same
//! settings: the same bytes), then adds the reply and the new input. Stored whole, a
//! thread's audit records grow with the square of its length (a 1,000-turn thread with a
//! 1 MB context would store 500 MB). So when this process has the thread's previous request
//! at hand, a request is stored as "the first `shared` bytes of turn `base`'s request, then
//! these bytes". Reads rebuild it byte for byte. A chain is at most `MAX_CHAIN` long: then,
//! or when nothing useful is shared, or after a restart, the request is stored whole.

use crate::domain::context::RequestLayout;
use std::collections::HashMap;
use std::sync::Arc;

use super::{Error, ReadConn};

/// Longest run of stored-as-difference requests before one is stored whole: a read
/// rebuilds from at most this many rows.
pub(super) const MAX_CHAIN: u32 = 32;

/// Below this many shared bytes a request is stored whole: a difference would save little.
const MIN_SHARED: usize = 256;

/// A thread's last stored request, kept in memory to store the next one as a difference.
#[derive(Clone)]
pub(super) struct LastRequest {
    pub turn_id: String,
    pub body: Arc<str>,
    /// How many requests in a row, ending with this one, were stored as differences.
    pub chain: u32,
    /// The thread's incarnation when it was stored: a later request is stored as a
    /// difference from this one only in the same incarnation.
    pub incarnation: Arc<str>,
    /// Where its messages lie, when the next request may be built by appending to it.
    pub layout: Option<RequestLayout>,
}

/// A turn's request as stored: base turn, shared bytes, the rest.
pub(super) type Pieces = (Option<String>, Option<i64>, Option<String>);

/// How one request is stored.
#[derive(Debug, PartialEq)]
pub(super) struct StoredRequest<'a> {
    /// The earlier turn and how many bytes of its request come first; `None`: whole.
    pub base: Option<(&'a str, i64)>,
    pub rest: &'a str,
    pub chain: u32,
}

/// Splits `request` against the thread's previous request, when that is worth it.
pub(super) fn split<'a>(previous: Option<&'a LastRequest>, request: &'a str) -> StoredRequest<'a> {
    let whole = StoredRequest {
        base: None,
        rest: request,
        chain: 0,
    };
    let Some(previous) = previous.filter(|p| p.chain < MAX_CHAIN) else {
        return whole;
    };
    let mut shared = previous
        .body
        .bytes()
        .zip(request.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    // Both parts stay text: cut on a character boundary.
    while !request.is_char_boundary(shared) {
        shared -= 1;
    }
    if shared < MIN_SHARED {
        return whole;
    }
    StoredRequest {
        base: Some((&previous.turn_id, shared as i64)),
        rest: &request[shared..],
        chain: previous.chain + 1,
    }
}

/// Rebuilds one request from its stored pieces, oldest (whole) first.
fn join(pieces: &[(Option<i64>, String)]) -> Result<String, Error> {
    let mut whole = String::new();
    for (shared, rest) in pieces {
        match shared {
            None => whole.clear(),
            Some(shared) => {
                let shared = usize::try_from(*shared)
                    .ok()
                    .filter(|s| *s <= whole.len() && whole.is_char_boundary(*s))
                    .ok_or_else(|| broken("a shared length outside its base request"))?;
                whole.truncate(shared);
            }
        }
        whole.push_str(rest);
    }
    Ok(whole)
}

fn broken(what: &str) -> Error {
    Error::Internal(format!("audit record damaged: {what}"))
}

/// The whole request of `turn_id` (as sent upstream), following its chain in one query.
pub(super) async fn whole_request(
    conn: &mut ReadConn,
    turn_id: &str,
) -> Result<Option<String>, Error> {
    let chain: Vec<Pieces> = sqlx::query_as(
        "WITH RECURSIVE chain (id, base, shared, rest, depth) AS ( \
             SELECT id, upstream_request_base, upstream_request_shared, upstream_request, 0 \
             FROM turns WHERE id = ? \
             UNION ALL \
             SELECT t.id, t.upstream_request_base, t.upstream_request_shared, \
                    t.upstream_request, c.depth + 1 \
             FROM turns t JOIN chain c ON t.id = c.base WHERE c.depth < ? \
         ) SELECT base, shared, rest FROM chain ORDER BY depth DESC",
    )
    .bind(turn_id)
    .bind(i64::from(MAX_CHAIN) + 1)
    .fetch_all(&mut *conn)
    .await?;
    let Some((base, _, _)) = chain.first() else {
        return Ok(None);
    };
    if base.is_some() {
        return Err(broken(
            "a request chain does not start with a whole request",
        ));
    }
    if chain.iter().any(|(_, _, rest)| rest.is_none()) {
        return Ok(None);
    }
    let pieces: Vec<(Option<i64>, String)> = chain
        .into_iter()
        .map(|(base, shared, rest)| (base.and(shared.or(Some(0))), rest.unwrap_or_default()))
        .collect();
    join(&pieces).map(Some)
}

/// Rebuilds every request of one thread's turns, given each turn's stored pieces
/// (`id -> (base, shared, rest)`), for an export.
pub(super) fn whole_requests(
    stored: &HashMap<String, Pieces>,
) -> Result<HashMap<String, String>, Error> {
    let mut whole: HashMap<String, String> = HashMap::new();
    for id in stored.keys() {
        // Walk back to a whole request (or one already rebuilt), then forward.
        let mut path = vec![id.as_str()];
        let start = loop {
            let current = path[path.len() - 1];
            if let Some(done) = whole.get(current) {
                path.pop();
                break done.clone();
            }
            match stored.get(current) {
                Some((None, _, rest)) => {
                    path.pop();
                    let rest = rest.clone().unwrap_or_default();
                    whole.insert(current.to_owned(), rest.clone());
                    break rest;
                }
                Some((Some(base), _, _)) if path.len() <= MAX_CHAIN as usize + 1 => {
                    path.push(base);
                }
                _ => return Err(broken("a request chain leaves its thread")),
            }
        };
        let mut body = start;
        for current in path.into_iter().rev() {
            let (_, shared, rest) = &stored[current];
            let pieces = [
                (None, body),
                (Some(shared.unwrap_or(0)), rest.clone().unwrap_or_default()),
            ];
            body = join(&pieces)?;
            whole.insert(current.to_owned(), body.clone());
        }
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(turn: &str, body: &str, chain: u32) -> LastRequest {
        LastRequest {
            turn_id: turn.into(),
            body: body.into(),
            chain,
            incarnation: "i".into(),
            layout: None,
        }
    }

    #[test]
    fn a_request_that_extends_the_last_one_is_stored_as_its_new_bytes() {
        let first = format!(r#"{{"messages":[{}]}}"#, "x".repeat(400));
        let second = format!(r#"{{"messages":[{},"reply","é"]}}"#, "x".repeat(400));
        let previous = last("t1", &first, 0);
        let stored = split(Some(&previous), &second);
        let shared = first.len() - 2; // up to the closing `]}`
        assert_eq!(stored.base, Some(("t1", shared as i64)));
        assert_eq!(stored.rest, &second[shared..]);
        assert_eq!(stored.chain, 1);
        let rebuilt = join(&[(None, first), (Some(shared as i64), stored.rest.into())]);
        assert_eq!(rebuilt.ok(), Some(second));
    }

    #[test]
    fn little_in_common_no_previous_or_a_long_chain_store_it_whole() {
        let body = "y".repeat(1000);
        assert_eq!(split(None, &body).base, None);
        assert_eq!(split(Some(&last("t", "z", 0)), &body).base, None);
        let previous = last("t", &body, MAX_CHAIN);
        assert_eq!(split(Some(&previous), &format!("{body}!")).base, None);
        assert!(
            split(Some(&last("t", &body, MAX_CHAIN - 1)), &format!("{body}!"))
                .base
                .is_some()
        );
    }

    #[test]
    fn the_cut_never_splits_a_character() {
        let a = format!("{}é", "a".repeat(300));
        let b = format!("{}è", "a".repeat(300));
        let previous = last("t", &a, 0);
        let stored = split(Some(&previous), &b);
        assert_eq!(stored.base, Some(("t", 300)));
        assert_eq!(stored.rest, "è");
    }

    proptest::proptest! {
        /// Whatever two requests look like (any text, multi-byte characters, shared prefixes
        /// of any length), storing one as a difference from the other rebuilds it exactly.
        #[test]
        fn a_request_stored_as_a_difference_rebuilds_byte_for_byte(
            common in "(\\PC|é|😀){0,600}",
            before in "(\\PC|è|😀){0,40}",
            after in "(\\PC|ê|😀){0,40}",
        ) {
            let previous_body = format!("{common}{before}");
            let request = format!("{common}{after}");
            let previous = last("t", &previous_body, 0);
            let stored = split(Some(&previous), &request);
            let pieces = match stored.base {
                Some((_, shared)) => vec![(None, previous_body.clone()), (Some(shared), stored.rest.to_owned())],
                None => vec![(None, stored.rest.to_owned())],
            };
            proptest::prop_assert_eq!(join(&pieces).ok(), Some(request.clone()));
            if let Some((_, shared)) = stored.base {
                proptest::prop_assert!(shared as usize >= MIN_SHARED);
                proptest::prop_assert!(request.is_char_boundary(shared as usize));
            }
        }
    }

    #[test]
    fn an_export_rebuilds_chains_in_any_order_and_refuses_a_broken_one() {
        let one = "a".repeat(300);
        let two = format!("{one}b");
        let three = format!("{two}c");
        let mut stored = HashMap::new();
        stored.insert(
            "3".to_string(),
            (Some("2".into()), Some(301), Some("c".into())),
        );
        stored.insert("1".to_string(), (None, None, Some(one.clone())));
        stored.insert(
            "2".to_string(),
            (Some("1".into()), Some(300), Some("b".into())),
        );
        let whole = whole_requests(&stored).ok();
        let expected: HashMap<String, String> = [("1", one), ("2", two), ("3", three)]
            .map(|(k, v)| (k.to_owned(), v))
            .into();
        assert_eq!(whole, Some(expected));

        stored.insert(
            "4".to_string(),
            (Some("gone".into()), Some(1), Some("d".into())),
        );
        assert!(whole_requests(&stored).is_err());
        stored.remove("4");
        stored.insert(
            "5".to_string(),
            (Some("1".into()), Some(9999), Some("e".into())),
        );
        assert!(whole_requests(&stored).is_err());
    }
}
