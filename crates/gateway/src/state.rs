//! Shared state of the HTTP layer: the runtime (the one door to storage), the registered
//! graphs and the metrics.
//!
//! [`AppState`] is cloned into every handler, so everything in it is an `Arc` (or a handle
//! that is one inside). The graph registry is immutable after startup; metrics are lock-free
//! counters except the per-route request table (a short `parking_lot` critical section, never
//! held across an `.await`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::Duration;

use antler_runtime::{Counters, Runtime, RuntimeConfig};
use antler_store::Stores;

pub use antler_runtime::Graphs;
use parking_lot::Mutex;

/// The owner every request acts as when auth is off (`auth.mode: none`). Handlers never use
/// it directly: they pass the request's [`crate::auth::Caller`].
pub const DEFAULT_OWNER: &str = antler_auth::DEFAULT_USER_ID;

/// Request counters served at `GET /metrics` (run gauges come from the runtime's
/// [`Counters`]).
///
/// Keyed by (method, route template, status) so label cardinality stays bounded by the route
/// table. The map lock is a short `parking_lot` critical section, never held across an await.
#[derive(Debug, Default)]
pub struct Metrics {
    /// route template -> (method, status) -> stat. Two levels so the hot path (an existing
    /// entry) looks up by `&str` without allocating.
    requests: Mutex<BTreeMap<String, RouteStats>>,
}

/// (method, status) -> stat, for one route template.
type RouteStats = BTreeMap<(String, u16), RequestStat>;

#[derive(Debug, Default, Clone, Copy)]
struct RequestStat {
    count: u64,
    seconds_sum: f64,
}

impl Metrics {
    /// Records one finished HTTP request.
    pub fn record_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = self.requests.lock();
        if !map.contains_key(route) {
            map.insert(route.to_owned(), BTreeMap::new());
        }
        let Some(by_route) = map.get_mut(route) else {
            return;
        };
        if let Some(stat) = by_route
            .iter_mut()
            .find(|((m, s), _)| m == method && *s == status)
            .map(|(_, stat)| stat)
        {
            stat.count += 1;
            stat.seconds_sum += seconds;
            return;
        }
        by_route.insert(
            (method.to_owned(), status),
            RequestStat {
                count: 1,
                seconds_sum: seconds,
            },
        );
    }

    /// Number of requests recorded for (method, route, status).
    pub fn request_count(&self, method: &str, route: &str, status: u16) -> u64 {
        self.requests
            .lock()
            .get(route)
            .and_then(|m| m.get(&(method.to_owned(), status)))
            .map_or(0, |s| s.count)
    }

    /// The Prometheus text exposition of the request metrics and the runtime's run counters.
    pub fn render(&self, runs: &Counters) -> String {
        let mut out = String::new();
        let requests: Vec<_> = self
            .requests
            .lock()
            .iter()
            .flat_map(|(route, by)| {
                by.iter().map(|((method, status), stat)| {
                    ((method.clone(), route.clone(), *status), *stat)
                })
            })
            .collect();
        out.push_str(
            "# HELP antler_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE antler_http_requests_total counter\n");
        for ((method, route, status), stat) in &requests {
            let _ = writeln!(
                out,
                "antler_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {}",
                escape_label(method),
                escape_label(route),
                stat.count
            );
        }
        out.push_str(
            "# HELP antler_http_request_duration_seconds_sum Total time spent answering requests.\n",
        );
        out.push_str("# TYPE antler_http_request_duration_seconds_sum counter\n");
        for ((method, route, status), stat) in &requests {
            let _ = writeln!(
                out,
                "antler_http_request_duration_seconds_sum{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {:.6}",
                escape_label(method),
                escape_label(route),
                stat.seconds_sum
            );
        }
        let gauges = [
            (
                "antler_runs_pending",
                "Runs waiting to start.",
                runs.pending.load(Ordering::Relaxed),
            ),
            (
                "antler_runs_running",
                "Runs executing now.",
                runs.running.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "antler_runs_created_total",
                "Runs created since start.",
                runs.created.load(Ordering::Relaxed),
            ),
            (
                "antler_runs_finished_total",
                "Runs finished since start.",
                runs.finished.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Default interval between SSE heartbeat comments.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The graphs this server runs (the runtime's registry).
    pub graphs: Arc<Graphs>,
    /// The run kernel, and the services through which handlers reach storage.
    pub runtime: Arc<Runtime>,
    /// Request counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Interval between SSE heartbeat comments (`: heartbeat`).
    pub heartbeat_interval: Duration,
    /// Who is calling: credentials -> actor, account operations (`auth.mode`).
    pub auth: Arc<antler_auth::Auth>,
    /// The configured chat models (`GET /models`, and the allowlist of `model_name` at run
    /// creation). Immutable after startup.
    pub models: Arc<antler_llm::ModelRegistry>,
    /// Largest request body accepted, in bytes (`server.max_body_mb`); beyond it a request
    /// is answered 413 before any handler runs.
    pub max_body_bytes: usize,
    /// The configured MCP servers as `GET /mcp/config` shows them (name -> entry, secrets
    /// masked). Immutable after startup.
    pub mcp_servers: Arc<serde_json::Value>,
}

/// `server.max_body_mb`'s default: 16 MiB (a long conversation with inline images fits; an
/// upload has its own route).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

impl AppState {
    /// State over a runtime (and its graphs) with fresh metrics. The system assistants
    /// must exist (call `Runtime::register_system_assistants` once at startup).
    pub fn new(runtime: Arc<Runtime>, heartbeat_interval: Duration) -> Self {
        Self {
            graphs: runtime.graphs().clone(),
            runtime,
            metrics: Arc::new(Metrics::default()),
            heartbeat_interval,
            auth: Arc::new(antler_auth::Auth::disabled()),
            models: Arc::new(antler_llm::ModelRegistry::empty()),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            mcp_servers: Arc::new(serde_json::Value::Object(serde_json::Map::new())),
        }
    }

    /// Sets the MCP servers `GET /mcp/config` shows (a JSON object, secrets already masked).
    pub fn with_mcp_servers(mut self, servers: serde_json::Value) -> Self {
        self.mcp_servers = Arc::new(servers);
        self
    }

    /// Sets the largest request body accepted, in bytes.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets the configured chat models (the default is none).
    pub fn with_models(mut self, models: Arc<antler_llm::ModelRegistry>) -> Self {
        self.models = models;
        self
    }

    /// Sets the auth service (the default is `mode: none`: everyone is `default`).
    pub fn with_auth(mut self, auth: Arc<antler_auth::Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// Everything in memory (stores, stream bridge) with the default runtime options: for
    /// tests and the zero-config demo.
    pub fn in_memory(graphs: Graphs) -> Result<Self, antler_bridge::BridgeError> {
        let bridge =
            antler_bridge::MemoryBridge::new(antler_bridge::MemoryBridgeConfig::default())?;
        let runtime = Runtime::new(
            Stores::memory(),
            graphs,
            Arc::new(bridge),
            RuntimeConfig::default(),
        );
        Ok(Self::new(runtime, DEFAULT_HEARTBEAT))
    }

    /// Sets the SSE heartbeat interval.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }
}
