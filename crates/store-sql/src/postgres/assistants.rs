//! `assistants` + `assistant_versions` tables.
//!
//! Version numbers are allocated under a row lock on the assistant (`SELECT ... FOR
//! UPDATE`), so concurrent updates from several processes get distinct, consecutive versions.

use antler_store::{
    Assistant, AssistantPatch, AssistantSearch, AssistantSortBy, AssistantStore, AssistantVersion,
    SYSTEM_OWNER, StoreError, StoreResult, VersionQuery, time, util,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::*;

/// PostgreSQL [`AssistantStore`].
#[derive(Debug, Clone)]
pub struct PostgresAssistantStore {
    pub(crate) db: Db,
}

fn row_to_assistant(row: &PgRow) -> StoreResult<Assistant> {
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

fn row_to_version(row: &PgRow) -> StoreResult<AssistantVersion> {
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
    conn: &mut PgConnection,
    owner: &str,
    v: &AssistantVersion,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO assistant_versions (assistant_id, version, graph_id, name, description, config, context, metadata, created_at, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&v.assistant_id)
    .bind(v.version)
    .bind(&v.graph_id)
    .bind(&v.name)
    .bind(&v.description)
    .bind(&v.config)
    .bind(&v.context)
    .bind(obj(&v.metadata))
    .bind(v.created_at)
    .bind(owner)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn write_current(conn: &mut PgConnection, a: &Assistant) -> StoreResult<()> {
    sqlx::query(
        "UPDATE assistants SET graph_id = $1, name = $2, description = $3, config = $4, context = $5, metadata = $6, \
         version = $7, updated_at = $8 WHERE assistant_id = $9 AND owner = $10",
    )
    .bind(&a.graph_id)
    .bind(&a.name)
    .bind(&a.description)
    .bind(&a.config)
    .bind(&a.context)
    .bind(obj(&a.metadata))
    .bind(a.version)
    .bind(a.updated_at)
    .bind(&a.assistant_id)
    .bind(&a.owner)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// The owner's assistant, row-locked until the end of the transaction.
async fn lock_owned(conn: &mut PgConnection, owner: &str, id: &str) -> StoreResult<Assistant> {
    let row =
        sqlx::query("SELECT * FROM assistants WHERE assistant_id = $1 AND owner = $2 FOR UPDATE")
            .bind(id)
            .bind(owner)
            .fetch_optional(conn)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
    row_to_assistant(&row)
}

fn push_search_filters(
    qb: &mut QueryBuilder<Postgres>,
    owner: &str,
    q: &AssistantSearch,
) -> StoreResult<()> {
    qb.push(" WHERE owner IN (");
    qb.push_bind(owner.to_string());
    qb.push(", ");
    qb.push_bind(SYSTEM_OWNER);
    qb.push(")");
    if let Some(g) = &q.graph_id {
        qb.push(" AND graph_id = ");
        qb.push_bind(g.clone());
    }
    if let Some(n) = &q.name {
        qb.push(" AND strpos(lower(name), lower(");
        qb.push_bind(n.clone());
        qb.push(")) > 0");
    }
    push_json_filter(qb, "assistants.metadata", &q.metadata)
}

#[async_trait::async_trait]
impl AssistantStore for PostgresAssistantStore {
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
                    && sqlx::query("SELECT 1 FROM assistants WHERE owner = $1 AND assistant_id = $2")
                        .bind(SYSTEM_OWNER)
                        .bind(&a.assistant_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?
                        .is_some()
                {
                    return Err(StoreError::Conflict(format!(
                        "assistant {} already exists",
                        a.assistant_id
                    )));
                }
                let res = sqlx::query(
                    "INSERT INTO assistants (assistant_id, owner, graph_id, name, description, config, context, metadata, \
                     version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&a.assistant_id)
                .bind(&a.owner)
                .bind(&a.graph_id)
                .bind(&a.name)
                .bind(&a.description)
                .bind(&a.config)
                .bind(&a.context)
                .bind(obj(&a.metadata))
                .bind(a.version)
                .bind(a.created_at)
                .bind(a.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err);
                if let Err(StoreError::Conflict(_)) = res {
                    return Err(StoreError::Conflict(format!(
                        "assistant {} already exists",
                        a.assistant_id
                    )));
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
                    "SELECT * FROM assistants WHERE assistant_id = $1 AND owner IN ($2, $3) \
                     ORDER BY owner = $3 LIMIT 1",
                )
                .bind(assistant_id)
                .bind(owner)
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
                let mut next = lock_owned(&mut tx, owner, assistant_id).await?;
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
                // the assistant row is locked: no concurrent update can take the same number
                let max: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(version), 0)::BIGINT FROM assistant_versions WHERE assistant_id = $1 AND owner = $2",
                )
                .bind(assistant_id)
                .bind(owner)
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
                // ON DELETE CASCADE removes the versions in the same statement
                let done =
                    sqlx::query("DELETE FROM assistants WHERE assistant_id = $1 AND owner = $2")
                        .bind(assistant_id)
                        .bind(owner)
                        .execute(&self.db.pool)
                        .await
                        .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn search(&self, owner: &str, q: &AssistantSearch) -> StoreResult<(Vec<Assistant>, u64)> {
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
                // the total rides along as a window count over the filtered rows
                let mut qb = QueryBuilder::<Postgres>::new(
                    "SELECT *, COUNT(*) OVER () AS total_count FROM assistants",
                );
                push_search_filters(&mut qb, owner, q)?;
                qb.push(format!(" ORDER BY {sort} {d}, assistant_id {d} LIMIT "));
                qb.push_bind(lim(q.limit));
                qb.push(" OFFSET ");
                qb.push_bind(lim(q.offset));
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        let total = match rows.first() {
            Some(r) => get_i64(r, "total_count")?.max(0) as u64,
            // an empty page (offset past the end, or limit 0) does not say the total
            None => self.count(owner, q).await?,
        };
        let items = rows
            .iter()
            .map(row_to_assistant)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((items, total))
    }

    async fn count(&self, owner: &str, q: &AssistantSearch) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut qb = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM assistants");
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
                let mut qb = QueryBuilder::<Postgres>::new(
                    "SELECT * FROM assistant_versions WHERE owner = ",
                );
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
                let mut cur = lock_owned(&mut tx, owner, assistant_id).await?;
                let row = sqlx::query(
                    "SELECT * FROM assistant_versions WHERE assistant_id = $1 AND version = $2 AND owner = $3",
                )
                .bind(assistant_id)
                .bind(version)
                .bind(owner)
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
