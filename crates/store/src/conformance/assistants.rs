//! Assistant contract: create/conflict, visibility of system assistants, ids per owner,
//! versions, set_latest, search, delete.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{at, base_time, is_conflict, is_not_found, names, obj, ok};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, Stores};

/// Alice's assistant `id` on `graph`, created at `base + 10` with config, context and
/// metadata `{"k": "v", "team": "red"}`.
fn fast_one(id: &str, graph: &str, x: &str, base: DateTime<Utc>) -> Assistant {
    let mut a = Assistant::new(id, graph, format!("Fast One {x}"));
    a.config = json!({"configurable": {"delay": 0.05}});
    a.context = json!({"delay": 0.05});
    a.metadata = obj(json!({"k": "v", "team": "red"}));
    a.created_at = at(base, 10);
    a.updated_at = a.created_at;
    a
}

fn patch_name(name: String) -> AssistantPatch {
    AssistantPatch {
        name: Some(name),
        ..Default::default()
    }
}

/// A system assistant is visible to everyone and writable only by the system owner.
pub async fn assistant_system_is_visible_to_all_and_writable_by_none(stores: &Stores) {
    let s = &stores.assistants;
    let (alice, bob, x) = names();
    let mut sys = Assistant::system(&format!("graph-{x}"));
    sys.created_at = at(base_time(), 0);
    sys.updated_at = sys.created_at;
    let created = ok(
        s.create(Owner(SYSTEM_OWNER), sys.clone()).await,
        "create system",
    );
    assert_eq!(
        created.assistant_id,
        system_assistant_id(&format!("graph-{x}"))
    );
    assert_eq!(created.owner, SYSTEM_OWNER);
    let got = ok(s.get(Owner(&alice), &sys.assistant_id).await, "get system")
        .expect("system visible to alice");
    assert_eq!(got, created);
    assert!(ok(s.get(Owner(&bob), &sys.assistant_id).await, "get").is_some());
    assert!(
        is_conflict(s.create(Owner(&alice), sys.clone()).await),
        "duplicate id must conflict"
    );
    assert!(
        is_not_found(s.delete(Owner(&alice), &sys.assistant_id).await),
        "users cannot delete system assistants"
    );
    assert!(is_not_found(
        s.update(Owner(&alice), &sys.assistant_id, AssistantPatch::default())
            .await
    ));
    let sys_versions = ok(
        s.versions(Owner(&bob), &sys.assistant_id, &VersionQuery::default())
            .await,
        "sys versions",
    );
    assert_eq!(sys_versions.len(), 1);
    ok(
        s.delete(Owner(SYSTEM_OWNER), &sys.assistant_id).await,
        "cleanup system",
    );
}

/// A created assistant is its owner's: version 1, read back whole, invisible to others.
pub async fn assistant_create_and_get(stores: &Stores) {
    let s = &stores.assistants;
    let (alice, bob, x) = names();
    let id = uuid::Uuid::new_v4().to_string();
    let a = fast_one(&id, &format!("graph-{x}"), &x, base_time());
    let created = ok(s.create(Owner(&alice), a.clone()).await, "create");
    assert_eq!(created.owner, alice);
    assert_eq!(created.version, 1);
    let got = ok(s.get(Owner(&alice), &id).await, "get").expect("own assistant");
    assert_eq!(got, created);
    assert_eq!(got.config, a.config);
    assert_eq!(got.description, None);
    assert!(
        ok(s.get(Owner(&bob), &id).await, "get other").is_none(),
        "bob must not see alice's assistant"
    );
    assert!(
        ok(
            s.get(Owner(&alice), "no-such-assistant").await,
            "get missing"
        )
        .is_none()
    );
    ok(s.delete(Owner(&alice), &id).await, "cleanup");
}

