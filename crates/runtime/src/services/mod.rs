//! The runtime's services over storage: everything the HTTP layer does with threads,
//! assistants, store items, the run journal and feedback goes through one of these methods of
//! [`Runtime`](crate::Runtime), so the gateway never touches a store.
//!
//! Services own what the server generates: ids (UUIDv7, time-ordered; ids a client chose are
//! kept) and timestamps (UTC, microseconds, from [`antler_store::time`]). Inputs arrive
//! validated for syntax (the gateway's job); the services check what needs the stores or the
//! graph registry, in the order the API reports errors.

mod assistants;
mod items;
mod journal;
mod threads;

use serde::Deserialize;

pub use assistants::{AssistantChanges, NewAssistant};
pub use journal::{EventFilter, FeedbackInput, MessagePage};
pub use threads::{NewThread, PruneStrategy, StateUpdate};

/// What a create does when the id is taken (`if_exists` of thread and assistant creates).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum IfExists {
    /// 409.
    #[default]
    Raise,
    /// Answer the existing record.
    DoNothing,
}

/// A new server-generated id: UUIDv7 (time-ordered, so ids sort by creation).
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
