//! Records stored by the repositories.
//!
//! Field names are the LangGraph Platform API wire names, so the gateway can serialize a
//! record directly. Fields that are not part of the wire (owner, token counters ...) are
//! `#[serde(skip)]`: they never leak to clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time;

/// The owner of the system assistants (one per graph); visible to every owner.
pub const SYSTEM_OWNER: &str = "system";

/// Namespace used by LangGraph for the ids of graph assistants (`uuid5(NS, graph_id)`).
pub const ASSISTANT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6ba7b821_9dad_11d1_80b4_00c04fd430c8);

/// The id of the system assistant of a graph: `uuid5(6ba7b821-9dad-11d1-80b4-00c04fd430c8, graph_id)`.
pub fn system_assistant_id(graph_id: &str) -> String {
    uuid::Uuid::new_v5(&ASSISTANT_NAMESPACE, graph_id.as_bytes()).to_string()
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($body:tt)* }) => {
        string_enum!(@impl ["invalid ", stringify!($name), " '{}'"] $(#[$m])* $name { $($body)* });
    };
    // a parse error in the words of the request field (`invalid sort_by 'x' (expected a or b)`)
    ($(#[$m:meta])* $name:ident ($field:literal, expected $expected:literal) { $($body:tt)* }) => {
        string_enum!(@impl ["invalid ", $field, " '{}' (expected ", $expected, ")"]
            $(#[$m])* $name { $($body)* });
    };
    (@impl [$($msg:expr),+] $(#[$m:meta])* $name:ident {
        $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }
        impl $name {
            /// The wire / column text of this value.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $name {
            type Err = $crate::StoreError;
            fn from_str(s: &str) -> Result<Self, $crate::StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::StoreError::InvalidArgument(format!(concat!($($msg),+), other))),
                }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// Thread status as LangGraph reports it.
    ThreadStatus {
        /// No run is active.
        Idle => "idle",
        /// A run is active.
        Busy => "busy",
        /// The last run stopped in an interrupt.
        Interrupted => "interrupted",
        /// The last run failed.
        Error => "error",
    }
);

string_enum!(
    /// Run status: pending -> running -> success | error | interrupted | timeout.
    RunStatus {
        /// Queued, not started.
        Pending => "pending",
        /// Executing.
        Running => "running",
        /// Finished normally (also when it stopped in `interrupt()`).
        Success => "success",
        /// Failed.
        Error => "error",
        /// Cancelled.
        Interrupted => "interrupted",
        /// Exceeded its time limit.
        Timeout => "timeout",
    }
);

impl RunStatus {
    /// Pending or running.
    pub fn is_active(&self) -> bool {
        matches!(self, RunStatus::Pending | RunStatus::Running)
    }
    /// Not active any more.
    pub fn is_terminal(&self) -> bool {
        !self.is_active()
    }
}

string_enum!(
    /// What to do when a run is created on a thread that already has an active run
    /// (`multitask_strategy` of a run create, stored on the run).
    MultitaskStrategy {
        /// 409 if the thread is busy.
        Reject => "reject",
        /// Cancel the active run (it becomes `interrupted`, its finished steps stay), then run.
        Interrupt => "interrupt",
        /// Cancel the active run and delete it with its checkpoints, then run.
        Rollback => "rollback",
        /// Wait in line behind the active run(s).
        Enqueue => "enqueue",
    }
);

impl MultitaskStrategy {
    /// Parses the wire value (`None` when it is none of them).
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// How the thread's active runs are cancelled before this run starts (`None`: they are
    /// not: `reject` refuses the new run, `enqueue` waits for them).
    pub fn cancel_action(&self) -> Option<CancelAction> {
        match self {
            MultitaskStrategy::Interrupt => Some(CancelAction::Interrupt),
            MultitaskStrategy::Rollback => Some(CancelAction::Rollback),
            MultitaskStrategy::Reject | MultitaskStrategy::Enqueue => None,
        }
    }
}

string_enum!(
    /// How a run is cancelled (`action` of a cancel; the spelling of `runs.cancel_requested`).
    CancelAction {
        /// Stop at the next await; keep finished steps; run becomes `interrupted`.
        Interrupt => "interrupt",
        /// Stop, then delete the run and its checkpoints.
        Rollback => "rollback",
    }
);

impl CancelAction {
    /// Parses the wire value (`interrupt` | `rollback`; `None` otherwise).
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

string_enum!(
    /// Sort direction for searches.
    SortOrder {
        /// Ascending.
        Asc => "asc",
        /// Descending.
        Desc => "desc",
    }
);

#[allow(clippy::derivable_impls)] // the enum is declared by a macro
impl Default for SortOrder {
    fn default() -> Self {
        SortOrder::Desc
    }
}

/// An assistant: a graph plus configuration, versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub assistant_id: String,
    pub graph_id: String,
    pub config: Value,
    pub context: Value,
    pub metadata: Map<String, Value>,
    pub name: String,
    #[serde(with = "time::serde_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time::serde_micros")]
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub description: Option<String>,
    /// Who owns it ([`SYSTEM_OWNER`] for graph assistants, visible to all).
    #[serde(skip)]
    pub owner: String,
}

impl Assistant {
    /// The assistant as a store keeps it for `owner`: timestamps at microsecond precision.
    pub fn stored_for(mut self, owner: &str) -> Assistant {
        self.owner = owner.to_string();
        self.created_at = time::truncate(self.created_at);
        self.updated_at = time::truncate(self.updated_at);
        self
    }

    /// A version-1 assistant created now; `owner` is set by the store on create.
    pub fn new(
        assistant_id: impl Into<String>,
        graph_id: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        let now = time::now();
        Assistant {
            assistant_id: assistant_id.into(),
            graph_id: graph_id.into(),
            config: Value::Object(Map::new()),
            context: Value::Object(Map::new()),
            metadata: Map::new(),
            name: name.into(),
            created_at: now,
            updated_at: now,
            version: 1,
            description: None,
            owner: String::new(),
        }
    }

    /// The system assistant of a graph (LangGraph's shape: uuid5 id, `created_by: system`).
    pub fn system(graph_id: &str) -> Self {
        let mut a = Assistant::new(system_assistant_id(graph_id), graph_id, graph_id);
        a.metadata
            .insert("created_by".into(), Value::String("system".into()));
        a.owner = SYSTEM_OWNER.to_string();
        a
    }

    /// The version row describing the current state.
    pub fn to_version(&self) -> AssistantVersion {
        AssistantVersion {
            assistant_id: self.assistant_id.clone(),
            version: self.version,
            graph_id: self.graph_id.clone(),
            config: self.config.clone(),
            context: self.context.clone(),
            metadata: self.metadata.clone(),
            created_at: self.updated_at,
            name: self.name.clone(),
            description: self.description.clone(),
        }
    }
}

/// One version of an assistant (POST /assistants/{id}/versions items).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantVersion {
    pub assistant_id: String,
    pub version: i64,
    pub graph_id: String,
    pub config: Value,
    pub context: Value,
    pub metadata: Map<String, Value>,
    #[serde(with = "time::serde_micros")]
    pub created_at: DateTime<Utc>,
    pub name: String,
    pub description: Option<String>,
}

/// A thread.
///
/// `values`, `error` and `interrupts` use `None` for "key absent" and `Some(Value::Null)` for an
/// explicit `null`: a new thread has `"values": null` and no `error` / `interrupts` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub thread_id: String,
    #[serde(with = "time::serde_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time::serde_micros")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "time::serde_micros")]
    pub state_updated_at: DateTime<Utc>,
    pub metadata: Map<String, Value>,
    pub status: ThreadStatus,
    pub config: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<Value>,
    /// Who owns it (set by the store on create).
    #[serde(skip)]
    pub owner: String,
}

impl Thread {
    /// The thread as a store keeps it for `owner`: timestamps at microsecond precision.
    pub fn stored_for(mut self, owner: &str) -> Thread {
        self.owner = owner.to_string();
        self.created_at = time::truncate(self.created_at);
        self.updated_at = time::truncate(self.updated_at);
        self.state_updated_at = time::truncate(self.state_updated_at);
        self
    }

    /// A new idle thread created now (`values: null`, `config: {}`).
    pub fn new(thread_id: impl Into<String>, metadata: Map<String, Value>) -> Self {
        let now = time::now();
        Thread {
            thread_id: thread_id.into(),
            created_at: now,
            updated_at: now,
            state_updated_at: now,
            metadata,
            status: ThreadStatus::Idle,
            config: Value::Object(Map::new()),
            values: Some(Value::Null),
            error: None,
            interrupts: None,
            owner: String::new(),
        }
    }
}

/// A run. Wire fields first; the rest are the seeds' RunStore columns (not serialized).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    pub thread_id: String,
    pub assistant_id: String,
    pub metadata: Map<String, Value>,
    pub status: RunStatus,
    pub kwargs: Value,
    pub multitask_strategy: MultitaskStrategy,
    #[serde(with = "time::serde_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time::serde_micros")]
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub owner: String,
    #[serde(skip)]
    pub model_name: Option<String>,
    #[serde(skip)]
    pub error: Option<String>,
    #[serde(skip)]
    pub total_input_tokens: i64,
    #[serde(skip)]
    pub total_output_tokens: i64,
    #[serde(skip)]
    pub total_tokens: i64,
    #[serde(skip)]
    pub llm_call_count: i64,
    #[serde(skip)]
    pub lead_agent_tokens: i64,
    #[serde(skip)]
    pub subagent_tokens: i64,
    #[serde(skip)]
    pub middleware_tokens: i64,
    #[serde(skip)]
    pub message_count: i64,
    #[serde(skip)]
    pub last_ai_message: Option<String>,
    #[serde(skip)]
    pub first_human_message: Option<String>,
    /// When it moved to `running` (first time).
    #[serde(skip)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(skip)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Stateless run on a temporary thread.
    #[serde(skip)]
    pub temporary: bool,
    /// The process (replica) that owns the run while it is pending or running.
    #[serde(skip)]
    pub worker_id: Option<String>,
    /// Until when `worker_id` owns it; after that any process may adopt the run.
    #[serde(skip)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// A cancel asked for on a replica that does not execute the run: the action
    /// (`interrupt` | `rollback`), carried out by the owner when it polls its runs.
    #[serde(skip)]
    pub cancel_requested: Option<CancelAction>,
}

impl Run {
    /// The run as every store keeps it: timestamps at microsecond precision.
    pub fn as_stored(&self) -> Run {
        let mut run = self.clone();
        run.created_at = time::truncate(run.created_at);
        run.updated_at = time::truncate(run.updated_at);
        run.started_at = run.started_at.map(time::truncate);
        run.finished_at = run.finished_at.map(time::truncate);
        run.lease_expires_at = run.lease_expires_at.map(time::truncate);
        run
    }

    /// A pending run created now with empty metadata/kwargs and zero counters.
    pub fn new(
        run_id: impl Into<String>,
        thread_id: impl Into<String>,
        assistant_id: impl Into<String>,
        owner: impl Into<String>,
    ) -> Self {
        let now = time::now();
        Run {
            run_id: run_id.into(),
            thread_id: thread_id.into(),
            assistant_id: assistant_id.into(),
            created_at: now,
            updated_at: now,
            metadata: Map::new(),
            status: RunStatus::Pending,
            kwargs: Value::Object(Map::new()),
            multitask_strategy: MultitaskStrategy::Enqueue,
            owner: owner.into(),
            model_name: None,
            error: None,
            total_input_tokens: 0,
            total_output_tokens: 0,
            total_tokens: 0,
            llm_call_count: 0,
            lead_agent_tokens: 0,
            subagent_tokens: 0,
            middleware_tokens: 0,
            message_count: 0,
            last_ai_message: None,
            first_human_message: None,
            started_at: None,
            finished_at: None,
            temporary: false,
            worker_id: None,
            lease_expires_at: None,
            cancel_requested: None,
        }
    }
}

/// One server process of a deployment, as the replica registry (`replicas` table) knows it.
/// Its heartbeat refreshes `heartbeat_at`; a replica whose heartbeat is older than the run
/// lease TTL is presumed dead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// The process's worker id (the `runs.worker_id` of the runs it owns).
    pub replica_id: String,
    #[serde(with = "time::serde_micros")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "time::serde_micros")]
    pub heartbeat_at: DateTime<Utc>,
    /// Host name of the machine it runs on.
    pub host: String,
    /// Its process id on that host (a dead process on this host is detected by pid).
    pub pid: i64,
    /// Database backend (`sqlite`, `postgres`, `mysql`, `memory`).
    pub database: String,
    /// Stream bridge (`memory`, `redis`).
    pub bridge: String,
}

