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


def test_a_child_change_the_plan_cannot_see_wakes_no_model() -> None:
    """Most updates of a Job pod or a Deployment touch fields the plan never reads (an annotation,
    a finalizer, a status counter, managed fields): they refresh the cache but queue no pass."""
    from medusa_operator.controller.cache import DEPLOYMENTS, PODS
    from medusa_operator.render import names
    woken: list = []
    cache = ClusterCache(None, ["ns"], on_model=lambda *a: None, on_child=woken.append)
    cache._model_changed(None, {"metadata": {"namespace": "ns", "name": "m", "resourceVersion": "1"}})
    labels = {names.LABEL_MODEL: "m"}
    pods, deployments = cache.child_informers[PODS][0], cache.child_informers[DEPLOYMENTS][0]

    pod = {"metadata": {"namespace": "ns", "name": "p", "resourceVersion": "2", "labels": labels},
           "spec": {"nodeName": "gpu-1", "restartPolicy": "Never"}, "status": {"phase": "Running"}}
    pods._event({"type": "ADDED", "object": pod}, "1")
    annotated = {**pod, "metadata": {**pod["metadata"], "resourceVersion": "3", "annotations": {"note": "x"},
                                     "finalizers": ["batch.kubernetes.io/job-tracking"]}}
    pods._event({"type": "MODIFIED", "object": annotated}, "2")
    assert woken == [("ns", "m")]
    assert cache.live("v1", "Pod", "ns", "p") is None  # pods are read through children_of, never applied
    assert cache.children_of(("ns", "m")).pods[0]["metadata"]["resourceVersion"] == "3"
    done = {**annotated, "metadata": {**annotated["metadata"], "resourceVersion": "4"},
            "status": {"phase": "Succeeded"}}
    pods._event({"type": "MODIFIED", "object": done}, "3")
    assert woken == [("ns", "m")] * 2

    deployment = {"metadata": {"namespace": "ns", "name": "d", "resourceVersion": "5", "labels": labels,
                               "annotations": {names.APPLIED_ANNOTATION: "abc"}},
                  "spec": {"replicas": 1}, "status": {"replicas": 1}}
    deployments._event({"type": "ADDED", "object": deployment}, "4")
    observed = {**deployment, "metadata": {**deployment["metadata"], "resourceVersion": "6"},
                "status": {"replicas": 1, "observedGeneration": 1, "updatedReplicas": 1}}
    deployments._event({"type": "MODIFIED", "object": observed}, "5")
    assert woken == [("ns", "m")] * 3
    ready = {**observed, "metadata": {**observed["metadata"], "resourceVersion": "7"},
             "status": {"replicas": 1, "readyReplicas": 1}}
    deployments._event({"type": "MODIFIED", "object": ready}, "6")
    assert woken == [("ns", "m")] * 4
    assert cache.live("apps/v1", "Deployment", "ns", "d")["status"]["readyReplicas"] == 1
