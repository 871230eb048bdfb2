//! `threads` table.
//!
//! Every change is a read-modify-write of the row under a row lock (`FOR UPDATE`; the process
//! write lock on SQLite) applying [`ThreadUpdate::apply`], the one definition every store
//! shares: JSON is merged by serde, never by SQL string functions.

use antler_store::{
    Owner, StoreError, StoreResult, Thread, ThreadId, ThreadSearch, ThreadStatus, ThreadStore,
    ThreadUpdate, time,
};
use serde_json::{Map, Value};

use crate::sql::{
    Arg, Conn, Db, Dialect, Sql, SqlRow, WriteClass, dir, from_row, listing, transaction,
};

/// [`ThreadStore`] on any SQL backend.
#[derive(Debug, Clone)]
pub struct SqlThreadStore<D: Dialect> {
    pub(crate) db: Db<D>,
}

pub(crate) fn row_to_thread(row: &impl SqlRow) -> StoreResult<Thread> {
    from_row!(row => Thread {
        thread_id: str, created_at: ts, updated_at: ts, state_updated_at: ts, metadata: map,
        status: parse, config: json, values: opt_json("state_values"), error: opt_json,
        interrupts: opt_json, owner: str,
    })
}

/// Binds the columns a thread's writes change, in the order `status, metadata, config,
/// state_values, error, interrupts`.
fn state_args(sql: Sql, t: &Thread) -> Sql {
    sql.arg(t.status.as_str())
        .arg(Arg::map(&t.metadata))
        .arg(Arg::json(&t.config))
        .arg(Arg::opt_json(&t.values))
        .arg(Arg::opt_json(&t.error))
        .arg(Arg::opt_json(&t.interrupts))
}

pub(crate) async fn insert<D: Dialect>(conn: &mut Conn<D>, t: &Thread) -> StoreResult<()> {
    let sql = Sql::new(
        "INSERT INTO threads (thread_id, owner, status, metadata, config, state_values, error, interrupts, \
         created_at, updated_at, state_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .arg(&t.thread_id)
    .arg(&t.owner);
    let sql = state_args(sql, t)
        .arg(t.created_at)
        .arg(t.updated_at)
        .arg(t.state_updated_at);
    match D::execute(conn, &sql).await {
        Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
            "thread {} already exists",
            t.thread_id
        ))),
        other => other.map(|_| ()),
    }
}

/// The owner's thread, row-locked until the transaction ends.
/// Copies an owner's thread row under `new_id` (a busy source gives an idle copy).
pub(crate) async fn copy_in<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    thread_id: &str,
    new_id: &str,
) -> StoreResult<Thread> {
    let src = locked::<D>(conn, owner, thread_id).await?;
    let now = time::now();
    let copy = Thread {
        thread_id: new_id.to_string(),
        created_at: now,
        updated_at: now,
        state_updated_at: now,
        status: if src.status == ThreadStatus::Busy {
            ThreadStatus::Idle
        } else {
            src.status
        },
        ..src
    };
    insert::<D>(conn, &copy).await?;
    Ok(copy)
}

pub(crate) async fn locked<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    id: &str,
) -> StoreResult<Thread> {
    let mut sql = Sql::new("SELECT * FROM threads WHERE thread_id = ? AND owner = ?")
        .arg(id)
        .arg(owner);
    sql.push(D::FOR_UPDATE);
    let row = D::fetch_optional(conn, &sql)
        .await?
        .ok_or(StoreError::NotFound)?;
    row_to_thread(&row)
}

/// Applies `update` to the owner's thread inside `conn`'s transaction; the thread as left.
pub(crate) async fn update_in<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    thread_id: &str,
    update: ThreadUpdate,
) -> StoreResult<Thread> {
    let mut t = locked::<D>(conn, owner, thread_id).await?;
    update.apply(&mut t, time::now());
    let sql = Sql::new(
        "UPDATE threads SET status = ?, metadata = ?, config = ?, state_values = ?, error = ?, interrupts = ?, \
         updated_at = ?, state_updated_at = ? WHERE owner = ? AND thread_id = ?",
    );
    let sql = state_args(sql, &t)
        .arg(t.updated_at)
        .arg(t.state_updated_at)
        .arg(owner)
        .arg(thread_id);
    D::execute(conn, &sql).await?;
    Ok(t)
}

/// Applies many updates at once: per (owner, thread), in order, on one read of its row;
/// one locking read and one write for all the threads (threads deleted meanwhile are
/// skipped). `updates` are (owner, thread id, the thread's updates in order).
pub(crate) async fn update_many<D: Dialect>(
    conn: &mut Conn<D>,
    updates: Vec<(&str, &str, Vec<ThreadUpdate>)>,
) -> StoreResult<()> {
    for chunk in updates.chunks(300) {
        let mut read = Sql::new("SELECT * FROM threads WHERE ");
        crate::repo::events::push_keys(&mut read, chunk.iter().map(|(o, t, _)| (*o, *t)));
        read.push(D::FOR_UPDATE);
        let mut rows = std::collections::HashMap::new();
        for row in D::fetch_all(conn, &read).await? {
            let t = row_to_thread(&row)?;
            rows.insert((t.owner.clone(), t.thread_id.clone()), t);
        }
        let now = time::now();
        let mut changed = Vec::with_capacity(chunk.len());
        for (owner, thread_id, list) in chunk {
            let Some(mut t) = rows.remove(&(owner.to_string(), thread_id.to_string())) else {
                continue;
            };
            for u in list {
                u.clone().apply(&mut t, now);
            }
            changed.push(t);
        }
        upsert_rows::<D>(conn, &changed).await?;
    }
    Ok(())
}

