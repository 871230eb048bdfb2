//! The repositories, written once for every backend against [`crate::sql`].

pub(crate) mod assistants;
pub(crate) mod events;
pub(crate) mod feedback;
pub(crate) mod items;
pub(crate) mod runs;
pub(crate) mod threads;

pub use assistants::SqlAssistantStore;
pub use events::SqlRunEventStore;
pub use feedback::SqlFeedbackStore;
pub use items::SqlItemStore;
pub use runs::SqlRunStore;
pub use threads::SqlThreadStore;