/// Final figures of a run (`update_run_completion` of the seeds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunCompletion {
    pub status: Option<RunStatus>,
    pub total_input_tokens: i64,
    pub total_output_tokens: i64,
    pub total_tokens: i64,
    pub llm_call_count: i64,
    pub lead_agent_tokens: i64,
    pub subagent_tokens: i64,
    pub middleware_tokens: i64,
    pub message_count: i64,
    pub last_ai_message: Option<String>,
    pub first_human_message: Option<String>,
    pub error: Option<String>,
}

/// Best-effort running snapshot (`update_run_progress`): `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunProgress {
    pub total_input_tokens: Option<i64>,
    pub total_output_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub llm_call_count: Option<i64>,
    pub lead_agent_tokens: Option<i64>,
    pub subagent_tokens: Option<i64>,
    pub middleware_tokens: Option<i64>,
    pub message_count: Option<i64>,
    pub last_ai_message: Option<String>,
    pub first_human_message: Option<String>,
}

/// Per-model token bucket of [`TokenAggregate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTokens {
    pub tokens: i64,
    pub runs: i64,
}

/// Per-caller token split of [`TokenAggregate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerTokens {
    pub lead_agent: i64,
    pub subagent: i64,
    pub middleware: i64,
}

/// Token usage of a thread (DeerFlow's `GET /api/threads/{id}/token-usage` body minus
/// `thread_id` / `context_usage`, which the gateway adds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAggregate {
    pub total_tokens: i64,
    pub total_input_tokens: i64,
    pub total_output_tokens: i64,
    pub total_runs: i64,
    pub by_model: BTreeMap<String, ModelTokens>,
    pub by_caller: CallerTokens,
}

