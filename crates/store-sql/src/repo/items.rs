//! `store_items` table (LangGraph store API).
//!
//! Namespaces are stored as labels joined with `.` (labels cannot contain `.`), so a label
//! prefix `a.b` is the exact value `a.b` or the byte range `['a.b.', 'a.b/')` — an index range
//! scan, case-sensitive (byte-ordered ids on every backend), no LIKE escaping.

use antler_store::{
    ItemSearch, ItemStore, NamespaceQuery, Owner, SearchItem, StoreItem, StoreResult, time, util,
};
use serde_json::Value;

use crate::sql::{Arg, Db, Dialect, Sql, SqlRow, WriteClass, lim, listing, upsert};

/// [`ItemStore`] on any SQL backend.
#[derive(Debug, Clone)]
pub struct SqlItemStore<D: Dialect> {
    pub(crate) db: Db<D>,
}

fn row_to_item(row: &impl SqlRow) -> StoreResult<StoreItem> {
    Ok(StoreItem {
        namespace: util::split_namespace(&row.str("namespace")?),
        key: row.str("key")?,
        value: row.json("value")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

fn push_prefix(sql: &mut Sql, prefix: &[String]) {
    if prefix.is_empty() {
        return;
    }
    let p = util::join_namespace(prefix);
    sql.push(" AND (namespace = ").bind(p.clone());
    sql.push(" OR (namespace >= ").bind(format!("{p}."));
    sql.push(" AND namespace < ")
        .bind(format!("{p}/"))
        .push("))");
}

impl<D: Dialect> SqlItemStore<D> {
    fn one(owner: &str, ns: &str, key: &str) -> Sql {
        Sql::owned(format!(
            "SELECT * FROM store_items WHERE owner = ? AND namespace = ? AND {} = ?",
            D::KEY_COL
        ))
        .arg(owner)
        .arg(ns)
        .arg(key)
    }
}

#[async_trait::async_trait]
impl<D: Dialect> ItemStore for SqlItemStore<D> {
    async fn put(
        &self,
        owner: Owner<'_>,
        namespace: &[String],
        key: &str,
        value: Value,
    ) -> StoreResult<StoreItem> {
        util::validate_namespace(namespace)?;
        util::validate_key(key)?;
        util::validate_item_value(&value)?;
        let ns = util::join_namespace(namespace);
        let k = D::KEY_COL;
        let put = Sql::owned(format!(
            "INSERT INTO store_items (owner, namespace, {k}, value, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?){}",
            upsert::<D>(&format!("owner, namespace, {k}"), &["value", "updated_at"])
        ));
        self.db
            .retry(|| async {
                let now = time::now();
                let put = put
                    .clone()
                    .arg(owner)
                    .arg(&ns)
                    .arg(key)
                    .arg(Arg::json(&value))
                    .arg(now)
                    .arg(now);
                let mut tx = self.db.begin(WriteClass::Background).await?;
                D::execute(&mut tx, &put).await?;
                // the row as this transaction left it (an update keeps created_at)
                let row = D::fetch_optional(&mut tx, &Self::one(owner.as_str(), &ns, key)).await?;
                tx.commit().await?;
                row_to_item(&row.ok_or(antler_store::StoreError::NotFound)?)
            })
            .await
    }

    async fn get(
        &self,
        owner: Owner<'_>,
        namespace: &[String],
        key: &str,
    ) -> StoreResult<Option<StoreItem>> {
        util::validate_namespace(namespace)?;
        let ns = util::join_namespace(namespace);
        self.db
            .fetch_optional(&Self::one(owner.as_str(), &ns, key))
            .await?
            .as_ref()
            .map(row_to_item)
            .transpose()
    }

    async fn delete(&self, owner: Owner<'_>, namespace: &[String], key: &str) -> StoreResult<bool> {
        util::validate_namespace(namespace)?;
        let ns = util::join_namespace(namespace);
        let sql = Sql::owned(format!(
            "DELETE FROM store_items WHERE owner = ? AND namespace = ? AND {} = ?",
            D::KEY_COL
        ))
        .arg(owner)
        .arg(ns)
        .arg(key);
        Ok(self.db.execute(WriteClass::Background, &sql).await? > 0)
    }

    async fn search(&self, owner: Owner<'_>, q: &ItemSearch) -> StoreResult<Vec<SearchItem>> {
        util::validate_prefix(&q.namespace_prefix)?;
        let mut sql = Sql::new("SELECT * FROM store_items WHERE owner = ?").arg(owner);
        push_prefix(&mut sql, &q.namespace_prefix);
        self.db
            .dialect
            .push_json_filter(&mut sql, "store_items.value", &q.filter)?;
        sql.push(&format!(
            " ORDER BY updated_at DESC, namespace ASC, {} ASC LIMIT ",
            D::KEY_COL
        ))
        .bind(lim(q.limit))
        .push(" OFFSET ")
        .bind(lim(q.offset));
        let rows = self.db.fetch_all(&sql).await?;
        Ok(listing(&rows, "key", |r| {
            Ok(SearchItem {
                item: row_to_item(r)?,
                score: None,
            })
        }))
    }

    async fn list_namespaces(
        &self,
        owner: Owner<'_>,
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
        let mut sql =
            Sql::new("SELECT DISTINCT namespace FROM store_items WHERE owner = ?").arg(owner);
        push_prefix(&mut sql, &literal);
        let rows = self.db.fetch_all(&sql).await?;
        let names = rows
            .iter()
            .map(|r| r.str("namespace"))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(util::filter_namespaces(
            names.iter().map(|s| util::split_namespace(s)),
            q,
        ))
    }
}
