//! `feedback` table.

use antler_store::{Feedback, FeedbackStore, StoreError, StoreResult, time};
use sqlx::MySqlConnection;
use sqlx::mysql::MySqlRow;

use super::*;

/// MySQL [`FeedbackStore`].
#[derive(Debug, Clone)]
pub struct MySqlFeedbackStore {
    pub(crate) db: Db,
}

fn row_to_feedback(row: &MySqlRow) -> StoreResult<Feedback> {
    Ok(Feedback {
        feedback_id: get_str(row, "feedback_id")?,
        run_id: get_str(row, "run_id")?,
        thread_id: get_str(row, "thread_id")?,
        owner: get_str(row, "owner")?,
        message_id: get_opt_str(row, "message_id")?,
        rating: get_i64(row, "rating")?,
        comment: get_opt_str(row, "comment")?,
        metadata: get_map(row, "metadata")?,
        created_at: get_ts(row, "created_at")?,
    })
}

async fn insert(conn: &mut MySqlConnection, f: &Feedback) -> StoreResult<()> {
    let res = sqlx::query(
        "INSERT INTO feedback (feedback_id, run_id, thread_id, owner, message_id, rating, comment, metadata, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&f.feedback_id)
    .bind(&f.run_id)
    .bind(&f.thread_id)
    .bind(&f.owner)
    .bind(&f.message_id)
    .bind(f.rating)
    .bind(&f.comment)
    .bind(json_map(&f.metadata))
    .bind(ts(&f.created_at))
    .execute(conn)
    .await
    .map_err(map_err);
    match res {
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

#[async_trait::async_trait]
impl FeedbackStore for MySqlFeedbackStore {
    async fn create(&self, owner: &str, feedback: Feedback) -> StoreResult<Feedback> {
        let f = prepare(owner, feedback);
        let fr = &f;
        self.db
            .retry(|| async move {
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                insert(&mut conn, fr).await?;
                Ok(())
            })
            .await?;
        Ok(f)
    }

    async fn upsert(&self, owner: &str, feedback: Feedback) -> StoreResult<Feedback> {
        let f = prepare(owner, feedback);
        let fr = &f;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                let existing: Option<String> = sqlx::query_scalar(
                    "SELECT feedback_id FROM feedback WHERE owner = ? AND thread_id = ? AND run_id = ? \
                     ORDER BY created_at ASC LIMIT 1 FOR UPDATE",
                )
                .bind(owner)
                .bind(&fr.thread_id)
                .bind(&fr.run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let mut row = fr.clone();
                if let Some(id) = existing {
                    sqlx::query("DELETE FROM feedback WHERE owner = ? AND thread_id = ? AND run_id = ?")
                        .bind(owner)
                        .bind(&fr.thread_id)
                        .bind(&fr.run_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    row.feedback_id = id;
                }
                insert(&mut tx, &row).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(row)
            })
            .await
    }

    async fn get(&self, owner: &str, feedback_id: &str) -> StoreResult<Option<Feedback>> {
        self.db
            .retry(|| async {
                sqlx::query("SELECT * FROM feedback WHERE feedback_id = ? AND owner = ?")
                    .bind(feedback_id)
                    .bind(owner)
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(map_err)?
                    .map(|r| row_to_feedback(&r))
                    .transpose()
            })
            .await
    }

    async fn list_by_run(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
    ) -> StoreResult<Vec<Feedback>> {
        let rows = self
            .db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM feedback WHERE owner = ? AND thread_id = ? AND run_id = ? ORDER BY created_at ASC, feedback_id ASC",
                )
                .bind(owner)
                .bind(thread_id)
                .bind(run_id)
                .fetch_all(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_feedback).collect()
    }

    async fn delete(&self, owner: &str, feedback_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query("DELETE FROM feedback WHERE feedback_id = ? AND owner = ?")
                    .bind(feedback_id)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn delete_by_run(&self, owner: &str, thread_id: &str, run_id: &str) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query(
                    "DELETE FROM feedback WHERE owner = ? AND thread_id = ? AND run_id = ?",
                )
                .bind(owner)
                .bind(thread_id)
                .bind(run_id)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected())
            })
            .await
    }
}
