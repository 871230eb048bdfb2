//! Run-journal service (DeerFlow's extensions): token usage of a thread, a run's persisted
//! events and messages, the thread's message feed, and feedback on runs. Everything is
//! owner-scoped: another user's thread or run is not found.

use std::collections::HashMap;

use antler_store::{
    Feedback, Owner, RunEvent, RunEventQuery, RunId, ThreadId, TokenAggregate, time,
};
use serde_json::Map;

use super::new_id;
use crate::{Runtime, RuntimeError};

/// Paging of message feeds: `after_seq` pages forward, `before_seq` (or neither) backward
/// from the cursor (or the end). Checked by the service (`limit` 1..=max, cursors >= 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePage {
    pub limit: Option<i64>,
    pub before_seq: Option<i64>,
    pub after_seq: Option<i64>,
}

/// Filter of a run's events (`limit` 1..=2000, default 500).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only these event types (all when empty).
    pub event_types: Vec<String>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
}

/// Feedback as a client sends it; the service checks it (`rating` +1 or -1, `comment` at
/// most 10,000 bytes) and mints its id and time.
#[derive(Debug, Clone, Default)]
pub struct FeedbackInput {
    /// The rating, when the client sent an integer.
    pub rating: Option<i64>,
    pub comment: Option<String>,
    pub message_id: Option<String>,
}

/// Most messages a feed page holds.
const MAX_MESSAGE_PAGE: i64 = 200;

fn check_limit(limit: Option<i64>, default: i64, max: i64) -> Result<usize, RuntimeError> {
    let n = limit.unwrap_or(default);
    if !(1..=max).contains(&n) {
        return Err(RuntimeError::Invalid(format!(
            "limit must be between 1 and {max}, got {n}"
        )));
    }
    Ok(n as usize)
}

fn check_seq(name: &str, v: Option<i64>) -> Result<Option<i64>, RuntimeError> {
    match v {
        Some(n) if n < 1 => Err(RuntimeError::Invalid(format!(
            "{name} must be at least 1, got {n}"
        ))),
        other => Ok(other),
    }
}

/// The stored feedback of `input` (400 when it breaks DeerFlow's rules).
fn new_feedback(
    owner: &str,
    thread_id: &str,
    run_id: &str,
    input: FeedbackInput,
) -> Result<Feedback, RuntimeError> {
    let rating = match input.rating {
        Some(r @ (1 | -1)) => r,
        _ => {
            return Err(RuntimeError::BadRequest("rating must be +1 or -1".into()));
        }
    };
    if input.comment.as_ref().is_some_and(|c| c.len() > 10_000) {
        return Err(RuntimeError::BadRequest(
            "comment is too long (at most 10000 bytes)".into(),
        ));
    }
    Ok(Feedback {
        feedback_id: new_id(),
        run_id: run_id.to_string(),
        thread_id: thread_id.to_string(),
        owner: owner.to_string(),
        message_id: input.message_id,
        rating,
        comment: input.comment,
        metadata: Map::new(),
        created_at: time::now(),
    })
}

impl Runtime {
    /// Token usage of the thread's runs (finished ones; with `include_active` also the
    /// running ones' snapshots).
    pub async fn thread_token_usage(
        &self,
        owner: &str,
        thread_id: &str,
        include_active: bool,
    ) -> Result<TokenAggregate, RuntimeError> {
        self.require_thread(owner, thread_id).await?;
        Ok(self
            .stores
            .runs
            .aggregate_tokens_by_thread(Owner(owner), ThreadId(thread_id), include_active)
            .await?)
    }

    /// 404 `Run … not found` unless the run is `owner`'s and on the thread.
    async fn require_run(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
    ) -> Result<(), RuntimeError> {
        self.get_run(owner, thread_id, run_id)
            .await
            .map_err(|_| RuntimeError::NotFound(format!("Run {run_id} not found")))?;
        Ok(())
    }

    /// The persisted events of a run, in order.
    pub async fn run_events(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
        filter: EventFilter,
    ) -> Result<Vec<RunEvent>, RuntimeError> {
        let limit = check_limit(filter.limit, 500, 2000)?;
        self.require_run(owner, thread_id, run_id).await?;
        let query = RunEventQuery {
            run_id: Some(run_id.to_string()),
            event_types: filter.event_types,
            after_seq: filter.after_seq,
            limit: Some(limit),
            ..Default::default()
        };
        Ok(self
            .stores
            .events
            .list(Owner(owner), ThreadId(thread_id), &query)
            .await?)
    }

    /// One page of a run's message events (ascending) and whether more exist.
    pub async fn run_messages(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
        page: MessagePage,
    ) -> Result<(Vec<RunEvent>, bool), RuntimeError> {
        self.require_run(owner, thread_id, run_id).await?;
        self.message_page(owner, thread_id, Some(run_id), page)
            .await
    }

