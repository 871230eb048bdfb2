//! ItemStore contract: put/replace, invalid input, search, namespaces, delete.

use std::time::Duration;

use serde_json::json;

use super::{is_invalid, names, obj, ok};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, Stores};

fn ns(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Alice's items `users/u1:prefs` (`lang` fr, after replacing en), `users/u2/prefs:theme`
/// (en, dark) and `docs:d1` (en), written in that order 2 ms apart, and bob's
/// `users/u1:prefs` (en).
struct Items {
    alice: String,
    bob: String,
    u1: Vec<String>,
    u2: Vec<String>,
    docs: Vec<String>,
}

impl Items {
    async fn put(s: &dyn ItemStore) -> Items {
        let (alice, bob, _) = names();
        let (u1, u2, docs) = (
            ns(&["users", "u1"]),
            ns(&["users", "u2", "prefs"]),
            ns(&["docs"]),
        );
        let f = Items {
            alice,
            bob,
            u1,
            u2,
            docs,
        };
        let puts = [
            (&f.alice, &f.u1, "prefs", json!({"lang": "en", "n": 1})),
            (&f.alice, &f.u1, "prefs", json!({"lang": "fr", "n": 2})),
            (
                &f.alice,
                &f.u2,
                "theme",
                json!({"lang": "en", "dark": true}),
            ),
            (&f.alice, &f.docs, "d1", json!({"lang": "en"})),
        ];
        for (owner, namespace, key, value) in puts {
            ok(s.put(Owner(owner), namespace, key, value).await, "put");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ok(
            s.put(Owner(&f.bob), &f.u1, "prefs", json!({"lang": "en"}))
                .await,
            "put bob",
        );
        f
    }

    async fn delete(self, s: &dyn ItemStore) {
        ok(
            s.delete(Owner(&self.alice), &self.u1, "prefs").await,
            "cleanup",
        );
        ok(
            s.delete(Owner(&self.alice), &self.u2, "theme").await,
            "cleanup",
        );
        ok(
            s.delete(Owner(&self.alice), &self.docs, "d1").await,
            "cleanup",
        );
        ok(
            s.delete(Owner(&self.bob), &self.u1, "prefs").await,
            "cleanup",
        );
    }
}

/// Items are per owner; a replace keeps `created_at` and moves `updated_at`.
pub async fn items_put_get_replace(stores: &Stores) {
    let s = stores.items.as_ref();
    let (alice, bob, _) = names();
    let u1 = ns(&["users", "u1"]);
    let p = ok(
        s.put(Owner(&alice), &u1, "prefs", json!({"lang": "en", "n": 1}))
            .await,
        "put",
    );
    assert_eq!(p.namespace, u1);
    assert_eq!(p.created_at, p.updated_at);
    let got = ok(s.get(Owner(&alice), &u1, "prefs").await, "get").expect("item");
    assert_eq!(got, p);
    assert!(
        ok(s.get(Owner(&bob), &u1, "prefs").await, "get other").is_none(),
        "items are per owner"
    );
    assert!(ok(s.get(Owner(&alice), &u1, "missing").await, "missing").is_none());
    tokio::time::sleep(Duration::from_millis(2)).await;
    let p2 = ok(
        s.put(Owner(&alice), &u1, "prefs", json!({"lang": "fr", "n": 2}))
            .await,
        "replace",
    );
    assert_eq!(p2.created_at, p.created_at, "created_at kept on replace");
    assert!(p2.updated_at > p.updated_at);
    assert_eq!(
        ok(s.get(Owner(&alice), &u1, "prefs").await, "get")
            .expect("item")
            .value,
        json!({"lang": "fr", "n": 2})
    );
    ok(s.delete(Owner(&alice), &u1, "prefs").await, "cleanup");
}

/// Empty namespaces, labels with dots or empty ones, non-object values and empty keys are
/// invalid.
pub async fn items_invalid_input(stores: &Stores) {
    let s = stores.items.as_ref();
    let (alice, _, _) = names();
    let u1 = ns(&["users", "u1"]);
    assert!(is_invalid(s.put(Owner(&alice), &[], "k", json!({})).await));
    assert!(is_invalid(
        s.put(Owner(&alice), &ns(&["a.b"]), "k", json!({})).await
    ));
    assert!(is_invalid(
        s.put(Owner(&alice), &ns(&[""]), "k", json!({})).await
    ));
    assert!(
        is_invalid(s.put(Owner(&alice), &u1, "k", json!([1])).await),
        "values must be objects"
    );
    assert!(is_invalid(s.put(Owner(&alice), &u1, "", json!({})).await));
}

/// Search: by namespace prefix (whole labels), by value filter, newest first, paged, per owner.
pub async fn items_search(stores: &Stores) {
    let s = stores.items.as_ref();
    let f = Items::put(s).await;
    let keys = |hits: Vec<SearchItem>| hits.into_iter().map(|h| h.item.key).collect::<Vec<_>>();
    let prefix = |p: Vec<String>| ItemSearch {
        namespace_prefix: p,
        ..Default::default()
    };
    let hits = ok(
        s.search(Owner(&f.alice), &prefix(ns(&["users"]))).await,
        "search",
    );
    assert!(hits.iter().all(|h| h.score.is_none()));
    assert_eq!(keys(hits), vec!["theme", "prefs"]);
    let user = ok(
        s.search(Owner(&f.alice), &prefix(ns(&["user"]))).await,
        "label prefix is not string prefix",
    );
    assert!(user.is_empty());
    assert_eq!(
        ok(
            s.search(Owner(&f.alice), &prefix(f.u1.clone())).await,
            "exact ns"
        )
        .len(),
        1
    );
    let filter = |v| ItemSearch {
        filter: obj(v),
        ..Default::default()
    };
    let en = ok(
        s.search(Owner(&f.alice), &filter(json!({"lang": "en"})))
            .await,
        "filter",
    );
    assert_eq!(keys(en), vec!["d1", "theme"]);
    assert_eq!(
        ok(
            s.search(Owner(&f.alice), &filter(json!({"dark": true})))
                .await,
            "bool filter"
        )
        .len(),
        1
    );
    let page = ItemSearch {
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    let hits = ok(s.search(Owner(&f.alice), &page).await, "paging");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].item.key, "theme");
    assert_eq!(
        ok(
            s.search(Owner(&f.bob), &ItemSearch::default()).await,
            "bob search"
        )
        .len(),
        1
    );
    f.delete(s).await;
}

/// Namespaces: all of the owner's, by prefix with a depth, by suffix, with a wildcard, paged.
pub async fn items_namespaces(stores: &Stores) {
    let s = stores.items.as_ref();
    let f = Items::put(s).await;
    let (u1, u2, docs) = (&f.u1, &f.u2, &f.docs);
    let all = ok(
        s.list_namespaces(Owner(&f.alice), &NamespaceQuery::default())
            .await,
        "namespaces",
    );
    assert_eq!(all, vec![docs.clone(), u1.clone(), u2.clone()]);
    let q = NamespaceQuery {
        prefix: Some(ns(&["users"])),
        max_depth: Some(2),
        ..Default::default()
    };
    let depth = ok(s.list_namespaces(Owner(&f.alice), &q).await, "prefix depth");
    assert_eq!(depth, vec![u1.clone(), ns(&["users", "u2"])]);
    let q = NamespaceQuery {
        suffix: Some(ns(&["prefs"])),
        ..Default::default()
    };
    assert_eq!(
        ok(s.list_namespaces(Owner(&f.alice), &q).await, "suffix"),
        vec![u2.clone()]
    );
    let q = NamespaceQuery {
        prefix: Some(ns(&["users", "*"])),
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    assert_eq!(
        ok(
            s.list_namespaces(Owner(&f.alice), &q).await,
            "wildcard paging"
        ),
        vec![u2.clone()]
    );
    let bobs = ok(
        s.list_namespaces(Owner(&f.bob), &NamespaceQuery::default())
            .await,
        "bob ns",
    );
    assert_eq!(bobs, vec![u1.clone()]);
    f.delete(s).await;
}

/// Delete: once, the owner's item only; nothing is left of an owner whose items are deleted.
pub async fn items_delete(stores: &Stores) {
    let s = stores.items.as_ref();
    let f = Items::put(s).await;
    let (alice, u1) = (&f.alice, &f.u1);
    assert!(ok(s.delete(Owner(alice), u1, "prefs").await, "delete"));
    assert!(!ok(
        s.delete(Owner(alice), u1, "prefs").await,
        "delete again"
    ));
    assert!(ok(s.get(Owner(alice), u1, "prefs").await, "deleted").is_none());
    assert!(ok(s.get(Owner(&f.bob), u1, "prefs").await, "bob's kept").is_some());
    ok(s.delete(Owner(alice), &f.u2, "theme").await, "cleanup");
    ok(s.delete(Owner(alice), &f.docs, "d1").await, "cleanup");
    ok(s.delete(Owner(&f.bob), u1, "prefs").await, "cleanup");
    let left = ok(
        s.list_namespaces(Owner(alice), &NamespaceQuery::default())
            .await,
        "empty",
    );
    assert!(left.is_empty());
}