/// Ids are per owner: bob's assistant of the same id is another assistant, with its own
/// versions; nothing bob does to it reaches alice's.
pub async fn assistant_ids_are_per_owner(stores: &Stores) {
    let s = &stores.assistants;
    let (alice, bob, x) = names();
    let base = base_time();
    let id = uuid::Uuid::new_v4().to_string();
    let created = ok(
        s.create(
            Owner(&alice),
            fast_one(&id, &format!("graph-{x}"), &x, base),
        )
        .await,
        "create",
    );
    let mut bobs = Assistant::new(&id, format!("other-{x}"), format!("Bob's {x}"));
    bobs.created_at = at(base, 11);
    bobs.updated_at = bobs.created_at;
    let bobs = ok(s.create(Owner(&bob), bobs).await, "bob, same id");
    assert_eq!(bobs.owner, bob);
    assert!(
        is_conflict(s.create(Owner(&bob), bobs.clone()).await),
        "bob's own id"
    );
    let renamed = patch_name("renamed by bob".into());
    ok(s.update(Owner(&bob), &id, renamed).await, "bob updates his");
    let q = VersionQuery::default();
    assert_eq!(
        ok(s.versions(Owner(&bob), &id, &q).await, "bob's versions").len(),
        2
    );
    assert_eq!(
        ok(s.versions(Owner(&alice), &id, &q).await, "alice's").len(),
        1
    );
    assert_eq!(
        ok(s.get(Owner(&alice), &id).await, "alice's").expect("alice's"),
        created
    );
    ok(s.delete(Owner(&bob), &id).await, "bob deletes his");
    assert_eq!(
        ok(s.get(Owner(&alice), &id).await, "alice's stays").expect("alice's"),
        created
    );
    assert!(ok(s.get(Owner(&bob), &id).await, "bob's gone").is_none());
    ok(s.delete(Owner(&alice), &id).await, "cleanup");
}

/// Alice's assistant with three versions: 2 merged metadata `{"k": "v2"}` and set a
/// description, 3 replaced the config with `{"configurable": {"delay": 1}}`. Returns the
/// assistant as created and versions 2 and 3.
async fn three_versions(
    s: &dyn AssistantStore,
    alice: &str,
    id: &str,
    x: &str,
) -> (Assistant, Assistant, Assistant) {
    let a = fast_one(id, &format!("graph-{x}"), x, base_time());
    ok(s.create(Owner(alice), a.clone()).await, "create");
    let p2 = AssistantPatch {
        metadata: Some(obj(json!({"k": "v2"}))),
        description: Some("patched".into()),
        ..Default::default()
    };
    let p2 = ok(s.update(Owner(alice), id, p2).await, "update");
    let p3 = AssistantPatch {
        config: Some(json!({"configurable": {"delay": 1}})),
        ..Default::default()
    };
    let p3 = ok(s.update(Owner(alice), id, p3).await, "update 3");
    (a, p2, p3)
}

/// Update = a new version: metadata merges, config replaces, the rest is kept; only the
/// owner's existing assistant can be updated.
pub async fn assistant_update_is_a_new_version(stores: &Stores) {
    let s = &stores.assistants;
    let (alice, bob, x) = names();
    let id = uuid::Uuid::new_v4().to_string();
    let (a, patched, p3) = three_versions(s.as_ref(), &alice, &id, &x).await;
    assert_eq!(patched.version, 2);
    assert_eq!(patched.metadata, obj(json!({"k": "v2", "team": "red"})));
    assert_eq!(patched.description.as_deref(), Some("patched"));
    assert_eq!(patched.config, a.config);
    assert_eq!(patched.created_at, a.created_at);
    assert!(patched.updated_at > a.updated_at);
    assert!(is_not_found(
        s.update(Owner(&bob), &id, AssistantPatch::default()).await
    ));
    assert!(is_not_found(
        s.update(Owner(&alice), "missing", AssistantPatch::default())
            .await
    ));
    assert_eq!(p3.version, 3);
    assert_eq!(p3.config, json!({"configurable": {"delay": 1}}));
    assert_eq!(p3.description.as_deref(), Some("patched"));
    assert_eq!(
        ok(s.get(Owner(&alice), &id).await, "get").expect("exists"),
        p3
    );
    ok(s.delete(Owner(&alice), &id).await, "cleanup");
}

