"""store.*: put_item, get_item, delete_item, search_items, list_namespaces."""

from __future__ import annotations

import uuid

import pytest
from langgraph_sdk.errors import NotFoundError


@pytest.fixture
def ns() -> list[str]:
    return ["pytest", uuid.uuid4().hex]


async def test_put_get_update_delete(client, ns):
    await client.store.put_item(ns + ["prefs"], key="theme", value={"color": "green", "size": 3})
    item = await client.store.get_item(ns + ["prefs"], key="theme")
    assert item["namespace"] == ns + ["prefs"]
    assert item["key"] == "theme"
    assert item["value"] == {"color": "green", "size": 3}
    first_update = item["updated_at"]

    await client.store.put_item(ns + ["prefs"], key="theme", value={"color": "blue"})
    item = await client.store.get_item(ns + ["prefs"], key="theme")
    assert item["value"] == {"color": "blue"}
    assert item["updated_at"] >= first_update

    await client.store.delete_item(ns + ["prefs"], key="theme")
    try:
        gone = await client.store.get_item(ns + ["prefs"], key="theme")
    except NotFoundError:
        gone = None
    assert gone is None


async def test_get_missing_item(client, ns):
    try:
        missing = await client.store.get_item(ns, key="nothing")
    except NotFoundError:
        missing = None
    assert missing is None


async def test_search_items(client, ns):
    await client.store.put_item(ns + ["a"], key="k1", value={"kind": "fruit", "name": "apple"})
    await client.store.put_item(ns + ["a"], key="k2", value={"kind": "veg", "name": "leek"})
    await client.store.put_item(ns + ["b"], key="k3", value={"kind": "fruit", "name": "pear"})

    res = await client.store.search_items(ns, limit=10)
    assert {i["key"] for i in res["items"]} == {"k1", "k2", "k3"}
    res = await client.store.search_items(ns, filter={"kind": "fruit"})
    assert {(tuple(i["namespace"]), i["key"]) for i in res["items"]} == {
        (tuple(ns + ["a"]), "k1"),
        (tuple(ns + ["b"]), "k3"),
    }
    assert {i["value"]["name"] for i in res["items"]} == {"apple", "pear"}
    res = await client.store.search_items(ns + ["a"])
    assert {i["key"] for i in res["items"]} == {"k1", "k2"}
    page1 = await client.store.search_items(ns, limit=2, offset=0)
    page2 = await client.store.search_items(ns, limit=2, offset=2)
    assert len(page1["items"]) == 2 and len(page2["items"]) == 1
    assert {i["key"] for i in page1["items"] + page2["items"]} == {"k1", "k2", "k3"}
    assert (await client.store.search_items(ns + ["zzz"]))["items"] == []


async def test_list_namespaces(client, ns):
    await client.store.put_item(ns + ["a", "x"], key="k", value={"v": 1})
    await client.store.put_item(ns + ["a", "y"], key="k", value={"v": 2})
    await client.store.put_item(ns + ["b"], key="k", value={"v": 3})
    res = await client.store.list_namespaces(prefix=ns)
    assert sorted(res["namespaces"]) == sorted([ns + ["a", "x"], ns + ["a", "y"], ns + ["b"]])
    res = await client.store.list_namespaces(prefix=ns, max_depth=3)
    assert sorted(res["namespaces"]) == sorted([ns + ["a"], ns + ["b"]])
    res = await client.store.list_namespaces(prefix=ns, suffix=["x"])
    assert res["namespaces"] == [ns + ["a", "x"]]
    res = await client.store.list_namespaces(prefix=ns, limit=1)
    assert len(res["namespaces"]) == 1
