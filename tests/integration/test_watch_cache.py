"""The operator's watch caches against the real API server (issue 25): one list, then a watch
that follows changes; a cache that was not following (stale) reports what changed meanwhile,
deletions included, when it lists again."""

from __future__ import annotations

import asyncio

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from localcluster import LocalCluster
from medusa_operator.controller.cache import Informer, Kind, cache_http_client, trim_applied

pytestmark = pytest.mark.cluster

# The Informer is generic; ConfigMaps stand in for the operator's children here.
CONFIG_MAPS = Kind("api/v1", "configmaps", lambda obj: {**trim_applied(obj), "data": obj.get("data")})
SELECTOR = "app.kubernetes.io/managed-by=medusa-operator"
MANAGED = {"app.kubernetes.io/managed-by": "medusa-operator"}


def config_map(name: str, managed: bool = True, value: str = "1") -> ConfigMap:
    return ConfigMap(metadata=ObjectMeta(name=name, labels=MANAGED if managed else {}), data={"v": value})


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
def http(local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECONFIG", str(local_cluster.kubeconfig))
    return cache_http_client()


async def test_a_cache_lists_once_then_follows_changes_of_its_selected_objects(
        http, kube: Client, namespace: str) -> None:
    kube.create(config_map("kept"), namespace=namespace)
    kube.create(config_map("foreign", managed=False), namespace=namespace)
    heard: list[tuple[str | None, str | None]] = []

    def listener(before, after):
        heard.append(tuple(o["metadata"]["name"] if o else None for o in (before, after)))

    informer = Informer(http, CONFIG_MAPS, namespace, SELECTOR, listener)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 20)
        assert set(informer.objects) == {(namespace, "kept")}, "the server selects the managed objects only"
        kube.create(config_map("added"), namespace=namespace)
        kube.patch(ConfigMap, "kept", {"data": {"v": "2"}}, namespace=namespace)
        kube.delete(ConfigMap, "added", namespace=namespace)
        await until(lambda: (None, "added") in heard and ("added", None) in heard
                    and informer.objects[(namespace, "kept")]["data"] == {"v": "2"})
        assert (namespace, "added") not in informer.objects
        assert informer.lists == 1, "changes come through the watch, not by listing again"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()


async def test_a_stale_cache_reports_what_changed_while_it_was_not_following(
        http, kube: Client, namespace: str) -> None:
    for name in ("stays", "goes"):
        kube.create(config_map(name), namespace=namespace)
    heard: list[tuple[str | None, str | None]] = []
    informer = Informer(http, CONFIG_MAPS, namespace, SELECTOR,
                        lambda b, a: heard.append(tuple(o["metadata"]["name"] if o else None for o in (b, a))))
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 20)
    task.cancel()  # the watch is down: the cache goes stale
    await asyncio.gather(task, return_exceptions=True)
    kube.delete(ConfigMap, "goes", namespace=namespace)
    kube.create(config_map("new"), namespace=namespace)
    kube.patch(ConfigMap, "stays", {"data": {"v": "3"}}, namespace=namespace)
    assert set(informer.objects) == {(namespace, "stays"), (namespace, "goes")}, "stale"
    heard.clear()
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: informer.lists == 2)
        assert set(heard) == {("goes", None), (None, "new"), ("stays", "stays")}
        assert set(informer.objects) == {(namespace, "stays"), (namespace, "new")}
        assert informer.objects[(namespace, "stays")]["data"] == {"v": "3"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()