/// Versions are listed newest first, filtered by metadata and paged; another owner's are
/// not found.
pub async fn assistant_versions_newest_first_filter_and_paging(stores: &Stores) {
    let s = &stores.assistants;
    let (alice, bob, x) = names();
    let id = uuid::Uuid::new_v4().to_string();
    let (a, _, _) = three_versions(s.as_ref(), &alice, &id, &x).await;
    let versions = ok(
        s.versions(Owner(&alice), &id, &VersionQuery::default())
            .await,
        "versions",
    );
    let numbers = |v: &[AssistantVersion]| v.iter().map(|v| v.version).collect::<Vec<_>>();
    assert_eq!(numbers(&versions), vec![3, 2, 1]);
    assert_eq!(versions[2].metadata, obj(json!({"k": "v", "team": "red"})));
    assert_eq!(versions[2].created_at, a.created_at);
    assert_eq!(versions[0].config, json!({"configurable": {"delay": 1}}));
    let filtered = VersionQuery {
        metadata: obj(json!({"k": "v"})),
        ..Default::default()
    };
    let v1 = ok(
        s.versions(Owner(&alice), &id, &filtered).await,
        "versions filtered",
    );
    assert_eq!(numbers(&v1), vec![1]);
    let page = VersionQuery {
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    let paged = ok(
        s.versions(Owner(&alice), &id, &page).await,
        "versions paged",
    );
    assert_eq!(numbers(&paged), vec![2]);
    assert!(is_not_found(
        s.versions(Owner(&bob), &id, &VersionQuery::default()).await
    ));
    ok(s.delete(Owner(&alice), &id).await, "cleanup");
}

/// `set_latest` makes an old version current; the next update still takes max(version) + 1.
pub async fn assistant_set_latest(stores: &Stores) {
    let s = &stores.assistants;
    let (alice, bob, x) = names();
    let id = uuid::Uuid::new_v4().to_string();
    let (a, _, _) = three_versions(s.as_ref(), &alice, &id, &x).await;
    let back = ok(s.set_latest(Owner(&alice), &id, 1).await, "set_latest");
    assert_eq!(back.version, 1);
    assert_eq!(back.metadata, obj(json!({"k": "v", "team": "red"})));
    assert_eq!(back.description, None);
    assert_eq!(back.config, a.config);
    assert_eq!(
        ok(s.get(Owner(&alice), &id).await, "get")
            .expect("exists")
            .version,
        1
    );
    assert!(is_not_found(s.set_latest(Owner(&alice), &id, 42).await));
    assert!(is_not_found(s.set_latest(Owner(&bob), &id, 1).await));
    let p4 = ok(
        s.update(Owner(&alice), &id, patch_name(format!("Renamed {x}")))
            .await,
        "update 4",
    );
    assert_eq!(p4.version, 4);
    assert_eq!(p4.metadata, obj(json!({"k": "v", "team": "red"})));
    ok(s.delete(Owner(&alice), &id).await, "cleanup");
}

/// What the search cases search: the system assistant of `graph` (created at `base`), alice's
/// `a` on `graph` (`base + 10`, renamed to `Renamed x`), alice's `b` on another graph
/// (`base + 20`, `beta x`, team blue) and bob's `c` on `graph` (`base + 30`).
struct Searchable {
    alice: String,
    bob: String,
    x: String,
    graph: String,
    ids: [String; 4],
}

impl Searchable {
    async fn create(s: &dyn AssistantStore) -> Searchable {
        let (alice, bob, x) = names();
        let (graph, other_graph, base) = (format!("graph-{x}"), format!("other-{x}"), base_time());
        let mut sys = Assistant::system(&graph);
        sys.created_at = at(base, 0);
        sys.updated_at = sys.created_at;
        ok(
            s.create(Owner(SYSTEM_OWNER), sys.clone()).await,
            "create system",
        );
        let a = fast_one(&uuid::Uuid::new_v4().to_string(), &graph, &x, base);
        ok(s.create(Owner(&alice), a.clone()).await, "create a");
        let renamed = patch_name(format!("Renamed {x}"));
        ok(
            s.update(Owner(&alice), &a.assistant_id, renamed).await,
            "rename a",
        );
        let mut b = Assistant::new(
            uuid::Uuid::new_v4().to_string(),
            &other_graph,
            format!("beta {x}"),
        );
        b.metadata = obj(json!({"team": "blue"}));
        b.created_at = at(base, 20);
        b.updated_at = b.created_at;
        ok(s.create(Owner(&alice), b.clone()).await, "create b");
        let mut c = Assistant::new(
            uuid::Uuid::new_v4().to_string(),
            &graph,
            format!("bob's {x}"),
        );
        c.created_at = at(base, 30);
        c.updated_at = c.created_at;
        ok(s.create(Owner(&bob), c.clone()).await, "create c");
        let ids = [sys, a, b, c].map(|a| a.assistant_id);
        Searchable {
            alice,
            bob,
            x,
            graph,
            ids,
        }
    }

    async fn delete(self, s: &dyn AssistantStore) {
        let [sys, a, b, c] = &self.ids;
        ok(s.delete(Owner(&self.alice), a).await, "cleanup a");
        ok(s.delete(Owner(&self.alice), b).await, "cleanup b");
        ok(s.delete(Owner(&self.bob), c).await, "cleanup c");
        ok(s.delete(Owner(SYSTEM_OWNER), sys).await, "cleanup system");
    }
}

/// Search by graph: system assistants are visible, other owners' are not; totals, counts,
/// created_at order both ways, paging.
pub async fn assistant_search_by_graph_sort_and_paging(stores: &Stores) {
    let s = stores.assistants.as_ref();
    let f = Searchable::create(s).await;
    let [sys, a, _, _] = &f.ids;
    let q = AssistantSearch {
        graph_id: Some(f.graph.clone()),
        ..Default::default()
    };
    let (found, total) = ok(s.search(Owner(&f.alice), &q).await, "search graph");
    assert_eq!(total, 2);
    let ids: Vec<&str> = found.iter().map(|a| a.assistant_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![a.as_str(), sys.as_str()],
        "created_at desc by default"
    );
    assert_eq!(ok(s.count(Owner(&f.alice), &q).await, "count"), 2);
    assert_eq!(ok(s.count(Owner(&f.bob), &q).await, "count bob"), 2);
    let asc = AssistantSearch {
        sort_order: SortOrder::Asc,
        ..q.clone()
    };
    let (found, _) = ok(s.search(Owner(&f.alice), &asc).await, "search asc");
    assert_eq!(found[0].assistant_id, *sys);
    let paged = AssistantSearch {
        limit: 1,
        offset: 1,
        ..q.clone()
    };
    let (found, total) = ok(s.search(Owner(&f.alice), &paged).await, "paged");
    assert_eq!(total, 2);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].assistant_id, *sys);
    f.delete(s).await;
}