/// Writes whole thread rows (existing ones, read under lock by the caller).
async fn upsert_rows<D: Dialect>(conn: &mut Conn<D>, threads: &[Thread]) -> StoreResult<()> {
    if threads.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(
        "INSERT INTO threads (thread_id, owner, status, metadata, config, state_values, error, interrupts, \
         created_at, updated_at, state_updated_at) VALUES ",
    );
    for (i, t) in threads.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        sql.bind(&t.thread_id).push(", ").bind(&t.owner).push(", ");
        sql.bind(t.status.as_str())
            .push(", ")
            .bind(Arg::map(&t.metadata))
            .push(", ");
        sql.bind(Arg::json(&t.config))
            .push(", ")
            .bind(Arg::opt_json(&t.values))
            .push(", ");
        sql.bind(Arg::opt_json(&t.error))
            .push(", ")
            .bind(Arg::opt_json(&t.interrupts));
        sql.push(", ")
            .bind(t.created_at)
            .push(", ")
            .bind(t.updated_at)
            .push(", ");
        sql.bind(t.state_updated_at).push(")");
    }
    sql.push(&crate::sql::upsert::<D>(
        "owner, thread_id",
        &[
            "status",
            "metadata",
            "config",
            "state_values",
            "error",
            "interrupts",
            "updated_at",
            "state_updated_at",
        ],
    ));
    D::execute(conn, &sql).await.map(|_| ())
}

impl<D: Dialect> SqlThreadStore<D> {
    fn filtered(&self, select: &'static str, owner: &str, q: &ThreadSearch) -> StoreResult<Sql> {
        let mut sql = Sql::new(select).arg(owner);
        if let Some(ids) = &q.ids {
            D::and_in_list(&mut sql, "thread_id", ids);
        }
        if let Some(s) = q.status {
            sql.push(" AND status = ").bind(s.as_str());
        }
        let d = &self.db.dialect;
        d.push_json_filter(&mut sql, "threads.metadata", &q.metadata)?;
        d.push_json_filter(&mut sql, "threads.state_values", &q.values)?;
        Ok(sql)
    }
}

#[async_trait::async_trait]
impl<D: Dialect> ThreadStore for SqlThreadStore<D> {
    async fn create(&self, owner: Owner<'_>, thread: Thread) -> StoreResult<Thread> {
        let thread = thread.stored_for(owner.as_str());
        self.db
            .retry(|| async {
                // one statement, ahead of queued background writes (a client waits for it)
                let _write = self.db.lock(WriteClass::Ack).await;
                let mut conn = self.db.acquire().await?;
                insert::<D>(&mut conn, &thread).await
            })
            .await?;
        Ok(thread)
    }

    async fn get(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<Option<Thread>> {
        let sql = Sql::new("SELECT * FROM threads WHERE thread_id = ? AND owner = ?")
            .arg(thread_id)
            .arg(owner);
        self.db
            .fetch_optional(&sql)
            .await?
            .as_ref()
            .map(row_to_thread)
            .transpose()
    }

    async fn patch_metadata(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        metadata: Map<String, Value>,
    ) -> StoreResult<Thread> {
        let update = ThreadUpdate {
            metadata: Some(metadata),
            ..Default::default()
        };
        self.update(owner, thread_id, update).await
    }

    async fn update(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        update: ThreadUpdate,
    ) -> StoreResult<Thread> {
        transaction!(self.db, WriteClass::Background, |tx| {
            update_in::<D>(tx, owner.as_str(), thread_id.as_str(), update.clone()).await
        })
        .await
    }

    async fn delete(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<()> {
        let sql = Sql::new("DELETE FROM threads WHERE thread_id = ? AND owner = ?")
            .arg(thread_id)
            .arg(owner);
        match self.db.execute(WriteClass::Background, &sql).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn search(&self, owner: Owner<'_>, q: &ThreadSearch) -> StoreResult<Vec<Thread>> {
        let sort = q.sort_by.as_str();
        let d = dir(q.sort_order);
        let mut sql = self.filtered("SELECT * FROM threads WHERE owner = ?", owner.as_str(), q)?;
        sql.push(&format!(" ORDER BY {sort} {d}, thread_id {d}"))
            .page(q.limit, q.offset);
        let rows = self.db.fetch_all(&sql).await?;
        Ok(listing(&rows, "thread_id", row_to_thread))
    }

    async fn count(&self, owner: Owner<'_>, q: &ThreadSearch) -> StoreResult<u64> {
        let sql = self.filtered(
            "SELECT COUNT(*) AS n FROM threads WHERE owner = ?",
            owner.as_str(),
            q,
        )?;
        self.db.count(&sql).await
    }

    async fn copy(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        new_id: ThreadId<'_>,
    ) -> StoreResult<Thread> {
        transaction!(self.db, WriteClass::Background, |tx| {
            copy_in::<D>(tx, owner.as_str(), thread_id.as_str(), new_id.as_str()).await
        })
        .await
    }

    async fn owners_of(&self, thread_id: ThreadId<'_>) -> StoreResult<Vec<String>> {
        let sql =
            Sql::new("SELECT owner FROM threads WHERE thread_id = ? ORDER BY owner").arg(thread_id);
        let rows = self.db.fetch_all(&sql).await?;
        rows.iter().map(|r| r.str("owner")).collect()
    }
}
