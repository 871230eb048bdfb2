//! DeerFlow's run-journal routes over real HTTP: token usage, run events, run messages, the
//! thread message feed and feedback.

mod common;

use common::{TestApp, json_of};
use reqwest::Method;
use serde_json::{Value, json};

async fn get(app: &TestApp, path: &str) -> anyhow::Result<(u16, Value)> {
    json_of(app.get(path).await?).await
}

#[tokio::test]
async fn token_usage_events_messages_and_feedback() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (_, thread) = json_of(app.post_json("/threads", json!({})).await?).await?;
    let tid = thread["thread_id"].as_str().unwrap_or_default().to_string();
    let input = json!({"messages": [{"type": "human", "content": "hello"}]});
    for _ in 0..2 {
        let (s, _) = json_of(
            app.post_json(
                &format!("/threads/{tid}/runs/wait"),
                json!({"assistant_id": "echo", "input": input}),
            )
            .await?,
        )
        .await?;
        assert_eq!(s, 200);
    }
    let (_, runs) = get(&app, &format!("/threads/{tid}/runs")).await?;
    let rid = runs[0]["run_id"].as_str().unwrap_or_default().to_string();

    // token usage: DeerFlow's shape (echo makes no model calls: zeros, two runs)
    let (s, usage) = get(&app, &format!("/api/threads/{tid}/token-usage")).await?;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage["thread_id"], json!(tid));
    assert_eq!(usage["total_runs"], json!(2));
    assert_eq!(usage["total_tokens"], json!(0));
    assert!(usage["by_model"].is_object(), "{usage}");
    assert_eq!(usage["by_caller"]["lead_agent"], json!(0));
    assert!(usage["context_usage"].is_null());
    let (s, _) = get(
        &app,
        &format!("/threads/{tid}/token-usage?include_active=maybe"),
    )
    .await?;
    assert_eq!(s, 422, "a bad flag is rejected");

    // events of one run, ascending seq, filtered by type
    let (s, events) = get(&app, &format!("/threads/{tid}/runs/{rid}/events")).await?;
    assert_eq!(s, 200, "{events}");
    let list = events.as_array().cloned().unwrap_or_default();
    assert!(!list.is_empty(), "{events}");
    assert!(list.iter().all(|e| e["run_id"] == json!(rid)));
    let seqs: Vec<i64> = list.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let (_, only) = get(
        &app,
        &format!("/threads/{tid}/runs/{rid}/events?event_types=llm.ai.response"),
    )
    .await?;
    let only = only.as_array().cloned().unwrap_or_default();
    assert!(!only.is_empty());
    assert!(only.iter().all(|e| e["event_type"] == "llm.ai.response"));
    let (s, _) = get(&app, &format!("/threads/{tid}/runs/{rid}/events?limit=0")).await?;
    assert_eq!(s, 422);

    // messages: run page and thread feed, paged backwards with has_more
    let (s, page) = get(&app, &format!("/threads/{tid}/runs/{rid}/messages?limit=1")).await?;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["has_more"], json!(true), "{page}");
    let (_, feed) = get(&app, &format!("/threads/{tid}/messages")).await?;
    let feed = feed.as_array().cloned().unwrap_or_default();
    assert!(feed.len() >= 4, "two runs, human + ai each: {feed:?}");
    assert!(feed.iter().all(|m| m["category"] == "message"));

    // feedback: validation, create, upsert keeps one per user, stats, delete
    let fb_path = format!("/threads/{tid}/runs/{rid}/feedback");
    let (s, err) = json_of(app.post_json(&fb_path, json!({"rating": 5})).await?).await?;
    assert_eq!(s, 400, "{err}");
    assert_eq!(err["detail"], json!("rating must be +1 or -1"));
    let (s, fb) = json_of(
        app.post_json(&fb_path, json!({"rating": 1, "comment": "nice"}))
            .await?,
    )
    .await?;
    assert_eq!(s, 200, "{fb}");
    assert_eq!(fb["rating"], json!(1));
    assert_eq!(fb["run_id"], json!(rid));
    let (s, _) = json_of(
        app.send_raw(Method::PUT, &fb_path, br#"{"rating": -1}"#)
            .await?,
    )
    .await?;
    assert_eq!(s, 200);
    let (_, list) = get(&app, &fb_path).await?;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "upsert replaced: {list}"
    );
    assert_eq!(list[0]["rating"], json!(-1));
    let (_, stats) = get(&app, &format!("{fb_path}/stats")).await?;
    assert_eq!(
        stats,
        json!({"run_id": rid, "total": 1, "positive": 0, "negative": 1})
    );
    let (_, feed) = get(&app, &format!("/threads/{tid}/messages")).await?;
    let with_fb: Vec<&Value> = feed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| !m["feedback"].is_null())
        .collect();
    assert_eq!(
        with_fb.len(),
        1,
        "feedback rides on the run's last AI response"
    );
    assert_eq!(with_fb[0]["event_type"], json!("llm.ai.response"));
    let fid = list[0]["feedback_id"].as_str().unwrap_or_default();
    let (s, _) = json_of(
        app.send_raw(Method::DELETE, &format!("{fb_path}/{fid}"), b"")
            .await?,
    )
    .await?;
    assert_eq!(s, 200);
    let (s, _) = json_of(app.send_raw(Method::DELETE, &fb_path, b"").await?).await?;
    assert_eq!(s, 404, "nothing left to delete");

    // unknown run / thread
    let ghost = "00000000-0000-4000-8000-0000000000aa";
    let (s, _) = get(&app, &format!("/threads/{tid}/runs/{ghost}/events")).await?;
    assert_eq!(s, 404);
    let (s, _) = get(&app, &format!("/threads/{ghost}/token-usage")).await?;
    assert_eq!(s, 404);
    Ok(())
}