/// Search by metadata and by name (case-insensitive, the latest version's), sorted by name.
pub async fn assistant_search_by_metadata_and_name(stores: &Stores) {
    let s = stores.assistants.as_ref();
    let f = Searchable::create(s).await;
    let x = &f.x;
    let q = AssistantSearch {
        metadata: obj(json!({"team": "blue"})),
        ..Default::default()
    };
    let (found, total) = ok(s.search(Owner(&f.alice), &q).await, "search metadata");
    assert_eq!((found.len(), total), (1, 1));
    assert_eq!(found[0].assistant_id, f.ids[2]);
    assert_eq!(ok(s.count(Owner(&f.bob), &q).await, "count bob blue"), 0);
    let q = AssistantSearch {
        name: Some(format!("BETA {x}")),
        ..Default::default()
    };
    assert_eq!(ok(s.count(Owner(&f.alice), &q).await, "count by name"), 1);
    let q = AssistantSearch {
        name: Some(x.clone()),
        sort_by: AssistantSortBy::Name,
        sort_order: SortOrder::Asc,
        ..Default::default()
    };
    let (found, _) = ok(s.search(Owner(&f.alice), &q).await, "search by name");
    let names: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        vec![format!("Renamed {x}"), format!("beta {x}"), f.graph.clone()],
        "bob's is hidden"
    );
    f.delete(s).await;
}

/// Delete removes the assistant and its versions (only the owner's); the id can be reused.
pub async fn assistant_delete_removes_the_versions(stores: &Stores) {
    let s = &stores.assistants;
    let (alice, bob, x) = names();
    let id = uuid::Uuid::new_v4().to_string();
    let (a, _, _) = three_versions(s.as_ref(), &alice, &id, &x).await;
    assert!(is_not_found(s.delete(Owner(&bob), &id).await));
    ok(s.delete(Owner(&alice), &id).await, "delete");
    assert!(ok(s.get(Owner(&alice), &id).await, "get deleted").is_none());
    assert!(is_not_found(s.delete(Owner(&alice), &id).await));
    assert!(is_not_found(
        s.versions(Owner(&alice), &id, &VersionQuery::default())
            .await
    ));
    // the id can be reused after delete
    ok(s.create(Owner(&alice), a.clone()).await, "re-create");
    let versions = ok(
        s.versions(Owner(&alice), &id, &VersionQuery::default())
            .await,
        "versions after re-create",
    );
    assert_eq!(versions.len(), 1);
    ok(s.delete(Owner(&alice), &id).await, "cleanup");
}