/// An event to append (the store assigns `seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRunEvent {
    pub thread_id: String,
    pub run_id: String,
    pub event_type: String,
    pub category: String,
    pub content: Value,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl NewRunEvent {
    /// An event created now with `metadata: {}`.
    pub fn new(
        thread_id: impl Into<String>,
        run_id: impl Into<String>,
        event_type: impl Into<String>,
        category: impl Into<String>,
        content: Value,
    ) -> Self {
        NewRunEvent {
            thread_id: thread_id.into(),
            run_id: run_id.into(),
            event_type: event_type.into(),
            category: category.into(),
            content,
            metadata: Value::Object(Map::new()),
            created_at: time::now(),
        }
    }
}

/// A persisted run event; `seq` increases strictly per thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub thread_id: String,
    pub run_id: String,
    pub seq: i64,
    pub event_type: String,
    pub category: String,
    pub content: Value,
    pub metadata: Value,
    #[serde(with = "time::serde_micros")]
    pub created_at: DateTime<Utc>,
}

/// Feedback on a run (DeerFlow's `FeedbackResponse`; the owner is `user_id` on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub feedback_id: String,
    pub run_id: String,
    pub thread_id: String,
    #[serde(rename = "user_id")]
    pub owner: String,
    pub message_id: Option<String>,
    /// +1 or -1 in DeerFlow; the store accepts any integer score.
    pub rating: i64,
    pub comment: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(with = "time::serde_micros")]
    pub created_at: DateTime<Utc>,
}

