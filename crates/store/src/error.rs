//! The one error type of the storage boundary.
//!
//! Every store implementation maps its backend failures into [`StoreError`], so the
//! gateway and the runtime handle a small, closed set of cases.

/// Errors returned by every store trait method.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist, or belongs to another owner (never leaks existence).
    #[error("not found")]
    NotFound,
    /// A row with the same key already exists (or a uniqueness rule was violated).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller passed something the store cannot accept (bad namespace, bad sort key ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A temporary backend condition (database busy/locked, pool exhausted); retrying may succeed.
    #[error("storage temporarily unavailable: {0}")]
    Transient(String),
    /// Any other backend failure.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StoreError {
    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound)
    }
}

/// Result alias used by every store trait.
pub type StoreResult<T> = Result<T, StoreError>;
