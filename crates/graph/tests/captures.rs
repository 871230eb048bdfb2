//! Replays the reference server's wire captures (`tests/fixtures/captures.json`, extracted from
//! `shared/reference/langgraph-wire/{03,05,06,11,12}-*.txt`) against the engine: for every run
//! request, the sequence of stream events and their payloads must equal the capture modulo ids
//! and timestamps; state / history reads must equal the captured bodies likewise.

use std::collections::HashMap;
use std::sync::Arc;

use antler_graph::*;
use parking_lot::Mutex;
use serde_json::{Value, json};

fn is_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// Replaces uuids (8-4-4-4-12), 32-hex ids and timestamps inside a string.
fn blank_str(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() == 32 && b.iter().all(|c| is_hex(*c)) {
        return "<hex>".into();
    }
    if s.len() >= 26 && s.ends_with("+00:00") && s.as_bytes()[4] == b'-' {
        return "<ts>".into();
    }
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if i + 36 <= b.len() {
            let w = &b[i..i + 36];
            let ok = w.iter().enumerate().all(|(j, c)| {
                if [8, 13, 18, 23].contains(&j) {
                    *c == b'-'
                } else {
                    is_hex(*c)
                }
            });
            if ok {
                out.push_str("<uuid>");
                i += 36;
                // LangChain's generation suffix is not an id: keep it
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

const BLANK_KEYS: &[&str] = &[
    "__request_start_time_ms__",
    "timestamp",
    "created_at",
    "langgraph_request_id",
];

fn normalize(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(blank_str(s)),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    // Python aliasing: the reference serializes a returned message before or
                    // after `add_messages` assigned its id, depending on timing
                    if k == "id" && v.is_null() && o.contains_key("type") {
                        return (k.clone(), json!("<uuid>"));
                    }
                    if BLANK_KEYS.contains(&k.as_str()) {
                        (k.clone(), json!("<blank>"))
                    } else {
                        (blank_str(k), normalize(v))
                    }
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_diff(p, q, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    (p, q) => return Some(format!("{path}.{k}: ours={p:?} ref={q:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_diff(p, q, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: ours={a} ref={b}")),
    }
}

fn assert_same(ours: &Value, reference: &Value, what: &str) {
    let (o, r) = (normalize(ours), normalize(reference));
    if o != r {
        panic!(
            "{what}: differs at {}\nours: {o}\nref:  {r}",
            first_diff(&o, &r, "").unwrap_or_default()
        );
    }
}

struct Harness {
    cp: Arc<dyn Checkpointer>,
    graphs: HashMap<&'static str, CompiledGraph>,
}

fn thread_of(path: &str) -> String {
    path.split('/')
        .nth(2)
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn reduce_meta(state: &mut Value) {
    if let Some(Value::Object(m)) = state.get_mut("metadata") {
        m.retain(|k, _| ["source", "step", "parents"].contains(&k.as_str()));
    }
}

/// A checkpointer that implements only the required trait methods (like a SQL backend that
/// keeps the defaults of `put_shared` / `get_tuple_shared`): values go through plain JSON.
struct PlainCheckpointer(MemoryCheckpointer);

#[async_trait::async_trait]
impl Checkpointer for PlainCheckpointer {
    async fn get_tuple(
        &self,
        t: &str,
        ns: &str,
        id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError> {
        self.0.get_tuple(t, ns, id).await
    }
    async fn list(
        &self,
        t: &str,
        ns: Option<&str>,
        o: &ListOptions,
    ) -> Result<Vec<CheckpointTuple>, CheckpointError> {
        self.0.list(t, ns, o).await
    }
    async fn put(
        &self,
        t: &str,
        ns: &str,
        parent: Option<&str>,
        c: &Checkpoint,
        m: &Map<String, Value>,
        v: &std::collections::BTreeMap<String, ChannelVersion>,
    ) -> Result<(), CheckpointError> {
        self.0.put(t, ns, parent, c, m, v).await
    }
    async fn put_writes(
        &self,
        t: &str,
        ns: &str,
        id: &str,
        task: &str,
        w: &[(String, Value)],
    ) -> Result<(), CheckpointError> {
        self.0.put_writes(t, ns, id, task, w).await
    }
    async fn delete_thread(&self, t: &str) -> Result<(), CheckpointError> {
        self.0.delete_thread(t).await
    }
    async fn copy_thread(&self, a: &str, b: &str) -> Result<(), CheckpointError> {
        self.0.copy_thread(a, b).await
    }
    async fn delete_run(&self, t: &str, r: &str) -> Result<(), CheckpointError> {
        self.0.delete_run(t, r).await
    }
}

impl Harness {
    fn new() -> Self {
        Self {
            cp: Arc::new(MemoryCheckpointer::new()),
            graphs: examples::all().into_iter().collect(),
        }
    }

    fn plain() -> Self {
        Self {
            cp: Arc::new(PlainCheckpointer(MemoryCheckpointer::new())),
            graphs: examples::all().into_iter().collect(),
        }
    }

    fn graph(&self, name: &str) -> CompiledGraph {
        self.graphs[name].clone()
    }

    /// Runs one captured request; returns (events, outcome).
    async fn run(
        &self,
        thread: &str,
        req: &Value,
    ) -> Option<(Vec<(String, Value)>, Result<RunOutcome, GraphError>)> {
        let graph_id = req["assistant_id"].as_str()?;
        let graph = self.graph(graph_id);
        let modes: Vec<String> = match &req["stream_mode"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect(),
            _ => vec!["values".into()],
        };
        // messages/partial|complete framing is the gateway's job: run (the thread advances) but
        // do not compare
        let compare =
            !modes.iter().any(|m| m == "messages") || modes.iter().any(|m| m == "messages-tuple");
        let run_id = uuid::Uuid::now_v7().to_string();
        let assistant_id = uuid::Uuid::new_v4().to_string();
        let mut cfg = RunConfig::new(thread, run_id.clone());
        cfg.stream_modes = modes.iter().filter_map(|m| StreamMode::parse(m)).collect();
        cfg.subgraphs = req["stream_subgraphs"].as_bool().unwrap_or(false);
        cfg.interrupt_before = Interrupts::from_value(&req["interrupt_before"]);
        cfg.interrupt_after = Interrupts::from_value(&req["interrupt_after"]);
        if let Some(n) = req["config"]["recursion_limit"].as_u64() {
            cfg.recursion_limit = n as usize;
        }
        if let Some(Value::Object(c)) = req["config"].get("configurable") {
            cfg.configurable.extend(c.clone());
        }
        let extra = json!({
            "langgraph_auth_user": null, "langgraph_auth_user_id": "", "langgraph_auth_permissions": [],
            "langgraph_request_id": uuid::Uuid::new_v4().to_string(), "__request_start_time_ms__": 0,
            "__after_seconds__": 0, "run_id": run_id, "thread_id": thread, "graph_id": graph_id,
            "assistant_id": assistant_id, "user_id": ""
        });
        if let Value::Object(e) = extra {
            cfg.configurable.extend(e);
        }
        let meta = json!({
            "created_by": "system", "graph_id": graph_id, "assistant_id": assistant_id, "run_attempt": 1,
            "langgraph_version": "1.2.22", "langgraph_api_version": "0.16.7", "langgraph_plan": "enterprise",
            "langgraph_host": "self-hosted", "langgraph_api_url": "http://127.0.0.1:2025", "run_id": run_id
        });
        if let Value::Object(m) = meta {
            cfg.metadata = m;
        }
        let input = if let Some(cmd) = req.get("command").filter(|c| !c.is_null()) {
            RunInput::Command(serde_json::from_value(cmd.clone()).ok()?)
        } else {
            match req.get("input") {
                None | Some(Value::Null) => RunInput::Null,
                Some(v) => RunInput::Values(v.clone()),
            }
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let sink: StreamSink =
            Arc::new(move |p: StreamPart| ev.lock().push((p.event_name(), p.data)));
        let outcome = graph
            .run(self.cp.clone(), input, cfg, sink, CancellationToken::new())
            .await;
        let mut events = events.lock().clone();
        if let Err(e) = &outcome {
            events.push((
                "error".into(),
                json!({"error": e.kind, "message": e.message}),
            ));
        }
        if !compare {
            return None;
        }
        Some((events, outcome))
    }

    async fn replay(&self, file: &str, scenarios: &Value) -> usize {
        let mut checked = 0;
        let mut last_graph: HashMap<String, String> = HashMap::new();
        for sc in scenarios.as_array().into_iter().flatten() {
            let title = sc["title"].as_str().unwrap_or_default();
            let Some(path) = sc["path"].as_str() else {
                continue;
            };
            let method = sc["method"].as_str().unwrap_or_default();
            let thread = thread_of(path);
            let what = format!("{file} / {title}");
            if method == "POST" && (path.ends_with("/runs/stream") || path.ends_with("/runs/wait"))
            {
                let req = &sc["request"];
                if let Some(g) = req["assistant_id"].as_str() {
                    last_graph.insert(thread.clone(), g.to_string());
                }
                let Some((events, outcome)) = self.run(&thread, req).await else {
                    continue;
                };
                if path.ends_with("/runs/stream") {
                    let expected: Vec<Value> = sc["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e[0] != "metadata")
                        .cloned()
                        .collect();
                    let ours: Vec<Value> = events.iter().map(|(n, d)| json!([n, d])).collect();
                    assert_eq!(
                        ours.len(),
                        expected.len(),
                        "{what}: event count\nours: {}\nref:  {}",
                        ours.iter()
                            .map(|e| e[0].to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        expected
                            .iter()
                            .map(|e| e[0].to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    for (i, (o, e)) in ours.iter().zip(&expected).enumerate() {
                        assert_same(o, e, &format!("{what} event #{i}"));
                    }
                } else {
                    let outcome = outcome.expect("wait run failed");
                    let mut body = outcome.values.clone();
                    if !outcome.interrupts.is_empty() {
                        body["__interrupt__"] = Value::Array(
                            outcome
                                .interrupts
                                .iter()
                                .map(Interrupt::to_stream_value)
                                .collect(),
                        );
                    }
                    assert_same(&body, &sc["body"], &what);
                }
                checked += 1;
            } else if method == "GET" && path.ends_with("/state") || path.contains("/state?") {
                let Some(g) = last_graph.get(&thread) else {
                    continue;
                };
                let graph = self.graph(g);
                let st = graph
                    .get_state(
                        self.cp.as_ref(),
                        &thread,
                        None,
                        path.contains("subgraphs=true"),
                    )
                    .await
                    .expect("get_state");
                let mut ours = st.to_value();
                let mut reference = sc["body"].clone();
                reduce_meta(&mut ours);
                reduce_meta(&mut reference);
                assert_same(&ours, &reference, &what);
                checked += 1;
            } else if path.ends_with("/history") || path.contains("/history?") {
                let Some(g) = last_graph.get(&thread) else {
                    assert_eq!(sc["body"], json!([]), "{what}");
                    continue;
                };
                let limit = sc["request"]["limit"]
                    .as_u64()
                    .or_else(|| path.split("limit=").nth(1).and_then(|s| s.parse().ok()))
                    .map(|n| n as usize);
                let hist = self
                    .graph(g)
                    .get_history(
                        self.cp.as_ref(),
                        &thread,
                        &ListOptions {
                            limit,
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("history");
                let mut ours = Value::Array(hist.iter().map(StateSnapshot::to_value).collect());
                let mut reference = sc["body"].clone();
                for v in ours
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .chain(reference.as_array_mut().into_iter().flatten())
                {
                    reduce_meta(v);
                }
                // the capture cuts long bodies: compare what it has
                if reference.is_array() {
                    assert_same(&ours, &reference, &what);
                }
                checked += 1;
            } else if method == "POST" && path.ends_with("/state") {
                let Some(g) = last_graph.get(&thread) else {
                    continue;
                };
                let req = &sc["request"];
                let mut meta = serde_json::Map::new();
                meta.insert("graph_id".into(), json!(g));
                meta.insert("thread_id".into(), json!(thread));
                let r = self
                    .graph(g)
                    .update_state(
                        self.cp.as_ref(),
                        &thread,
                        None,
                        req["values"].clone(),
                        req["as_node"].as_str(),
                        meta,
                    )
                    .await
                    .expect("update_state");
                let ours =
                    json!({"checkpoint": r, "configurable": r, "checkpoint_id": r.checkpoint_id});
                assert_same(&ours, &sc["body"], &what);
                checked += 1;
            }
        }
        checked
    }
}

async fn replay_file(file: &str) -> usize {
    let all: Value =
        serde_json::from_str(include_str!("fixtures/captures.json")).expect("fixtures");
    let h = Harness::new();
    h.replay(file, &all[file]).await
}

macro_rules! capture_test {
    ($name:ident, $file:expr, $min:expr) => {
        #[tokio::test]
        async fn $name() {
            let n = replay_file($file).await;
            assert!(n >= $min, "only {n} scenarios checked");
        }
    };
}

capture_test!(stream_values, "05-stream-values", 1);
capture_test!(stream_updates, "05-stream-updates", 1);
capture_test!(stream_custom, "05-stream-custom", 1);
capture_test!(stream_tasks, "05-stream-tasks", 1);
capture_test!(stream_checkpoints, "05-stream-checkpoints", 1);
capture_test!(stream_debug, "05-stream-debug", 1);
capture_test!(stream_events, "05-stream-events", 1);
capture_test!(stream_default, "05-stream-default", 2);
capture_test!(stream_messages_tuple, "05-stream-messages-tuple", 1);
capture_test!(stream_messages_from_node, "05-stream-messages-from-node", 2);
capture_test!(stream_subgraphs, "06-stream-subgraphs", 2);
capture_test!(interrupt_resume, "11-interrupt-resume", 7);
capture_test!(fail_and_recursion, "12-fail", 4);
capture_test!(thread_state, "03-thread-state", 7);

/// Scenarios recorded from the reference peer (langgraph-api 0.16.7 serving
/// `shared/peers/graphs`) beyond the shipped captures: events of chat/parent, subgraph
/// streams, breakpoints, every mode around an interrupt, failures, update_state as `__start__`.
#[tokio::test]
async fn peer_recordings() {
    let all: Value = serde_json::from_str(include_str!("fixtures/peer.json")).expect("fixtures");
    let h = Harness::new();
    let n = h.replay("peer", &all["peer"]).await;
    assert!(n >= 25, "only {n} scenarios checked");
}

/// The same recordings through a checkpointer that only has the required trait methods.
#[tokio::test]
async fn peer_recordings_with_plain_checkpointer() {
    let all: Value = serde_json::from_str(include_str!("fixtures/peer.json")).expect("fixtures");
    let h = Harness::plain();
    let n = h.replay("peer", &all["peer"]).await;
    assert!(n >= 25, "only {n} scenarios checked");
    let all: Value =
        serde_json::from_str(include_str!("fixtures/captures.json")).expect("fixtures");
    for file in [
        "11-interrupt-resume",
        "12-fail",
        "03-thread-state",
        "06-stream-subgraphs",
    ] {
        let h = Harness::plain();
        assert!(h.replay(file, &all[file]).await > 0);
    }
}

mod plain_checkpointer_conformance {
    use super::*;
    antler_graph::checkpointer_conformance!(async {
        Some(Arc::new(PlainCheckpointer(MemoryCheckpointer::new())) as Arc<dyn Checkpointer>)
    });
}