/// DeerFlow's `messages/page`: backward pages by thread-global `seq` that together give the
/// whole feed once, in order; `next_before_seq` chains them; `after_seq` is refused.
#[tokio::test]
async fn the_message_feed_pages_backward_by_seq() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (_, thread) = json_of(app.post_json("/threads", json!({})).await?).await?;
    let tid = thread["thread_id"].as_str().unwrap_or_default().to_string();
    let (_, empty) = get(&app, &format!("/api/threads/{tid}/messages/page")).await?;
    assert_eq!(
        empty,
        json!({"data": [], "has_more": false, "next_before_seq": null})
    );
    for i in 0..3 {
        let input = json!({"messages": [{"type": "human", "content": format!("hello {i}")}]});
        let body = json!({"assistant_id": "echo", "input": input});
        let (s, _) = json_of(
            app.post_json(&format!("/threads/{tid}/runs/wait"), body)
                .await?,
        )
        .await?;
        assert_eq!(s, 200);
    }
    let (_, all) = get(&app, &format!("/threads/{tid}/messages")).await?;
    let all: Vec<i64> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    assert_eq!(all.len(), 6, "three runs, human + ai each");

    // pages of 4 from the end, chained by next_before_seq
    let mut seen: Vec<i64> = Vec::new();
    let mut path = format!("/api/threads/{tid}/messages/page?limit=4");
    loop {
        let (s, page) = get(&app, &path).await?;
        assert_eq!(s, 200, "{page}");
        let seqs: Vec<i64> = page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["seq"].as_i64())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ascending: {seqs:?}");
        assert!(
            page["data"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|m| m.get("feedback").is_some())
        );
        seen.splice(0..0, seqs.iter().copied());
        if page["has_more"] == json!(false) {
            assert!(page["next_before_seq"].is_null(), "{page}");
            break;
        }
        assert_eq!(page["next_before_seq"], json!(seqs[0]), "{page}");
        path = format!(
            "/api/threads/{tid}/messages/page?limit=4&before_seq={}",
            seqs[0]
        );
    }
    assert_eq!(seen, all, "every message once, in order");

    // each row's content is the message as the state holds it (DeerFlow's page renders
    // `{...row.content}`): type, content and the same id
    let (_, state) = get(&app, &format!("/threads/{tid}/state")).await?;
    let (_, page) = get(&app, &format!("/api/threads/{tid}/messages/page")).await?;
    let in_state: Vec<Value> = state["values"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let in_feed: Vec<Value> = page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| row["content"].clone())
        .collect();
    let ids = |msgs: &[Value]| -> Vec<(Value, Value, Value)> {
        msgs.iter()
            .map(|m| (m["type"].clone(), m["id"].clone(), m["content"].clone()))
            .collect()
    };
    assert_eq!(ids(&in_feed), ids(&in_state), "{page}");
    assert_eq!(in_feed[0]["type"], json!("human"));
    // DeerFlow's turn_duration: on each run's answer (its last AI row), whole seconds
    for (i, m) in in_feed.iter().enumerate() {
        let d = &m["additional_kwargs"]["turn_duration"];
        if m["type"] == "ai" {
            assert!(d.as_i64().is_some_and(|s| s >= 0), "{m}");
        } else {
            assert!(d.is_null(), "row {i}: {m}");
        }
    }
    assert_eq!(page["data"][0]["metadata"]["caller"], json!("lead_agent"));

    let (s, err) = get(
        &app,
        &format!("/api/threads/{tid}/messages/page?after_seq=1"),
    )
    .await?;
    assert_eq!(s, 422, "{err}");
    let (s, _) = get(&app, &format!("/api/threads/{tid}/messages/page?limit=0")).await?;
    assert_eq!(s, 422);
    let ghost = "00000000-0000-4000-8000-0000000000aa";
    let (s, _) = get(&app, &format!("/api/threads/{ghost}/messages/page")).await?;
    assert_eq!(s, 404);
    Ok(())
}
