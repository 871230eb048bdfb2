//! The Redis bridge against a real Redis: the shared conformance suite, the layout in Redis
//! (explicit ids, MAXLEN, TTL, end marker), two bridges sharing streams the way replicas do, a
//! writer that dies (TTL expiry ends the subscribers), and Redis going away (clear failures,
//! no hang).
//!
//! Redis URL: env `ANTLER_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When Redis is
//! unreachable the tests print a notice and skip, except with `CI=true`, where they fail. Every
//! test uses its own key prefix, so the tests run in parallel.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use antler_bridge::parse_event_id;
use antler_bridge::{BridgeError, BridgeItem, RedisBridge, RedisBridgeConfig, StreamBridge};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

async fn reachable(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), ping).await,
        Ok(Some(_))
    )
}

/// The test Redis URL, or `None` (skip) when it is unreachable outside CI.
async fn redis_url() -> Option<String> {
    let url = std::env::var("ANTLER_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    if reachable(&url).await {
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "Redis is unreachable at {url} and CI=true: the Redis bridge tests must run in CI"
    );
    eprintln!("NOTICE: Redis unreachable at {url}; skipping this Redis bridge test");
    None
}

fn config(url: &str) -> RedisBridgeConfig {
    RedisBridgeConfig {
        redis_url: Some(url.to_owned()),
        key_prefix: format!("antler-test:{}:", uuid::Uuid::new_v4().simple()),
        block_ms: 300,
        // Keys of the tests expire on their own.
        stream_ttl_seconds: 600,
        ..RedisBridgeConfig::default()
    }
}

async fn bridge(config: RedisBridgeConfig) -> Arc<RedisBridge> {
    Arc::new(RedisBridge::connect(config).await.expect("connect"))
}

async fn next(sub: &mut antler_bridge::Subscription) -> Option<BridgeItem> {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a bridge item")
}

