//! Lists: `limit`, `after`, `before`, `order`, `has_more`, `first_id`, `last_id` for threads,
//! messages and turns.

use serde_json::{json, Value};

use crate::helpers::*;

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(id_of).collect()
}

async fn page(api: &Api, path: &str, query: &str) -> Value {
    let sep = if path.contains('?') { '&' } else { '?' };
    let list = api.get(&format!("{path}{sep}{query}")).await.expect(200);
    assert_eq!(list["object"], "list", "{list}");
    let data = ids(&list);
    match (data.first(), data.last()) {
        (Some(first), Some(last)) => {
            assert_eq!(list["first_id"], first.as_str(), "{path}?{query}: {list}");
            assert_eq!(list["last_id"], last.as_str(), "{path}?{query}: {list}");
        }
        _ => {
            assert!(list.get("first_id").is_none(), "{path}?{query}: {list}");
            assert!(list.get("last_id").is_none(), "{path}?{query}: {list}");
        }
    }
    assert!(list["has_more"].is_boolean(), "{list}");
    list
}

/// Checks every pagination rule on a list whose items, oldest first, are `created`.
async fn assert_paginates(api: &Api, path: &str, created: &[String], default_desc: bool) {
    assert!(created.len() >= 5);
    let asc: Vec<String> = created.to_vec();
    let desc: Vec<String> = created.iter().rev().cloned().collect();
    let default = if default_desc { &desc } else { &asc };

    let all = page(api, path, "limit=100").await;
    assert_eq!(&ids(&all), default, "default order of {path}");
    assert_eq!(all["has_more"], false);
    // The default limit (20) covers these few items too.
    assert_eq!(&ids(&api.get(path).await.expect(200)), default);

    for (order, list) in [("asc", &asc), ("desc", &desc)] {
        assert_eq!(
            &ids(&page(api, path, &format!("order={order}&limit=100")).await),
            list
        );

        // Forward paging with `after` walks the whole list, two at a time.
        let mut seen = Vec::new();
        let mut query = format!("order={order}&limit=2");
        loop {
            let p = page(api, path, &query).await;
            let data = ids(&p);
            assert!(data.len() <= 2);
            seen.extend(data.iter().cloned());
            if p["has_more"] == false {
                break;
            }
            assert_eq!(data.len(), 2, "{p}");
            query = format!(
                "order={order}&limit=2&after={}",
                p["last_id"].as_str().unwrap()
            );
            assert!(seen.len() <= list.len(), "paging does not end: {seen:?}");
        }
        assert_eq!(&seen, list, "{path} order={order} paged with after");

        // `before` gives the page right before the cursor, still in the requested order.
        let p = page(
            api,
            path,
            &format!("order={order}&limit=100&before={}", list[3]),
        )
        .await;
        assert_eq!(ids(&p), list[..3].to_vec(), "{path} before, order={order}");
        assert_eq!(p["has_more"], false);
        let p = page(
            api,
            path,
            &format!("order={order}&limit=2&before={}", list[3]),
        )
        .await;
        assert_eq!(
            ids(&p),
            list[1..3].to_vec(),
            "{path} before+limit, order={order}"
        );
        assert_eq!(p["has_more"], true, "{p}");

        // Both cursors: the items strictly between them.
        let q = format!("order={order}&after={}&before={}", list[0], list[4]);
        assert_eq!(ids(&page(api, path, &q).await), list[1..4].to_vec());

        let p = page(api, path, &format!("order={order}&limit=1")).await;
        assert_eq!(ids(&p), list[..1].to_vec());
        assert_eq!(p["has_more"], true);

        let last = list.last().unwrap();
        let p = page(api, path, &format!("order={order}&after={last}")).await;
        assert!(ids(&p).is_empty(), "{p}");
        assert_eq!(p["has_more"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_list_pages_newest_first_by_default() {
    let app = spawn_app().await;
    // An empty list has no first_id / last_id.
    let empty = page(&app, "/v1/threads", "limit=5").await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["has_more"], false);

    let mut created = Vec::new();
    for i in 0..6 {
        created.push(
            app.new_thread_id(&json!({"metadata": {"i": i.to_string()}}))
                .await,
        );
    }
    assert_paginates(&app, "/v1/threads", &created, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_list_pages_in_seq_order_and_refuses_foreign_cursors() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let path = format!("/v1/threads/{id}/messages");
    let mut created = Vec::new();
    for i in 0..6 {
        let appended = app
            .post(
                &path,
                &json!({"messages": [{"role": "user", "content": format!("m{i}")}]}),
            )
            .await
            .expect(201);
        created.push(id_of(&appended["data"][0]));
    }
    let list = page(&app, &path, "limit=100").await;
    let seqs: Vec<u64> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_paginates(&app, &path, &created, false).await;

    // A cursor must be a message of this thread.
    let other = app
        .new_thread_id(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .await;
    let foreign = id_of(&app.messages(&other).await[0]);
    for query in [
        format!("after={foreign}"),
        format!("before={foreign}"),
        format!("after={}", uuid::Uuid::now_v7()),
        "after=not-an-id".to_owned(),
    ] {
        app.get(&format!("{path}?{query}"))
            .await
            .expect_error(400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_list_pages_oldest_first_by_default() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    let path = format!("/v1/threads/{id}/turns");
    let empty = page(&app, &path, "").await;
    assert_eq!(empty["data"], json!([]));
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(id_of(
            &app.turn_ok(&id, &json!({"input": format!("turn {i}")}))
                .await,
        ));
    }
    assert_paginates(&app, &path, &created, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_limits_outside_1_to_100_are_refused() {
    let app = spawn_app().await;
    let id = app.new_thread_id(&json!({})).await;
    for path in [
        "/v1/threads".to_owned(),
        format!("/v1/threads/{id}/messages"),
        format!("/v1/threads/{id}/turns"),
    ] {
        for query in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=abc",
            "limit=",
            "order=up",
            "sort=asc",
        ] {
            let error = app
                .get(&format!("{path}?{query}"))
                .await
                .expect_error(400, "invalid_request");
            assert!(!error["message"].as_str().unwrap().is_empty());
        }
        for query in ["limit=1", "limit=100"] {
            app.get(&format!("{path}?{query}")).await.expect(200);
        }
    }
}
