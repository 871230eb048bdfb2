//! Redis stream bridge benchmarks, next to the memory bridge for comparison:
//! - publish throughput: one publisher awaiting each publish (round-trip bound), and 32
//!   concurrent publishers on 32 streams (what a busy replica does);
//! - publish-to-subscriber latency (time from `publish` until a live subscriber has the event),
//!   Redis vs memory; p50/p99 over 2,000 events are printed before the criterion runs.
//!
//! Redis URL: env `ANTLER_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); the Redis benches
//! are skipped with a notice when it is unreachable.
//!
//! Run: `cargo bench -p antler-bridge --bench redis -- --warm-up-time 1 --measurement-time 4`

use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_bridge::{
    BridgeItem, MemoryBridge, MemoryBridgeConfig, RedisBridge, RedisBridgeConfig, StreamBridge,
};
use criterion::{Criterion, Throughput, criterion_group};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const CONCURRENT: usize = 32;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn payload() -> Arc<str> {
    Arc::from(r#"{"step":1,"phase":"start","note":"benchmark payload of typical size"}"#)
}

fn redis_url() -> String {
    std::env::var("ANTLER_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

fn redis_bridge(rt: &Runtime) -> Option<Arc<dyn StreamBridge>> {
    let config = RedisBridgeConfig {
        redis_url: Some(redis_url()),
        key_prefix: format!("antler-bench:{}:", uuid::Uuid::new_v4().simple()),
        stream_ttl_seconds: 300,
        ..RedisBridgeConfig::default()
    };
    match rt.block_on(RedisBridge::connect(config)) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            eprintln!("NOTICE: Redis unavailable ({e}); skipping the Redis benchmarks");
            None
        }
    }
}

fn memory_bridge(rt: &Runtime) -> Arc<dyn StreamBridge> {
    let _guard = rt.enter();
    Arc::new(MemoryBridge::new(MemoryBridgeConfig::default()).expect("bridge"))
}

/// A live subscriber on `stream` that reports every received event on the returned channel.
fn live_subscriber(
    rt: &Runtime,
    bridge: &Arc<dyn StreamBridge>,
    stream: &str,
) -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut sub = rt
        .block_on(bridge.subscribe(stream, None))
        .expect("subscribe");
    rt.spawn(async move {
        while let Some(BridgeItem::Event(_)) = sub.next().await {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Publishes one event and waits until the subscriber has it.
async fn round(
    bridge: &Arc<dyn StreamBridge>,
    stream: &str,
    rx: &mut mpsc::UnboundedReceiver<()>,
    data: &Arc<str>,
) -> Duration {
    let start = Instant::now();
    bridge
        .publish(stream, "custom", Arc::clone(data).into())
        .await
        .expect("publish");
    rx.recv().await.expect("subscriber alive");
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

fn print_percentiles() {
    let rt = runtime();
    let data = payload();
    let mut bridges = vec![("memory", memory_bridge(&rt))];
    if let Some(b) = redis_bridge(&rt) {
        bridges.push(("redis", b));
    }
    for (name, bridge) in bridges {
        let stream = format!("pct-{name}");
        let mut rx = live_subscriber(&rt, &bridge, &stream);
        let mut samples: Vec<Duration> = rt.block_on(async {
            for _ in 0..200 {
                round(&bridge, &stream, &mut rx, &data).await;
            }
            let mut v = Vec::with_capacity(2_000);
            for _ in 0..2_000 {
                v.push(round(&bridge, &stream, &mut rx, &data).await);
            }
            v
        });
        samples.sort();
        eprintln!(
            "publish-to-subscriber latency [{name}]: p50 {:?}  p99 {:?}  max {:?} (2,000 events)",
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples.last().copied().unwrap_or_default(),
        );
        rt.block_on(async {
            bridge.cleanup(&stream, Duration::ZERO).await;
            bridge.close().await;
        });
    }
}

fn latency(c: &mut Criterion) {
    let rt = runtime();
    let data = payload();
    let mut group = c.benchmark_group("publish_to_subscriber");
    let mut bridges = vec![("memory", memory_bridge(&rt))];
    if let Some(b) = redis_bridge(&rt) {
        bridges.push(("redis", b));
    }
    for (name, bridge) in bridges {
        let stream = format!("lat-{name}");
        let rx = Arc::new(tokio::sync::Mutex::new(live_subscriber(
            &rt, &bridge, &stream,
        )));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let bridge = Arc::clone(&bridge);
                let stream = stream.clone();
                let data = Arc::clone(&data);
                let rx = Arc::clone(&rx);
                async move {
                    let mut rx = rx.lock().await;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += round(&bridge, &stream, &mut rx, &data).await;
                    }
                    total
                }
            });
        });
        rt.block_on(async {
            bridge.cleanup(&stream, Duration::ZERO).await;
            bridge.close().await;
        });
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let data = payload();
    let Some(bridge) = redis_bridge(&rt) else {
        return;
    };
    let mut group = c.benchmark_group("redis_publish");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sequential", |b| {
        b.to_async(&rt).iter(|| {
            let bridge = Arc::clone(&bridge);
            let data = Arc::clone(&data);
            async move {
                bridge
                    .publish("tp-seq", "custom", data.into())
                    .await
                    .expect("publish")
            }
        });
    });
    // 32 publishers on 32 streams; one "element" = one publish.
    group.bench_function(format!("concurrent_{CONCURRENT}"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let bridge = Arc::clone(&bridge);
            let data = Arc::clone(&data);
            async move {
                let per_task = iters.div_ceil(CONCURRENT as u64);
                let start = Instant::now();
                let tasks: Vec<_> = (0..CONCURRENT)
                    .map(|t| {
                        let bridge = Arc::clone(&bridge);
                        let data = Arc::clone(&data);
                        tokio::spawn(async move {
                            let stream = format!("tp-con-{t}");
                            for _ in 0..per_task {
                                bridge
                                    .publish(&stream, "custom", Arc::clone(&data).into())
                                    .await
                                    .expect("publish");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("publisher");
                }
                // Scale to the requested number of publishes.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * CONCURRENT as u64) as f64)
            }
        });
    });
    group.finish();
    rt.block_on(async {
        bridge.cleanup("tp-seq", Duration::ZERO).await;
        for t in 0..CONCURRENT {
            bridge.cleanup(&format!("tp-con-{t}"), Duration::ZERO).await;
        }
        bridge.close().await;
    });
}

criterion_group!(benches, latency, throughput);

fn main() {
    print_percentiles();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