async fn seq_of(sub: &mut antler_bridge::Subscription) -> u64 {
    match next(sub).await {
        Some(BridgeItem::Event(e)) => e.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

/// A Redis bridge with a key prefix of its own, as the conformance suite takes it; `None`
/// (skip) when Redis is unreachable outside CI.
async fn suite_bridge(queue_maxsize: Option<usize>) -> Option<Arc<dyn StreamBridge>> {
    let url = redis_url().await?;
    let mut config = config(&url);
    if let Some(n) = queue_maxsize {
        config.queue_maxsize = n;
    }
    Some(bridge(config).await)
}

mod conformance {
    antler_bridge::bridge_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        super::suite_bridge(None)
    );
}

mod conformance_with_minimum_retention {
    antler_bridge::bridge_conformance!(super::suite_bridge(Some(4)));
}

/// Explicit `<ms>-<seq>` ids are the Redis ids; MAXLEN bounds the stream; the rolling TTL is
/// set; the end marker is the last entry.
#[tokio::test]
async fn layout_in_redis() {
    let Some(url) = redis_url().await else { return };
    let b = bridge(RedisBridgeConfig {
        queue_maxsize: 5,
        stream_ttl_seconds: 120,
        ..config(&url)
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            b.publish("run-a", "custom", format!(r#"{{"i":{i}}}"#).into())
                .await
                .expect("publish"),
        );
    }
    b.publish_end("run-a").await.expect("end");
    let key = b.key_of("run-a");
    let mut conn = raw(&url).await;
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async::<redis::Value>(&mut conn)
        .await
        .map(|v| match v {
            redis::Value::Array(items) => items
                .into_iter()
                .filter_map(|item| {
                    let redis::Value::Array(pair) = item else {
                        return None;
                    };
                    let id = redis::from_redis_value::<String>(pair.first()?.clone()).ok()?;
                    let fields =
                        redis::from_redis_value::<Vec<String>>(pair.get(1)?.clone()).ok()?;
                    Some((id, fields))
                })
                .collect(),
            _ => Vec::new(),
        })
        .expect("xrange");
    // 5 events (MAXLEN) + the end marker.
    assert_eq!(entries.len(), 6, "{entries:?}");
    for (entry, id) in entries.iter().zip(&ids[3..]) {
        assert_eq!(&entry.0, id);
        assert_eq!(&entry.1[..4], ["kind", "event", "event", "custom"]);
    }
    let (end_id, end_fields) = &entries[5];
    assert_eq!(&end_fields[..2], ["kind", "end"]);
    let (_, last_seq) = parse_event_id(&ids[7]).expect("id");
    assert_eq!(parse_event_id(end_id).map(|(_, s)| s), Some(last_seq + 1));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("ttl");
    assert!((1..=120).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        b.latest_event_id("run-a").await.as_deref(),
        Some(ids[7].as_str())
    );
    // awaiting input raises the TTL, never lowers it.
    let b2 = bridge(RedisBridgeConfig {
        awaiting_input_ttl_seconds: 1_000,
        ..b.config().clone()
    })
    .await;
    b2.mark_awaiting_input("run-a").await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("ttl");
    assert!(ttl > 120, "ttl {ttl}");
    b.cleanup("run-a", Duration::ZERO).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(exists, 0);
    b.close().await;
    b2.close().await;
}

/// Two bridges on the same prefix behave like two replicas: events published on one stream to
/// subscribers of the other, ids resume exactly across them, the numbering continues when the
/// writer changes, and a cleanup on one ends the other's subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_streams() {
    let Some(url) = redis_url().await else { return };
    let cfg = config(&url);
    let a = bridge(cfg.clone()).await;
    let b = bridge(cfg).await;

    let mut live_b = b.subscribe("run-x", None).await.expect("subscribe");
    let id0 = a
        .publish("run-x", "metadata", r#"{"run_id":"run-x"}"#.into())
        .await
        .expect("publish");
    assert_eq!(seq_of(&mut live_b).await, 0);
    let id1 = a
        .publish("run-x", "values", "{}".into())
        .await
        .expect("publish");
    // Another replica takes over the run: numbering continues.
    let id2 = b
        .publish("run-x", "values", "{}".into())
        .await
        .expect("publish");
    assert_eq!(parse_event_id(&id2).map(|(_, s)| s), Some(2));
    assert_eq!(seq_of(&mut live_b).await, 1);
    assert_eq!(seq_of(&mut live_b).await, 2);

    // A client that saw id0 on A resumes on B.
    let mut resumed = b.subscribe("run-x", Some(&id0)).await.expect("resume");
    assert_eq!(seq_of(&mut resumed).await, 1);
    // ... and one that saw id2 on B resumes on A (a fresh hub there).
    let mut tail = a.subscribe("run-x", Some(&id2)).await.expect("resume");
    a.publish("run-x", "values", "{}".into())
        .await
        .expect("publish");
    assert_eq!(seq_of(&mut tail).await, 3);
    assert_ne!(id1, id2);

    // Cleanup on A: B's live subscriber drains and ends (found by B's existence check).
    a.cleanup("run-x", Duration::ZERO).await;
    assert_eq!(seq_of(&mut live_b).await, 3);
    assert_eq!(next(&mut live_b).await, Some(BridgeItem::End));
    assert!(!b.exists("run-x").await);
    a.close().await;
    b.close().await;
}

/// A writer that dies leaves no key behind: the rolling TTL expires it and live subscribers
/// get `End` instead of waiting forever.
#[tokio::test]
async fn dead_writer_expires_and_ends_subscribers() {
    let Some(url) = redis_url().await else { return };
    let b = bridge(RedisBridgeConfig {
        stream_ttl_seconds: 1,
        ..config(&url)
    })
    .await;
    b.publish("run-dead", "values", "{}".into())
        .await
        .expect("publish");
    let mut sub = b.subscribe("run-dead", None).await.expect("subscribe");
    assert_eq!(seq_of(&mut sub).await, 0);
    assert_eq!(next(&mut sub).await, Some(BridgeItem::End));
    assert!(!b.exists("run-dead").await);
    b.close().await;
}

/// A subscriber waiting for a stream that never appears is ended after `wait_timeout_seconds`.
#[tokio::test]
async fn waiting_for_a_stream_is_bounded() {
    let Some(url) = redis_url().await else { return };
    let b = bridge(RedisBridgeConfig {
        wait_timeout_seconds: 1,
        ..config(&url)
    })
    .await;
    let mut sub = b.subscribe("never", None).await.expect("subscribe");
    assert_eq!(next(&mut sub).await, Some(BridgeItem::End));
    b.close().await;
}

#[tokio::test]
async fn unreachable_redis_fails_fast() {
    let cfg = RedisBridgeConfig {
        // Port 1 on loopback: nothing listens there.
        redis_url: Some("redis://127.0.0.1:1".to_owned()),
        connect_timeout_ms: 500,
        ..RedisBridgeConfig::default()
    };
    let started = std::time::Instant::now();
    match RedisBridge::connect(cfg).await {
        Err(BridgeError::Backend(msg)) => assert!(msg.contains("redis"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A private `redis-server` that the test can kill.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Starts a private server and waits until it answers; `None` (skip) without `redis-server`
/// outside CI.
async fn private_redis(port: Option<u16>) -> Option<PrivateRedis> {
    let Some(server) = port.map_or_else(PrivateRedis::start, PrivateRedis::start_on) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is not installed and CI=true"
        );
        eprintln!("NOTICE: redis-server not found; skipping this test");
        return None;
    };
    for _ in 0..50 {
        if reachable(&server.url()).await {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("private redis-server did not come up");
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis going away mid-stream: the live subscription ends (without `End`) and publish,
/// subscribe and exists fail or answer within bounded time instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_clearly() {
    let Some(mut server) = private_redis(None).await else {
        return;
    };
    let url = server.url();
    let b = bridge(RedisBridgeConfig {
        max_retries: 2,
        retry_backoff_ms: 50,
        response_timeout_ms: 500,
        connect_timeout_ms: 300,
        ..config(&url)
    })
    .await;
    b.publish("run-o", "values", "{}".into())
        .await
        .expect("publish");
    let mut sub = b.subscribe("run-o", None).await.expect("subscribe");
    assert_eq!(seq_of(&mut sub).await, 0);

    let _ = server.child.kill();
    let _ = server.child.wait();

    let started = std::time::Instant::now();
    let item = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("the subscription must end, not hang");
    assert_eq!(item, None, "an outage is not a run end");
    let published = tokio::time::timeout(
        Duration::from_secs(10),
        b.publish("run-o", "values", "{}".into()),
    )
    .await
    .expect("publish must fail, not hang");
    assert!(
        matches!(published, Err(BridgeError::Backend(_))),
        "{published:?}"
    );
    let subscribed = tokio::time::timeout(Duration::from_secs(10), b.subscribe("run-o", None))
        .await
        .expect("subscribe must fail, not hang");
    assert!(matches!(subscribed, Err(BridgeError::Backend(_))));
    assert!(!b.exists("run-o").await);
    assert!(started.elapsed() < Duration::from_secs(30));

    // Redis comes back (empty: it kept nothing): the same bridge works again.
    let port = server.port;
    drop(server);
    let Some(_server) = private_redis(Some(port)).await else {
        return;
    };
    let mut sub = b
        .subscribe("run-back", None)
        .await
        .expect("subscribe after recovery");
    b.publish("run-back", "values", "{}".into())
        .await
        .expect("publish after recovery");
    assert_eq!(seq_of(&mut sub).await, 0);
    b.close().await;
}

/// Connections killed under the bridge (a transient error): publishes are retried and the live
/// subscription goes on without loss or duplicate once the reader has reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried() {
    let Some(server) = private_redis(None).await else {
        return;
    };
    let url = server.url();
    let b = bridge(config(&url)).await;
    let mut sub = b.subscribe("run-t", None).await.expect("subscribe");
    for round in 0..3u64 {
        b.publish("run-t", "values", "{}".into())
            .await
            .expect("publish");
        assert_eq!(seq_of(&mut sub).await, round * 2);
        let mut admin = raw(&url).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .expect("client kill");
        assert!(killed >= 2, "killed {killed}");
        let id = b
            .publish("run-t", "values", "{}".into())
            .await
            .expect("publish is retried after the connection was killed");
        assert_eq!(parse_event_id(&id).map(|(_, s)| s), Some(round * 2 + 1));
        assert_eq!(seq_of(&mut sub).await, round * 2 + 1);
    }
    b.publish_end("run-t").await.expect("end");
    assert_eq!(next(&mut sub).await, Some(BridgeItem::End));
    b.close().await;
}

/// Waits for one notification, failing the test after `WAIT`.
async fn notified(n: &tokio::sync::Notify, what: &str) {
    tokio::time::timeout(WAIT, n.notified())
        .await
        .unwrap_or_else(|_| panic!("no wake-up: {what}"));
}

/// Nudges `target` from `from` until `wake` fires (subscriptions come up in the background, so
/// the first nudges may be lost), failing the test after `within`.
async fn nudge_until_delivered(
    from: &RedisBridge,
    target: Option<&str>,
    wake: &tokio::sync::Notify,
    within: Duration,
    what: &str,
) {
    let delivered = async {
        loop {
            from.wake_replica(target).await;
            if tokio::time::timeout(Duration::from_millis(100), wake.notified())
                .await
                .is_ok()
            {
                return;
            }
        }
    };
    tokio::time::timeout(within, delivered)
        .await
        .unwrap_or_else(|_| panic!("never delivered: {what}"));
}

/// Replica wake-ups over Redis pub/sub: a targeted nudge reaches only its replica, a broadcast
/// reaches every replica, and one bridge's nudges reach another bridge (another process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_wakeups_reach_their_targets() {
    let Some(url) = redis_url().await else { return };
    let cfg = config(&url);
    let a = bridge(cfg.clone()).await;
    let b = bridge(cfg).await;
    let (wake_a, wake_b) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    a.listen_wakeups("replica-a", wake_a.clone());
    b.listen_wakeups("replica-b", wake_b.clone());
    nudge_until_delivered(
        &a,
        Some("replica-b"),
        &wake_b,
        WAIT,
        "targeted, across bridges",
    )
    .await;
    // targeted: only B
    a.wake_replica(Some("replica-b")).await;
    notified(&wake_b, "targeted to B").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wake_a.notified())
            .await
            .is_err(),
        "A was not the target"
    );
    // broadcast: both (A's own subscription must be up too: retry until it is)
    nudge_until_delivered(&b, None, &wake_a, WAIT, "a broadcast reaches A").await;
    notified(&wake_b, "broadcast reaches B").await;
    a.close().await;
    b.close().await;
}

/// The wake-up subscription survives a Redis restart: it reconnects and notifies once (nudges
/// sent while it was down are lost), then delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_wakeups_reconnect_after_an_outage() {
    let Some(server) = private_redis(None).await else {
        return;
    };
    let port = server.port;
    let b = bridge(RedisBridgeConfig {
        retry_backoff_ms: 50,
        connect_timeout_ms: 300,
        ..config(&server.url())
    })
    .await;
    let wake = Arc::new(tokio::sync::Notify::new());
    b.listen_wakeups("r", wake.clone());
    nudge_until_delivered(&b, Some("r"), &wake, WAIT, "before the outage").await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Some(_server) = private_redis(Some(port)).await else {
        return;
    };
    notified(&wake, "the reconnect notifies").await;
    nudge_until_delivered(
        &b,
        Some("r"),
        &wake,
        Duration::from_secs(20),
        "after the outage",
    )
    .await;
    b.close().await;
}
