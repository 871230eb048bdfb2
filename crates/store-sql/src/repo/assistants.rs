//! `assistants` + `assistant_versions` tables.
//!
//! Version numbers are allocated under a row lock on the assistant (`SELECT ... FOR UPDATE`;
//! the process write lock on SQLite), so concurrent updates from several processes get
//! distinct, consecutive versions.

use antler_store::{
    Assistant, AssistantPatch, AssistantSearch, AssistantStore, AssistantVersion, Owner,
    SYSTEM_OWNER, StoreError, StoreResult, VersionQuery, time, util,
};

use crate::sql::{
    Arg, Conn, Db, Dialect, Sql, SqlRow, WriteClass, dir, from_row, listing, transaction,
};

/// [`AssistantStore`] on any SQL backend.
#[derive(Debug, Clone)]
pub struct SqlAssistantStore<D: Dialect> {
    pub(crate) db: Db<D>,
}

fn row_to_assistant(row: &impl SqlRow) -> StoreResult<Assistant> {
    from_row!(row => Assistant {
        assistant_id: str, graph_id: str, config: json, context: json, metadata: map, name: str,
        created_at: ts, updated_at: ts, version: i64, description: opt_str, owner: str,
    })
}

fn row_to_version(row: &impl SqlRow) -> StoreResult<AssistantVersion> {
    from_row!(row => AssistantVersion {
        assistant_id: str, version: i64, graph_id: str, config: json, context: json,
        metadata: map, created_at: ts, name: str, description: opt_str,
    })
}

fn exists(a: &Assistant) -> StoreError {
    StoreError::Conflict(format!("assistant {} already exists", a.assistant_id))
}

