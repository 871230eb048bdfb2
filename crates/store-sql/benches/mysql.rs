#![cfg(feature = "mysql")]
//! MySQL / MariaDB store benchmarks (`benches/shared`): per-step checkpoint write cost at 10 and 1,000
//! messages, single-row writes, one run's lifecycle.
//!
//! `cargo bench -p antler-store-sql --bench mysql` (URL: env `ANTLER_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`; skipped with a notice when the server is unreachable).

mod shared;

use std::time::Duration;

use antler_store_sql::mysql::{PoolOptions, open_mysql};
use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = std::env::var("ANTLER_TEST_MYSQL_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".to_owned());
    let opts = PoolOptions {
        acquire_timeout: Duration::from_secs(5),
        ..PoolOptions::default()
    };
    match rt.block_on(open_mysql(&url, opts)) {
        Ok(stores) => shared::all(c, &rt, &stores, "mysql_"),
        Err(e) => {
            eprintln!("NOTICE: MySQL / MariaDB unavailable at {url} ({e}); skipping benchmarks")
        }
    }
}

criterion_group!(group, benches);
criterion_main!(group);
