//! `store_items` table (LangGraph store API).
//!
//! Namespaces are stored as labels joined with `.` (labels cannot contain `.`), so a label
//! prefix `a.b` is the exact value `a.b` or the text range `['a.b.', 'a.b/')` — an index range
//! scan, byte-wise (binary collation), no LIKE escaping.

use antler_store::{
    ItemSearch, ItemStore, NamespaceQuery, SearchItem, StoreItem, StoreResult, time, util,
};
use serde_json::Value;
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, QueryBuilder};

use super::*;

/// MySQL [`ItemStore`].
#[derive(Debug, Clone)]
pub struct MySqlItemStore {
    pub(crate) db: Db,
}

fn row_to_item(row: &MySqlRow) -> StoreResult<StoreItem> {
    Ok(StoreItem {
        namespace: util::split_namespace(&get_str(row, "namespace")?),
        key: get_str(row, "key")?,
        value: get_json(row, "value")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

fn push_prefix(qb: &mut QueryBuilder<MySql>, prefix: &[String]) {
    if prefix.is_empty() {
        return;
    }
    let p = util::join_namespace(prefix);
    qb.push(" AND (namespace = ");
    qb.push_bind(p.clone());
    qb.push(" OR (namespace >= ");
    qb.push_bind(format!("{p}."));
    qb.push(" AND namespace < ");
    qb.push_bind(format!("{p}/"));
    qb.push("))");
}

#[async_trait::async_trait]
impl ItemStore for MySqlItemStore {
    async fn put(
        &self,
        owner: &str,
        namespace: &[String],
        key: &str,
        value: Value,
    ) -> StoreResult<StoreItem> {
        util::validate_namespace(namespace)?;
        util::validate_key(key)?;
        util::validate_item_value(&value)?;
        let ns = util::join_namespace(namespace);
        let ns = &ns;
        let value = &value;
        self.db
            .retry(|| async move {
                let now = time::now();
                let mut tx = self.db.begin().await?;
                sqlx::query(
                    "INSERT INTO store_items (owner, namespace, `key`, value, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE value = VALUES(value), updated_at = VALUES(updated_at)",
                )
                .bind(owner)
                .bind(ns)
                .bind(key)
                .bind(json(value))
                .bind(ts(&now))
                .bind(ts(&now))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                // the row as this transaction left it (created_at kept by an update)
                let row = sqlx::query(
                    "SELECT * FROM store_items WHERE owner = ? AND namespace = ? AND `key` = ? FOR UPDATE",
                )
                .bind(owner)
                .bind(ns)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                let item = row_to_item(&row)?;
                Ok(item)
            })
            .await
    }

    async fn get(
        &self,
        owner: &str,
        namespace: &[String],
        key: &str,
    ) -> StoreResult<Option<StoreItem>> {
        util::validate_namespace(namespace)?;
        let ns = util::join_namespace(namespace);
        self.db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM store_items WHERE owner = ? AND namespace = ? AND `key` = ?",
                )
                .bind(owner)
                .bind(&ns)
                .bind(key)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(map_err)?
                .map(|r| row_to_item(&r))
                .transpose()
            })
            .await
    }

    async fn delete(&self, owner: &str, namespace: &[String], key: &str) -> StoreResult<bool> {
        util::validate_namespace(namespace)?;
        let ns = util::join_namespace(namespace);
        self.db
            .retry(|| async {
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query(
                    "DELETE FROM store_items WHERE owner = ? AND namespace = ? AND `key` = ?",
                )
                .bind(owner)
                .bind(&ns)
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() > 0)
            })
            .await
    }

    async fn search(&self, owner: &str, q: &ItemSearch) -> StoreResult<Vec<SearchItem>> {
        util::validate_prefix(&q.namespace_prefix)?;
        let rows = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<MySql>::new("SELECT * FROM store_items WHERE owner = ");
                qb.push_bind(owner.to_string());
                push_prefix(&mut qb, &q.namespace_prefix);
                push_json_filter(
                    &mut qb,
                    self.db.flavor,
                    "store_items.value",
                    &q.filter,
                    None,
                )?;
                qb.push(" ORDER BY updated_at DESC, namespace ASC, `key` ASC LIMIT ");
                qb.push_bind(lim(q.limit));
                qb.push(" OFFSET ");
                qb.push_bind(lim(q.offset));
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SearchItem {
                    item: row_to_item(r)?,
                    score: None,
                })
            })
            .collect()
    }

    async fn list_namespaces(
        &self,
        owner: &str,
        q: &NamespaceQuery,
    ) -> StoreResult<Vec<Vec<String>>> {
        // Narrow by the literal part of the prefix in SQL; wildcards, suffix, depth and paging
        // are applied by the shared helper so every backend agrees.
        let literal: Vec<String> = q
            .prefix
            .as_ref()
            .map(|p| {
                p.iter()
                    .take_while(|l| l.as_str() != "*")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let rows: Vec<String> = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<MySql>::new(
                    "SELECT DISTINCT namespace FROM store_items WHERE owner = ",
                );
                qb.push_bind(owner.to_string());
                push_prefix(&mut qb, &literal);
                qb.build_query_scalar()
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(map_err)
            })
            .await?;
        Ok(util::filter_namespaces(
            rows.iter().map(|s| util::split_namespace(s)),
            q,
        ))
    }
}