async fn insert_version<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    v: &AssistantVersion,
) -> StoreResult<()> {
    let sql = Sql::new(
        "INSERT INTO assistant_versions (owner, assistant_id, version, graph_id, name, description, config, context, metadata, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .arg(owner)
    .arg(&v.assistant_id)
    .arg(v.version)
    .arg(&v.graph_id)
    .arg(&v.name)
    .arg(&v.description)
    .arg(Arg::json(&v.config))
    .arg(Arg::json(&v.context))
    .arg(Arg::map(&v.metadata))
    .arg(v.created_at);
    D::execute(conn, &sql).await.map(|_| ())
}

/// Binds the columns a new version of an assistant changes, in the order `graph_id, name,
/// description, config, context, metadata, version`.
fn content_args(sql: Sql, a: &Assistant) -> Sql {
    sql.arg(&a.graph_id)
        .arg(&a.name)
        .arg(&a.description)
        .arg(Arg::json(&a.config))
        .arg(Arg::json(&a.context))
        .arg(Arg::map(&a.metadata))
        .arg(a.version)
}

async fn insert_assistant<D: Dialect>(conn: &mut Conn<D>, a: &Assistant) -> StoreResult<()> {
    let sql = Sql::new(
        "INSERT INTO assistants (assistant_id, owner, graph_id, name, description, config, context, metadata, \
         version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .arg(&a.assistant_id)
    .arg(&a.owner);
    let sql = content_args(sql, a).arg(a.created_at).arg(a.updated_at);
    match D::execute(conn, &sql).await {
        Err(StoreError::Conflict(_)) => Err(exists(a)),
        other => other.map(|_| ()),
    }
}

async fn write_current<D: Dialect>(conn: &mut Conn<D>, a: &Assistant) -> StoreResult<()> {
    let sql = Sql::new(
        "UPDATE assistants SET graph_id = ?, name = ?, description = ?, config = ?, context = ?, metadata = ?, \
         version = ?, updated_at = ? WHERE owner = ? AND assistant_id = ?",
    );
    let sql = content_args(sql, a)
        .arg(a.updated_at)
        .arg(&a.owner)
        .arg(&a.assistant_id);
    D::execute(conn, &sql).await.map(|_| ())
}

/// The owner's assistant, row-locked until the transaction ends (serializes updates).
async fn locked<D: Dialect>(conn: &mut Conn<D>, owner: &str, id: &str) -> StoreResult<Assistant> {
    let mut sql = Sql::new("SELECT * FROM assistants WHERE assistant_id = ? AND owner = ?")
        .arg(id)
        .arg(owner);
    sql.push(D::FOR_UPDATE);
    let row = D::fetch_optional(conn, &sql)
        .await?
        .ok_or(StoreError::NotFound)?;
    row_to_assistant(&row)
}

/// The highest version number of the owner's assistant (0 when none).
async fn max_version<D: Dialect>(conn: &mut Conn<D>, owner: &str, id: &str) -> StoreResult<i64> {
    let sql = Sql::new(
        "SELECT MAX(version) AS n FROM assistant_versions WHERE owner = ? AND assistant_id = ?",
    )
    .arg(owner)
    .arg(id);
    let row = D::fetch_optional(conn, &sql).await?;
    Ok(match row {
        Some(r) => r.opt_i64("n")?.unwrap_or(0),
        None => 0,
    })
}

fn apply_patch(next: &mut Assistant, patch: AssistantPatch) {
    if let Some(g) = patch.graph_id {
        next.graph_id = g;
    }
    if let Some(c) = patch.config {
        next.config = c;
    }
    if let Some(c) = patch.context {
        next.context = c;
    }
    if let Some(m) = patch.metadata {
        util::merge_metadata(&mut next.metadata, m);
    }
    if let Some(n) = patch.name {
        next.name = n;
    }
    if let Some(d) = patch.description {
        next.description = Some(d);
    }
}

impl<D: Dialect> SqlAssistantStore<D> {
    fn filtered(&self, select: &'static str, owner: &str, q: &AssistantSearch) -> StoreResult<Sql> {
        let mut sql = Sql::new(select).arg(owner).arg(SYSTEM_OWNER);
        if let Some(g) = &q.graph_id {
            sql.push(" AND graph_id = ").bind(g);
        }
        if let Some(n) = &q.name {
            sql.push(&format!(" AND {}(LOWER(name), LOWER(", D::STRPOS))
                .bind(n)
                .push(")) > 0");
        }
        self.db
            .dialect
            .push_json_filter(&mut sql, "assistants.metadata", &q.metadata)?;
        Ok(sql)
    }

    async fn create_in(&self, conn: &mut Conn<D>, a: &Assistant) -> StoreResult<()> {
        // ids are per owner; the system assistants' ids (seen by everyone) are taken
        if a.owner != SYSTEM_OWNER {
            let taken =
                Sql::new("SELECT 1 AS n FROM assistants WHERE owner = ? AND assistant_id = ?")
                    .arg(SYSTEM_OWNER)
                    .arg(&a.assistant_id);
            if D::fetch_optional(conn, &taken).await?.is_some() {
                return Err(exists(a));
            }
        }
        insert_assistant::<D>(conn, a).await?;
        let mut v = a.to_version();
        v.created_at = a.created_at;
        insert_version::<D>(conn, &a.owner, &v).await
    }

    async fn update_in(
        &self,
        conn: &mut Conn<D>,
        owner: &str,
        id: &str,
        patch: AssistantPatch,
    ) -> StoreResult<Assistant> {
        let mut next = locked::<D>(conn, owner, id).await?;
        apply_patch(&mut next, patch);
        // the assistant row is locked: no concurrent update can take the same number
        next.version = max_version::<D>(conn, owner, id).await? + 1;
        next.updated_at = time::now();
        insert_version::<D>(conn, owner, &next.to_version()).await?;
        write_current::<D>(conn, &next).await?;
        Ok(next)
    }

    async fn set_latest_in(
        &self,
        conn: &mut Conn<D>,
        owner: &str,
        id: &str,
        version: i64,
    ) -> StoreResult<Assistant> {
        let mut cur = locked::<D>(conn, owner, id).await?;
        let sql = Sql::new(
            "SELECT * FROM assistant_versions WHERE owner = ? AND assistant_id = ? AND version = ?",
        )
        .arg(owner)
        .arg(id)
        .arg(version);
        let row = D::fetch_optional(conn, &sql)
            .await?
            .ok_or(StoreError::NotFound)?;
        let v = row_to_version(&row)?;
        cur.version = v.version;
        cur.graph_id = v.graph_id;
        cur.config = v.config;
        cur.context = v.context;
        cur.metadata = v.metadata;
        cur.name = v.name;
        cur.description = v.description;
        cur.updated_at = time::now();
        write_current::<D>(conn, &cur).await?;
        Ok(cur)
    }
}

#[async_trait::async_trait]
impl<D: Dialect> AssistantStore for SqlAssistantStore<D> {
    async fn create(&self, owner: Owner<'_>, assistant: Assistant) -> StoreResult<Assistant> {
        let assistant = assistant.stored_for(owner.as_str());
        transaction!(self.db, WriteClass::Background, |tx| {
            self.create_in(tx, &assistant).await
        })
        .await?;
        Ok(assistant)
    }

    async fn get(&self, owner: Owner<'_>, assistant_id: &str) -> StoreResult<Option<Assistant>> {
        // the caller's own, else a system assistant of that id
        let sql = Sql::new(
            "SELECT * FROM assistants WHERE assistant_id = ? AND owner IN (?, ?) ORDER BY owner = ? LIMIT 1",
        )
        .arg(assistant_id)
        .arg(owner)
        .arg(SYSTEM_OWNER)
        .arg(SYSTEM_OWNER);
        self.db
            .fetch_optional(&sql)
            .await?
            .as_ref()
            .map(row_to_assistant)
            .transpose()
    }

    async fn update(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        patch: AssistantPatch,
    ) -> StoreResult<Assistant> {
        transaction!(self.db, WriteClass::Background, |tx| {
            self.update_in(tx, owner.as_str(), assistant_id, patch.clone())
                .await
        })
        .await
    }

    async fn delete(&self, owner: Owner<'_>, assistant_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
                let mut tx = self.db.begin(WriteClass::Background).await?;
                let sql = Sql::new("DELETE FROM assistants WHERE assistant_id = ? AND owner = ?")
                    .arg(assistant_id)
                    .arg(owner);
                if D::execute(&mut tx, &sql).await? == 0 {
                    return Err(StoreError::NotFound);
                }
                // ON DELETE CASCADE removes the versions; be explicit in case foreign key
                // checks are off for the session.
                let versions =
                    Sql::new("DELETE FROM assistant_versions WHERE owner = ? AND assistant_id = ?")
                        .arg(owner)
                        .arg(assistant_id);
                D::execute(&mut tx, &versions).await?;
                tx.commit().await
            })
            .await
    }

    async fn search(
        &self,
        owner: Owner<'_>,
        q: &AssistantSearch,
    ) -> StoreResult<(Vec<Assistant>, u64)> {
        let total = self.count(owner, q).await?;
        let sort = q.sort_by.as_str();
        let d = dir(q.sort_order);
        let mut sql = self.filtered(
            "SELECT * FROM assistants WHERE owner IN (?, ?)",
            owner.as_str(),
            q,
        )?;
        sql.push(&format!(" ORDER BY {sort} {d}, assistant_id {d}"))
            .page(q.limit, q.offset);
        let rows = self.db.fetch_all(&sql).await?;
        Ok((listing(&rows, "assistant_id", row_to_assistant), total))
    }

    async fn count(&self, owner: Owner<'_>, q: &AssistantSearch) -> StoreResult<u64> {
        let sql = self.filtered(
            "SELECT COUNT(*) AS n FROM assistants WHERE owner IN (?, ?)",
            owner.as_str(),
            q,
        )?;
        self.db.count(&sql).await
    }

    async fn versions(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        q: &VersionQuery,
    ) -> StoreResult<Vec<AssistantVersion>> {
        // the caller's own assistant, or a system one
        let Some(found) = self.get(owner, assistant_id).await? else {
            return Err(StoreError::NotFound);
        };
        let mut sql =
            Sql::new("SELECT * FROM assistant_versions WHERE owner = ? AND assistant_id = ?")
                .arg(found.owner)
                .arg(assistant_id);
        self.db
            .dialect
            .push_json_filter(&mut sql, "assistant_versions.metadata", &q.metadata)?;
        sql.push(" ORDER BY version DESC").page(q.limit, q.offset);
        let rows = self.db.fetch_all(&sql).await?;
        Ok(listing(&rows, "assistant_id", row_to_version))
    }

    async fn set_latest(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        version: i64,
    ) -> StoreResult<Assistant> {
        transaction!(self.db, WriteClass::Background, |tx| {
            self.set_latest_in(tx, owner.as_str(), assistant_id, version)
                .await
        })
        .await
    }
}
