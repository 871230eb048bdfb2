//! `assistants` + `assistant_versions` tables.

use antler_store::{
    Assistant, AssistantPatch, AssistantSearch, AssistantSortBy, AssistantStore, AssistantVersion,
    SYSTEM_OWNER, StoreError, StoreResult, VersionQuery, time, util,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::*;

/// SQLite [`AssistantStore`].
#[derive(Debug, Clone)]
pub struct SqliteAssistantStore {
    pub(crate) db: Db,
}

fn row_to_assistant(row: &SqliteRow) -> StoreResult<Assistant> {
    Ok(Assistant {
        assistant_id: get_str(row, "assistant_id")?,
        graph_id: get_str(row, "graph_id")?,
        config: get_json(row, "config")?,
        context: get_json(row, "context")?,
        metadata: get_map(row, "metadata")?,
        name: get_str(row, "name")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        version: get_i64(row, "version")?,
        description: get_opt_str(row, "description")?,
        owner: get_str(row, "owner")?,
    })
}

fn row_to_version(row: &SqliteRow) -> StoreResult<AssistantVersion> {
    Ok(AssistantVersion {
        assistant_id: get_str(row, "assistant_id")?,
        version: get_i64(row, "version")?,
        graph_id: get_str(row, "graph_id")?,
        config: get_json(row, "config")?,
        context: get_json(row, "context")?,
        metadata: get_map(row, "metadata")?,
        created_at: get_ts(row, "created_at")?,
        name: get_str(row, "name")?,
        description: get_opt_str(row, "description")?,
    })
}

async fn insert_version(
    conn: &mut SqliteConnection,
    owner: &str,
    v: &AssistantVersion,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO assistant_versions (owner, assistant_id, version, graph_id, name, description, config, context, metadata, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(owner)
    .bind(&v.assistant_id)
    .bind(v.version)
    .bind(&v.graph_id)
    .bind(&v.name)
    .bind(&v.description)
    .bind(json(&v.config))
    .bind(json(&v.context))
    .bind(json_map(&v.metadata))
    .bind(ts(&v.created_at))
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn write_current(conn: &mut SqliteConnection, a: &Assistant) -> StoreResult<()> {
    sqlx::query(
        "UPDATE assistants SET graph_id = ?, name = ?, description = ?, config = ?, context = ?, metadata = ?, \
         version = ?, updated_at = ? WHERE owner = ? AND assistant_id = ?",
    )
    .bind(&a.graph_id)
    .bind(&a.name)
    .bind(&a.description)
    .bind(json(&a.config))
    .bind(json(&a.context))
    .bind(json_map(&a.metadata))
    .bind(a.version)
    .bind(ts(&a.updated_at))
    .bind(&a.owner)
    .bind(&a.assistant_id)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn owned(conn: &mut SqliteConnection, owner: &str, id: &str) -> StoreResult<Assistant> {
    let row = sqlx::query("SELECT * FROM assistants WHERE assistant_id = ? AND owner = ?")
        .bind(id)
        .bind(owner)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    row_to_assistant(&row)
}

fn push_search_filters(
    qb: &mut QueryBuilder<Sqlite>,
    owner: &str,
    q: &AssistantSearch,
) -> StoreResult<()> {
    qb.push(" WHERE (owner = ");
    qb.push_bind(owner.to_string());
    qb.push(" OR owner = ");
    qb.push_bind(SYSTEM_OWNER);
    qb.push(")");
    if let Some(g) = &q.graph_id {
        qb.push(" AND graph_id = ");
        qb.push_bind(g.clone());
    }
    if let Some(n) = &q.name {
        qb.push(" AND instr(lower(name), lower(");
        qb.push_bind(n.clone());
        qb.push(")) > 0");
    }
    push_json_filter(qb, "assistants.metadata", &q.metadata)
}

#[async_trait::async_trait]
impl AssistantStore for SqliteAssistantStore {
    async fn create(&self, owner: &str, mut assistant: Assistant) -> StoreResult<Assistant> {
        assistant.owner = owner.to_string();
        assistant.created_at = time::truncate(assistant.created_at);
        assistant.updated_at = time::truncate(assistant.updated_at);
        let a = &assistant;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                // ids are per owner; the system assistants' ids (seen by everyone) are taken
                if a.owner != SYSTEM_OWNER
                    && sqlx::query("SELECT 1 FROM assistants WHERE owner = ? AND assistant_id = ?")
                        .bind(SYSTEM_OWNER)
                        .bind(&a.assistant_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?
                        .is_some()
                {
                    return Err(StoreError::Conflict(format!("assistant {} already exists", a.assistant_id)));
                }
                let res = sqlx::query(
                    "INSERT INTO assistants (assistant_id, owner, graph_id, name, description, config, context, metadata, \
                     version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&a.assistant_id)
                .bind(&a.owner)
                .bind(&a.graph_id)
                .bind(&a.name)
                .bind(&a.description)
                .bind(json(&a.config))
                .bind(json(&a.context))
                .bind(json_map(&a.metadata))
                .bind(a.version)
                .bind(ts(&a.created_at))
                .bind(ts(&a.updated_at))
                .execute(&mut *tx)
                .await
                .map_err(map_err);
                if let Err(StoreError::Conflict(_)) = res {
                    return Err(StoreError::Conflict(format!("assistant {} already exists", a.assistant_id)));
                }
                res?;
                let mut v = a.to_version();
                v.created_at = a.created_at;
                insert_version(&mut tx, &a.owner, &v).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            })
            .await?;
        Ok(assistant)
    }

    async fn get(&self, owner: &str, assistant_id: &str) -> StoreResult<Option<Assistant>> {
        self.db
            .retry(|| async {
                // the caller's own, else a system assistant of that id
                sqlx::query(
                    "SELECT * FROM assistants WHERE assistant_id = ? AND (owner = ? OR owner = ?) \
                     ORDER BY owner = ? LIMIT 1",
                )
                .bind(assistant_id)
                .bind(owner)
                .bind(SYSTEM_OWNER)
                .bind(SYSTEM_OWNER)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(map_err)?
                .map(|r| row_to_assistant(&r))
                .transpose()
            })
            .await
    }

    async fn update(
        &self,
        owner: &str,
        assistant_id: &str,
        patch: AssistantPatch,
    ) -> StoreResult<Assistant> {
        let patch = &patch;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                let mut next = owned(&mut tx, owner, assistant_id).await?;
                let patch = patch.clone();
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
                let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM assistant_versions WHERE owner = ? AND assistant_id = ?")
                    .bind(owner)
                    .bind(assistant_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                next.version = max + 1;
                next.updated_at = time::now();
                insert_version(&mut tx, owner, &next.to_version()).await?;
                write_current(&mut tx, &next).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(next)
            })
            .await
    }

    async fn delete(&self, owner: &str, assistant_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let done =
                    sqlx::query("DELETE FROM assistants WHERE assistant_id = ? AND owner = ?")
                        .bind(assistant_id)
                        .bind(owner)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                // ON DELETE CASCADE removes the versions; be explicit in case foreign keys are off.
                sqlx::query("DELETE FROM assistant_versions WHERE owner = ? AND assistant_id = ?")
                    .bind(owner)
                    .bind(assistant_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            })
            .await
    }

    async fn search(&self, owner: &str, q: &AssistantSearch) -> StoreResult<(Vec<Assistant>, u64)> {
        let total = self.count(owner, q).await?;
        let sort = match q.sort_by {
            AssistantSortBy::AssistantId => "assistant_id",
            AssistantSortBy::GraphId => "graph_id",
            AssistantSortBy::Name => "name",
            AssistantSortBy::CreatedAt => "created_at",
            AssistantSortBy::UpdatedAt => "updated_at",
        };
        let d = dir(q.sort_order);
        let rows = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM assistants");
                push_search_filters(&mut qb, owner, q)?;
                qb.push(format!(" ORDER BY {sort} {d}, assistant_id {d} LIMIT "));
                qb.push_bind(lim(q.limit));
                qb.push(" OFFSET ");
                qb.push_bind(lim(q.offset));
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        let items = rows
            .iter()
            .map(row_to_assistant)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((items, total))
    }

    async fn count(&self, owner: &str, q: &AssistantSearch) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM assistants");
                push_search_filters(&mut qb, owner, q)?;
                let n: i64 = qb
                    .build_query_scalar()
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(map_err)?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    async fn versions(
        &self,
        owner: &str,
        assistant_id: &str,
        q: &VersionQuery,
    ) -> StoreResult<Vec<AssistantVersion>> {
        // the caller's own assistant, or a system one
        let Some(found) = self.get(owner, assistant_id).await? else {
            return Err(StoreError::NotFound);
        };
        let found = &found;
        let rows = self
            .db
            .retry(|| async {
                let mut qb =
                    QueryBuilder::<Sqlite>::new("SELECT * FROM assistant_versions WHERE owner = ");
                qb.push_bind(found.owner.clone());
                qb.push(" AND assistant_id = ");
                qb.push_bind(assistant_id.to_string());
                push_json_filter(&mut qb, "assistant_versions.metadata", &q.metadata)?;
                qb.push(" ORDER BY version DESC LIMIT ");
                qb.push_bind(lim(q.limit));
                qb.push(" OFFSET ");
                qb.push_bind(lim(q.offset));
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_version).collect()
    }

    async fn set_latest(
        &self,
        owner: &str,
        assistant_id: &str,
        version: i64,
    ) -> StoreResult<Assistant> {
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let mut cur = owned(&mut tx, owner, assistant_id).await?;
                let row = sqlx::query(
                    "SELECT * FROM assistant_versions WHERE owner = ? AND assistant_id = ? AND version = ?",
                )
                .bind(owner)
                .bind(assistant_id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?
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
                write_current(&mut tx, &cur).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(cur)
            })
            .await
    }
}
