"""Watch events the real API server sends only in conditions a test cannot stage quickly (a
resourceVersion compacted away); the list-and-watch path itself is tested against the real
server in tests/integration/test_watch_cache.py."""

from __future__ import annotations

import pytest

from medusa_operator.controller.cache import JOBS, ClusterCache, Gone, Informer


def informer(heard: list) -> Informer:
    return Informer(None, JOBS, "ns", None, lambda before, after: heard.append((before, after)))


def test_an_expired_watch_means_list_again() -> None:
    with pytest.raises(Gone):
        informer([])._event({"type": "ERROR", "object": {"kind": "Status", "code": 410}}, "5")


def test_a_bookmark_moves_the_resume_point_and_changes_nothing() -> None:
    heard: list = []
    seen = informer(heard)
    assert seen._event({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}, "5") == "42"
    assert heard == [] and seen.objects == {}


def test_children_are_indexed_by_model_and_wake_the_model_by_its_name() -> None:
    woken: list = []
    cache = ClusterCache(None, ["ns"], on_model=lambda *a: None, on_child=woken.append)
    long_name = "m" * 70  # model label values are fitted to 63 characters
    cache._model_changed(None, {"metadata": {"namespace": "ns", "name": long_name, "resourceVersion": "1"}})
    jobs = cache.child_informers[JOBS][0]
    from medusa_operator.render import names
    job = {"metadata": {"namespace": "ns", "name": "j", "resourceVersion": "2",
                        "labels": {names.LABEL_MODEL: names.fit(long_name, 63)}}}
    jobs._event({"type": "ADDED", "object": job}, "1")
    assert woken == [("ns", long_name)]
    assert [j["metadata"]["name"] for j in cache.children_of(("ns", long_name)).jobs] == ["j"]
    jobs._event({"type": "DELETED", "object": job}, "2")
    assert cache.children_of(("ns", long_name)).jobs == []
