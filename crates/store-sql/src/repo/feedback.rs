//! `feedback` table.

use antler_store::{
    Feedback, FeedbackStore, Owner, RunId, StoreError, StoreResult, ThreadId, time,
};

use crate::sql::{Arg, Conn, Db, Dialect, Sql, SqlRow, WriteClass, from_row, listing, transaction};

/// [`FeedbackStore`] on any SQL backend.
#[derive(Debug, Clone)]
pub struct SqlFeedbackStore<D: Dialect> {
    pub(crate) db: Db<D>,
}

fn row_to_feedback(row: &impl SqlRow) -> StoreResult<Feedback> {
    from_row!(row => Feedback {
        feedback_id: str, run_id: str, thread_id: str, owner: str, message_id: opt_str,
        rating: i64, comment: opt_str, metadata: map, created_at: ts,
    })
}

async fn insert<D: Dialect>(conn: &mut Conn<D>, f: &Feedback) -> StoreResult<()> {
    let sql = Sql::new(
        "INSERT INTO feedback (feedback_id, run_id, thread_id, owner, message_id, rating, comment, metadata, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .arg(&f.feedback_id)
    .arg(&f.run_id)
    .arg(&f.thread_id)
    .arg(&f.owner)
    .arg(&f.message_id)
    .arg(f.rating)
    .arg(&f.comment)
    .arg(Arg::map(&f.metadata))
    .arg(f.created_at);
    match D::execute(conn, &sql).await {
        Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
            "feedback {} already exists",
            f.feedback_id
        ))),
        other => other.map(|_| ()),
    }
}

fn prepare(owner: &str, mut f: Feedback) -> Feedback {
    f.owner = owner.to_string();
    f.created_at = time::truncate(f.created_at);
    f
}

/// `owner`'s feedback on (thread, run), oldest first.
fn by_run(owner: &str, thread_id: &str, run_id: &str) -> Sql {
    Sql::new("SELECT * FROM feedback WHERE owner = ? AND thread_id = ? AND run_id = ? ORDER BY created_at ASC, feedback_id ASC")
        .arg(owner)
        .arg(thread_id)
        .arg(run_id)
}

impl<D: Dialect> SqlFeedbackStore<D> {
    /// Replaces the owner's feedback on the run (keeping the oldest id) inside `tx`.
    async fn replace(&self, conn: &mut Conn<D>, f: &Feedback) -> StoreResult<Feedback> {
        if let Some(lock) = D::key_lock(format!(
            "antler-feedback\u{1f}{}\u{1f}{}\u{1f}{}",
            f.owner, f.thread_id, f.run_id
        )) {
            D::execute(conn, &lock).await?;
        }
        let mut first = by_run(&f.owner, &f.thread_id, &f.run_id);
        first.push(" LIMIT 1").push(D::FOR_UPDATE);
        let existing = D::fetch_optional(conn, &first).await?;
        let mut row = f.clone();
        if let Some(existing) = existing {
            let delete =
                Sql::new("DELETE FROM feedback WHERE owner = ? AND thread_id = ? AND run_id = ?")
                    .arg(&f.owner)
                    .arg(&f.thread_id)
                    .arg(&f.run_id);
            D::execute(conn, &delete).await?;
            row.feedback_id = existing.str("feedback_id")?;
        }
        insert::<D>(conn, &row).await?;
        Ok(row)
    }
}

#[async_trait::async_trait]
impl<D: Dialect> FeedbackStore for SqlFeedbackStore<D> {
    async fn create(&self, owner: Owner<'_>, feedback: Feedback) -> StoreResult<Feedback> {
        let f = prepare(owner.as_str(), feedback);
        self.db
            .retry(|| async {
                let _write = self.db.lock(WriteClass::Background).await;
                let mut conn = self.db.acquire().await?;
                insert::<D>(&mut conn, &f).await
            })
            .await?;
        Ok(f)
    }

    async fn upsert(&self, owner: Owner<'_>, feedback: Feedback) -> StoreResult<Feedback> {
        let f = prepare(owner.as_str(), feedback);
        transaction!(self.db, WriteClass::Background, |tx| {
            self.replace(tx, &f).await
        })
        .await
    }

    async fn get(&self, owner: Owner<'_>, feedback_id: &str) -> StoreResult<Option<Feedback>> {
        let sql = Sql::new("SELECT * FROM feedback WHERE feedback_id = ? AND owner = ?")
            .arg(feedback_id)
            .arg(owner);
        self.db
            .fetch_optional(&sql)
            .await?
            .as_ref()
            .map(row_to_feedback)
            .transpose()
    }

    async fn list_by_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<Vec<Feedback>> {
        let rows = self
            .db
            .fetch_all(&by_run(owner.as_str(), thread_id.as_str(), run_id.as_str()))
            .await?;
        Ok(listing(&rows, "feedback_id", row_to_feedback))
    }

    async fn delete(&self, owner: Owner<'_>, feedback_id: &str) -> StoreResult<()> {
        let sql = Sql::new("DELETE FROM feedback WHERE feedback_id = ? AND owner = ?")
            .arg(feedback_id)
            .arg(owner);
        match self.db.execute(WriteClass::Background, &sql).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn delete_by_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<u64> {
        let sql = Sql::new("DELETE FROM feedback WHERE owner = ? AND thread_id = ? AND run_id = ?")
            .arg(owner)
            .arg(thread_id)
            .arg(run_id);
        self.db.execute(WriteClass::Background, &sql).await
    }
}
