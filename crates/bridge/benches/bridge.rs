//! Memory stream bridge benchmarks: publish throughput (no subscriber / one live reader) and
//! publish-to-subscriber latency with 1 and 1,000 subscribers (time from `publish` until *every*
//! subscriber has received the event).
//!
//! Run: `cargo bench -p antler-bridge --bench bridge`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use antler_bridge::{BridgeItem, MemoryBridge, MemoryBridgeConfig, StreamBridge};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn new_bridge(rt: &Runtime) -> Arc<MemoryBridge> {
    let _guard = rt.enter();
    Arc::new(MemoryBridge::new(MemoryBridgeConfig::default()).expect("bridge"))
}

/// A realistic small payload (a `custom` event).
fn payload() -> Arc<str> {
    Arc::from(r#"{"step":1,"phase":"start","note":"benchmark payload of typical size"}"#)
}

fn publish_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));

    let bridge = new_bridge(&rt);
    let data = payload();
    group.bench_function("no_subscriber", |b| {
        b.to_async(&rt).iter(|| {
            let bridge = Arc::clone(&bridge);
            let data = Arc::clone(&data);
            async move {
                bridge
                    .publish("bench-publish", "custom", data.into())
                    .await
                    .expect("publish")
            }
        });
    });

    // One reader draining concurrently (it may fall behind and resubscribe; we only time the
    // publisher).
    let bridge = new_bridge(&rt);
    let reader_bridge = Arc::clone(&bridge);
    let reader = rt.spawn(async move {
        loop {
            let Ok(mut sub) = reader_bridge.subscribe("bench-publish-1", Some("-1")).await else {
                break;
            };
            let mut ended = false;
            while let Some(item) = sub.next().await {
                match item {
                    BridgeItem::Event(_) => {}
                    BridgeItem::Gap(_) => break,
                    BridgeItem::End => {
                        ended = true;
                        break;
                    }
                }
            }
            if ended || reader_bridge.stats().closed {
                break;
            }
        }
    });
    group.bench_function("one_live_reader", |b| {
        b.to_async(&rt).iter(|| {
            let bridge = Arc::clone(&bridge);
            let data = Arc::clone(&data);
            async move {
                bridge
                    .publish("bench-publish-1", "custom", data.into())
                    .await
                    .expect("publish")
            }
        });
    });
    group.finish();
    rt.block_on(async {
        bridge.publish_end("bench-publish-1").await.ok();
        reader.await.ok();
    });
}

fn fanout_latency(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish_to_all_subscribers");
    group.measurement_time(Duration::from_secs(8));
    for subscribers in [1usize, 1000] {
        let bridge = new_bridge(&rt);
        let stream = format!("bench-fanout-{subscribers}");
        let received = Arc::new(AtomicUsize::new(0));
        let all_received = Arc::new(Notify::new());
        let mut readers = Vec::new();
        for _ in 0..subscribers {
            let mut sub = rt
                .block_on(bridge.subscribe(&stream, None))
                .expect("subscribe");
            let received = Arc::clone(&received);
            let all_received = Arc::clone(&all_received);
            readers.push(rt.spawn(async move {
                while let Some(BridgeItem::Event(_)) = sub.next().await {
                    if received.fetch_add(1, Ordering::AcqRel) + 1 == subscribers {
                        all_received.notify_one();
                    }
                }
            }));
        }
        let data = payload();
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.to_async(&rt).iter_custom(|iters| {
                    let bridge = Arc::clone(&bridge);
                    let stream = stream.clone();
                    let data = Arc::clone(&data);
                    let received = Arc::clone(&received);
                    let all_received = Arc::clone(&all_received);
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            received.store(0, Ordering::Release);
                            let start = Instant::now();
                            bridge
                                .publish(&stream, "custom", Arc::clone(&data).into())
                                .await
                                .expect("publish");
                            all_received.notified().await;
                            total += start.elapsed();
                        }
                        total
                    }
                });
            },
        );
        rt.block_on(async {
            bridge.publish_end(&stream).await.ok();
            for reader in readers {
                reader.await.ok();
            }
        });
    }
    group.finish();
}

criterion_group!(benches, publish_throughput, fanout_latency);
criterion_main!(benches);
