//! The run journal: records a run's events, counts tokens by caller and model, and keeps
//! best-effort progress snapshots (at most one per 5 s) of the run row. It is a synchronous
//! accumulator fed by the engine's sink as parts are produced; the run's session drains what
//! it recorded into each unit it commits (so a step's events commit with its checkpoint).
//!
//! It observes the engine's `updates` parts (the executor always asks the engine for them; they
//! are only published when the client asked for them too): every AI / tool message a node
//! returns becomes a message event, and `usage_metadata` on AI messages feeds the counters.
//! Model calls outside the conversation (title middleware, subagents) arrive as AI-message
//! shaped records under an update's `llm_usage` key: they are counted (by their
//! `additional_kwargs.caller`) but are not messages. The run's model (`by_model` of the
//! token-usage report) is the `response_metadata.model_name` of its first lead-agent AI
//! message, else of its first model call of any caller; it is written to the run row once.

use std::time::{Duration, Instant};

use antler_graph::{StreamMode, StreamPart};
use antler_store::{NewRunEvent, Run, RunCompletion, RunProgress, RunStatus, WriteOp};
use serde_json::{Value, json};

use crate::{RunCreate, Runtime};

/// Longest text kept for `last_ai_message` / `first_human_message`.
const MAX_TEXT: usize = 2000;
/// Progress snapshots are written at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Journal {
    thread_id: String,
    run_id: String,
    /// Content of non-message events longer than this (as JSON) is truncated
    /// (`run_events.max_trace_content`).
    max_trace: usize,
    persist: bool,
    buffer: Vec<NewRunEvent>,
    /// Run-row changes for the next unit (model name, progress snapshot).
    ops: Vec<WriteOp>,
    counters: RunCompletion,
    last_progress: Instant,
    dirty: bool,
    /// The run's model as recorded on the row (None: not yet; see the module doc).
    model_name: Option<String>,
    /// Whether `model_name` came from a lead-agent message (then it is final).
    model_from_lead: bool,
    /// The input's first human message (canonical, with the id it has in the state, when the
    /// executor could make it so): the `llm.human.input` event's content.
    first_human: Option<Value>,
}

fn text_of(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let s: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("");
            Some(s)
        }
        _ => None,
    }
}

