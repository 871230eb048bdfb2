//! The Pregel run loop: supersteps over channels, pending writes, interrupts and resume,
//! subgraphs, stream output of every mode, and the state API (`get_state`, `get_history`,
//! `update_state`).
//!
//! Channels of a checkpoint: the state keys, plus trigger channels `__start__` (the input),
//! `branch:to:<node>` (static / conditional edges and `goto`), `join:<a>+<b>:<node>` (fan-in)
//! and `__pregel_tasks` (pending `Send`s). A node runs in the next step when one of its trigger
//! channels has a newer version than the one it last saw (`versions_seen`).
//!
//! Pending writes of a checkpoint are keyed by task id: successful writes under the task id,
//! an error under `<id>~error`, interrupts under `<id>~interrupt~<n>` and resume values under
//! `<id>~resume~<n>` (so every record is written once and never overwritten).
//!
//! Files: `api` (the public entry points), `run_loop` (load, then supersteps) and `input` (the
//! run's input before the first step), `node` / `subgraph` (running one task) and `writes` (its
//! output as writes), `exec` (the executor: checkpoint saves and stream output), `channels`,
//! `tasks` (which tasks a checkpoint triggers) and `pending` (pending writes by task).

mod api;
mod channels;
mod exec;
mod input;
mod node;
mod pending;
mod run_loop;
mod subgraph;
mod tasks;
mod writes;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpointer;
use crate::graph::CompiledGraph;
use crate::types::{RunConfig, RunInput, StreamSink};

pub(crate) use tasks::interrupt_id;

const TASKS: &str = "__pregel_tasks";
const NO_WRITES: &str = "__no_writes__";
const ERROR: &str = "__error__";
const INTERRUPT: &str = "__interrupt__";
const RESUME: &str = "__resume__";

fn branch(node: &str) -> String {
    format!("branch:to:{node}")
}

fn recursion_message(limit: usize) -> String {
    format!(
        "Recursion limit of {limit} reached without hitting a stop condition. You can increase the limit by setting the `recursion_limit` config key.\nFor troubleshooting, visit: https://docs.langchain.com/oss/python/langgraph/errors/GRAPH_RECURSION_LIMIT"
    )
}

fn conflict_message(key: &str) -> String {
    format!(
        "At key '{key}': Can receive only one value per step. Use an Annotated key to handle multiple values.\nFor troubleshooting, visit: https://docs.langchain.com/oss/python/langgraph/errors/INVALID_CONCURRENT_GRAPH_UPDATE"
    )
}

/// Compile-time check: the run future is `Send` (the runtime spawns it).
#[allow(dead_code)]
fn _assert_send(g: CompiledGraph, cp: Arc<dyn Checkpointer>) {
    fn is_send<T: Send>(_: T) {}
    let sink: StreamSink = Arc::new(|_| {});
    is_send(async move {
        let _ = g
            .run(
                cp,
                RunInput::Null,
                RunConfig::new("t", "r"),
                sink,
                CancellationToken::new(),
            )
            .await;
    });
}
