//! Store-item service (the LangGraph store API): put, get, delete, search, namespaces. Items
//! are per owner; namespaces and keys arrive validated.

use antler_store::{ItemSearch, NamespaceQuery, Owner, SearchItem, StoreItem};
use serde_json::Value;

use crate::{Runtime, RuntimeError};

impl Runtime {
    /// Stores (or replaces, keeping `created_at`) an item.
    pub async fn put_item(
        &self,
        owner: &str,
        namespace: &[String],
        key: &str,
        value: Value,
    ) -> Result<StoreItem, RuntimeError> {
        Ok(self
            .stores
            .items
            .put(Owner(owner), namespace, key, value)
            .await?)
    }

    /// The item, or `None`.
    pub async fn get_item(
        &self,
        owner: &str,
        namespace: &[String],
        key: &str,
    ) -> Result<Option<StoreItem>, RuntimeError> {
        Ok(self.stores.items.get(Owner(owner), namespace, key).await?)
    }

    /// Deletes the item; whether one was there (a missing item is no error).
    pub async fn delete_item(
        &self,
        owner: &str,
        namespace: &[String],
        key: &str,
    ) -> Result<bool, RuntimeError> {
        Ok(self
            .stores
            .items
            .delete(Owner(owner), namespace, key)
            .await?)
    }

    /// Items under a namespace prefix matching a filter.
    pub async fn search_items(
        &self,
        owner: &str,
        query: &ItemSearch,
    ) -> Result<Vec<SearchItem>, RuntimeError> {
        Ok(self.stores.items.search(Owner(owner), query).await?)
    }

    /// The namespaces that hold items.
    pub async fn list_namespaces(
        &self,
        owner: &str,
        query: &NamespaceQuery,
    ) -> Result<Vec<Vec<String>>, RuntimeError> {
        Ok(self
            .stores
            .items
            .list_namespaces(Owner(owner), query)
            .await?)
    }
}