fn truncate(s: String) -> String {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Which caller a message's tokens belong to: a `caller` hint in `additional_kwargs` or the
/// `name` (`subagent:*`, `middleware:*`), else the lead agent.
fn caller_of(msg: &Value) -> &str {
    let hint = msg
        .pointer("/additional_kwargs/caller")
        .and_then(Value::as_str)
        .or_else(|| msg.get("name").and_then(Value::as_str))
        .unwrap_or("lead_agent");
    if hint.starts_with("subagent:") {
        "subagent"
    } else if hint.starts_with("middleware:") {
        "middleware"
    } else {
        "lead_agent"
    }
}

/// DeerFlow's trace truncation: content whose JSON is longer than `limit` bytes becomes the
/// first `limit` bytes of that JSON (on a character boundary), marked in the metadata with
/// `content_truncated` and `original_content_length`.
fn truncate_trace(content: Value, mut metadata: Value, limit: usize) -> (Value, Value) {
    let Ok(s) = serde_json::to_string(&content) else {
        return (content, metadata);
    };
    if s.len() <= limit {
        return (content, metadata);
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if let Value::Object(m) = &mut metadata {
        m.insert("content_truncated".into(), json!(true));
        m.insert("original_content_length".into(), json!(s.len()));
    }
    (Value::String(s[..end].to_string()), metadata)
}

impl Journal {
    /// `persist: false` keeps the counters but writes no run events (ephemeral runs).
    pub(crate) fn new(rt: &Runtime, run: &Run, request: &RunCreate, persist: bool) -> Self {
        let first_human = request
            .input
            .as_ref()
            .and_then(|i| i.get("messages"))
            .and_then(Value::as_array)
            .and_then(|msgs| {
                msgs.iter().find(|m| {
                    matches!(
                        m.get("type")
                            .or_else(|| m.get("role"))
                            .and_then(Value::as_str),
                        Some("human" | "user")
                    )
                })
            })
            .cloned();
        let first_human_message = first_human
            .as_ref()
            .and_then(|m| text_of(m.get("content")))
            .map(truncate);
        let counters = RunCompletion {
            first_human_message,
            ..Default::default()
        };
        Self {
            thread_id: run.thread_id.clone(),
            run_id: run.run_id.clone(),
            max_trace: rt.config().max_trace_content,
            persist,
            buffer: Vec::new(),
            ops: Vec::new(),
            counters,
            last_progress: Instant::now(),
            dirty: false,
            model_name: None,
            model_from_lead: false,
            first_human,
        }
    }

    fn push(&mut self, event_type: &str, category: &str, content: Value, metadata: Value) {
        if !self.persist {
            return;
        }
        let (content, metadata) = if category == "message" {
            (content, metadata)
        } else {
            truncate_trace(content, metadata, self.max_trace)
        };
        let mut ev = NewRunEvent::new(&self.thread_id, &self.run_id, event_type, category, content);
        ev.metadata = metadata;
        self.buffer.push(ev);
    }

    /// What was recorded since the last call: the run events, and the run-row changes.
    pub(crate) fn drain(&mut self) -> (Vec<NewRunEvent>, Vec<WriteOp>) {
        (
            std::mem::take(&mut self.buffer),
            std::mem::take(&mut self.ops),
        )
    }

    /// `run.start` and the human input.
    pub(crate) fn start(&mut self) {
        self.push(
            "run.start",
            "trace",
            json!({"run_id": self.run_id}),
            json!({}),
        );
        // DeerFlow's row: the message as `model_dump()` gives it, the caller in the metadata
        if let Some(h) = self.first_human.take() {
            self.push(
                "llm.human.input",
                "message",
                h,
                json!({"caller": "lead_agent"}),
            );
        }
    }

    /// Observes one engine part.
    pub(crate) fn observe(&mut self, part: &StreamPart) {
        if part.mode != StreamMode::Updates || !part.ns.is_empty() {
            return;
        }
        let Some(updates) = part.data.as_object() else {
            return;
        };
        let model_before = self.model_name.clone();
        for (node, update) in updates {
            if let Some(Value::Array(records)) = update.get("llm_usage") {
                for rec in records {
                    self.count_usage(rec);
                }
            }
            let Some(msgs) = update.get("messages") else {
                continue;
            };
            let list: Vec<Value> = match msgs {
                Value::Array(a) => a.clone(),
                Value::Object(_) => vec![msgs.clone()],
                _ => continue,
            };
            for m in list {
                self.observe_message(node, m);
            }
        }
        if self.model_name != model_before {
            self.ops.push(WriteOp::RunModelName {
                run_id: self.run_id.clone(),
                model_name: self.model_name.clone(),
            });
        }
        if self.dirty && self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.dirty = false;
            self.last_progress = Instant::now();
            let progress = self.progress();
            self.ops.push(WriteOp::RunProgress {
                run_id: self.run_id.clone(),
                progress,
            });
        }
    }

    fn progress(&self) -> RunProgress {
        let c = &self.counters;
        RunProgress {
            total_input_tokens: Some(c.total_input_tokens),
            total_output_tokens: Some(c.total_output_tokens),
            total_tokens: Some(c.total_tokens),
            llm_call_count: Some(c.llm_call_count),
            lead_agent_tokens: Some(c.lead_agent_tokens),
            subagent_tokens: Some(c.subagent_tokens),
            middleware_tokens: Some(c.middleware_tokens),
            message_count: Some(c.message_count),
            last_ai_message: c.last_ai_message.clone(),
            first_human_message: c.first_human_message.clone(),
        }
    }

    /// Adds an AI message's (or usage record's) `usage_metadata` to the counters of its
    /// caller, and notes its model.
    fn count_usage(&mut self, m: &Value) {
        let caller = caller_of(m);
        if let Some(model) = m
            .pointer("/response_metadata/model_name")
            .or_else(|| m.pointer("/response_metadata/model"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            && !self.model_from_lead
            && (caller == "lead_agent" || self.model_name.is_none())
        {
            self.model_name = Some(model.to_string());
            self.model_from_lead = caller == "lead_agent";
        }
        let Some(u) = m.get("usage_metadata").filter(|u| u.is_object()) else {
            return;
        };
        let input = u.get("input_tokens").and_then(Value::as_i64).unwrap_or(0);
        let output = u.get("output_tokens").and_then(Value::as_i64).unwrap_or(0);
        let total = u
            .get("total_tokens")
            .and_then(Value::as_i64)
            .unwrap_or(input + output);
        if total <= 0 {
            return;
        }
        let c = &mut self.counters;
        c.total_input_tokens += input;
        c.total_output_tokens += output;
        c.total_tokens += total;
        c.llm_call_count += 1;
        match caller {
            "subagent" => c.subagent_tokens += total,
            "middleware" => c.middleware_tokens += total,
            _ => c.lead_agent_tokens += total,
        }
        self.dirty = true;
    }

    fn observe_message(&mut self, node: &str, m: Value) {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "ai" | "AIMessageChunk" => {
                let caller = caller_of(&m).to_string();
                self.count_usage(&m);
                let has_tools = m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if caller == "lead_agent" && !has_tools {
                    self.counters.message_count += 1;
                    self.counters.last_ai_message = text_of(m.get("content")).map(truncate);
                    self.dirty = true;
                }
                let event_type = if has_tools {
                    "llm.ai.tool_call"
                } else {
                    "llm.ai.response"
                };
                self.push(
                    event_type,
                    "message",
                    m,
                    json!({"caller": caller, "node": node}),
                );
            }
            "tool" => self.push("llm.tool.result", "message", m, json!({"node": node})),
            _ => {}
        }
    }

    /// The counters as the run row's completion fields.
    pub(crate) fn completion(&self) -> RunCompletion {
        let mut c = self.counters.clone();
        c.status = None;
        c
    }

    /// `run.end` / `run.error` (drained with the run's last unit).
    pub(crate) fn finish(&mut self, status: RunStatus, error: Option<&Value>) {
        match status {
            RunStatus::Error | RunStatus::Timeout => {
                let content = error.cloned().unwrap_or(Value::Null);
                self.push("run.error", "error", content, json!({}));
            }
            _ => {
                let content = json!({"status": status.as_str()});
                self.push("run.end", "outputs", content, json!({}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_content_is_cut_at_the_limit_on_a_char_boundary() {
        let (c, m) = truncate_trace(json!({"a": "é".repeat(10)}), json!({"node": "x"}), 12);
        let s = c.as_str().unwrap();
        assert!(s.len() <= 12 && s.starts_with("{\"a\":\""), "{s}");
        assert_eq!(m["content_truncated"], true);
        assert_eq!(m["original_content_length"], 28);
        assert_eq!(m["node"], "x");
        let (c, m) = truncate_trace(json!("short"), json!({}), 12);
        assert_eq!((c, m), (json!("short"), json!({})));
    }
}