    /// One page of the thread's message events (ascending), each AI response that ends a run
    /// with the caller's latest feedback on that run, and whether more exist.
    pub async fn thread_messages(
        &self,
        owner: &str,
        thread_id: &str,
        page: MessagePage,
    ) -> Result<(Vec<(RunEvent, Option<Feedback>)>, bool), RuntimeError> {
        self.require_thread(owner, thread_id).await?;
        let (rows, more) = self.message_page(owner, thread_id, None, page).await?;
        // the caller's feedback rides on the last AI response of each run
        let mut last_response: HashMap<&str, i64> = HashMap::new();
        for e in rows.iter().filter(|e| e.event_type == "llm.ai.response") {
            last_response.insert(e.run_id.as_str(), e.seq);
        }
        let mut feedback = Vec::with_capacity(rows.len());
        for e in &rows {
            let latest = if last_response.get(e.run_id.as_str()) == Some(&e.seq) {
                self.stores
                    .feedback
                    .list_by_run(Owner(owner), ThreadId(thread_id), RunId(&e.run_id))
                    .await?
                    .pop()
            } else {
                None
            };
            feedback.push(latest);
        }
        Ok((rows.into_iter().zip(feedback).collect(), more))
    }

    /// One page of message events: `after_seq` pages forward, `before_seq` (or neither)
    /// backward from the cursor (or the end). Returns the page (ascending) and whether more
    /// exist.
    async fn message_page(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: Option<&str>,
        page: MessagePage,
    ) -> Result<(Vec<RunEvent>, bool), RuntimeError> {
        let limit = check_limit(page.limit, 50, MAX_MESSAGE_PAGE)?;
        let before_seq = check_seq("before_seq", page.before_seq)?;
        let after_seq = check_seq("after_seq", page.after_seq)?;
        let forward = after_seq.is_some() && before_seq.is_none();
        let query = RunEventQuery {
            run_id: run_id.map(str::to_string),
            category: Some("message".into()),
            after_seq: if forward { after_seq } else { None },
            before_seq: if forward {
                None
            } else {
                Some(before_seq.unwrap_or(i64::MAX))
            },
            limit: Some(limit + 1),
            ..Default::default()
        };
        let mut rows = self
            .stores
            .events
            .list(Owner(owner), ThreadId(thread_id), &query)
            .await?;
        let more = rows.len() > limit;
        if more {
            if forward {
                rows.truncate(limit);
            } else {
                rows.drain(..rows.len() - limit);
            }
        }
        Ok((rows, more))
    }

    /// Adds the caller's feedback on a run.
    pub async fn create_feedback(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
        input: FeedbackInput,
    ) -> Result<Feedback, RuntimeError> {
        self.save_feedback(owner, thread_id, run_id, input, false)
            .await
    }

    /// Sets the caller's feedback on a run (replacing theirs).
    pub async fn upsert_feedback(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
        input: FeedbackInput,
    ) -> Result<Feedback, RuntimeError> {
        self.save_feedback(owner, thread_id, run_id, input, true)
            .await
    }

    /// Checks and stores feedback on a run: added, or with `replace` in place of the
    /// caller's.
    async fn save_feedback(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
        input: FeedbackInput,
        replace: bool,
    ) -> Result<Feedback, RuntimeError> {
        self.require_run(owner, thread_id, run_id).await?;
        let feedback = new_feedback(owner, thread_id, run_id, input)?;
        let store = &self.stores.feedback;
        Ok(if replace {
            store.upsert(Owner(owner), feedback).await?
        } else {
            store.create(Owner(owner), feedback).await?
        })
    }

    /// The caller's feedback on a run, oldest first.
    pub async fn list_feedback(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
    ) -> Result<Vec<Feedback>, RuntimeError> {
        self.require_run(owner, thread_id, run_id).await?;
        Ok(self
            .stores
            .feedback
            .list_by_run(Owner(owner), ThreadId(thread_id), RunId(run_id))
            .await?)
    }

    /// Deletes the caller's feedback on a run (404 when there is none).
    pub async fn delete_run_feedback(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
    ) -> Result<(), RuntimeError> {
        self.require_run(owner, thread_id, run_id).await?;
        let deleted = self
            .stores
            .feedback
            .delete_by_run(Owner(owner), ThreadId(thread_id), RunId(run_id))
            .await?;
        if deleted == 0 {
            return Err(RuntimeError::NotFound(
                "No feedback found for this run".into(),
            ));
        }
        Ok(())
    }

    /// Deletes one feedback of the caller on the run (404 unless it is on that run).
    pub async fn delete_feedback(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
        feedback_id: &str,
    ) -> Result<(), RuntimeError> {
        match self.stores.feedback.get(Owner(owner), feedback_id).await? {
            Some(f) if f.thread_id == thread_id && f.run_id == run_id => {}
            _ => {
                return Err(RuntimeError::NotFound(format!(
                    "Feedback {feedback_id} not found"
                )));
            }
        }
        Ok(self
            .stores
            .feedback
            .delete(Owner(owner), feedback_id)
            .await?)
    }
}