/// An item of the LangGraph store API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreItem {
    pub namespace: Vec<String>,
    pub key: String,
    pub value: Value,
    #[serde(with = "time::serde_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time::serde_micros")]
    pub updated_at: DateTime<Utc>,
}

/// A search hit: the item plus `score` (null without a semantic query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchItem {
    #[serde(flatten)]
    pub item: StoreItem,
    pub score: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn system_assistant_ids_match_langgraph() {
        assert_eq!(
            system_assistant_id("echo"),
            "046b5dc7-2108-582c-9c6c-31d556d138f0"
        );
        assert_eq!(
            system_assistant_id("parent"),
            "0b226d00-e4ec-5b58-8e33-88f4bd4debe7"
        );
        assert_eq!(
            system_assistant_id("chat"),
            "eb6db400-e3c8-5d06-a834-015cb89efe69"
        );
    }

    #[test]
    fn new_thread_serializes_like_the_capture() {
        let mut t = Thread::new("t1", Map::new());
        t.owner = "secret-owner".into();
        let v = serde_json::to_value(&t).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "thread_id",
                "created_at",
                "updated_at",
                "state_updated_at",
                "metadata",
                "status",
                "config",
                "values"
            ]
        );
        assert_eq!(v["values"], Value::Null);
        assert_eq!(v["status"], json!("idle"));
        assert!(!v.to_string().contains("secret-owner"));
    }

    #[test]
    fn assistant_serializes_wire_keys() {
        let a = Assistant::system("echo");
        let v = serde_json::to_value(&a).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "assistant_id",
                "graph_id",
                "config",
                "context",
                "metadata",
                "name",
                "created_at",
                "updated_at",
                "version",
                "description"
            ]
        );
        assert_eq!(v["metadata"], json!({"created_by": "system"}));
    }

    #[test]
    fn run_hides_internal_fields() {
        let mut r = Run::new("r", "t", "a", "bob");
        r.total_tokens = 5;
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("owner").is_none());
        assert!(v.get("total_tokens").is_none());
        assert_eq!(v["status"], json!("pending"));
        assert_eq!(v["multitask_strategy"], json!("enqueue"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
        }
        for s in ThreadStatus::ALL {
            assert_eq!(s.as_str().parse::<ThreadStatus>().unwrap(), *s);
        }
        for s in MultitaskStrategy::ALL {
            assert_eq!(MultitaskStrategy::parse(s.as_str()), Some(*s));
        }
        for a in CancelAction::ALL {
            assert_eq!(CancelAction::parse(a.as_str()), Some(*a));
        }
        assert_eq!(MultitaskStrategy::parse("bogus"), None);
        assert!("nope".parse::<RunStatus>().is_err());
    }

    #[test]
    fn search_item_flattens() {
        let item = StoreItem {
            namespace: vec!["a".into()],
            key: "k".into(),
            value: json!({"x": 1}),
            created_at: time::now(),
            updated_at: time::now(),
        };
        let v = serde_json::to_value(SearchItem { item, score: None }).unwrap();
        assert_eq!(v["score"], Value::Null);
        assert_eq!(v["key"], json!("k"));
    }
}
