//! `antler-graph`: the graph engine. LangGraph semantics on JSON state: channels with reducers,
//! nodes, edges, Pregel supersteps, interrupts, subgraphs, checkpoints per step and every stream
//! mode. Pure library: no network, no database of its own (storage is the [`Checkpointer`]
//! trait, with [`MemoryCheckpointer`] in memory).
//!
//! Entry points: build with [`StateGraph`], run with [`CompiledGraph::run`], read state with
//! [`CompiledGraph::get_state`] / [`CompiledGraph::get_history`], write it with
//! [`CompiledGraph::update_state`]. The six example graphs live in [`examples`].

// `NodeError` carries a `Command` (parent commands): large, but moved rarely.
#![allow(clippy::result_large_err)]

pub mod checkpoint;
/// The [`Checkpointer`] conformance suite (feature `testing`; test crates enable it through
/// their `[dev-dependencies]`).
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod context;
pub mod examples;
pub mod graph;
pub mod messages;
mod pregel;
pub mod types;

pub use checkpoint::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointError, CheckpointTuple, Checkpointer,
    ListOptions, MemoryCheckpointer, OwnerCheckpointer, PendingWrite, new_checkpoint_id, now_ts,
    thread_key,
};
pub use context::{ModelCall, ModelCallInfo, NodeContext, NodeInput};
pub use graph::{CompiledGraph, StateGraph};
pub use serde_json::{Map, Value};
pub use tokio_util::sync::CancellationToken;
pub use types::{
    BuildError, ChannelJson, CheckpointRef, Command, END, GraphError, Interrupt, InterruptSignal,
    Interrupts, NodeError, NodeOutput, PARENT, Reducer, Route, RunConfig, RunInput, RunOutcome,
    START, SharedValues, StateSnapshot, StreamMode, StreamPart, StreamSink, TaskSnapshot,
};
