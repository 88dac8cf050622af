"""The Lease against the real API server (issue 25, bullet: an idle operator makes at most a few
API requests a minute; the Lease's renewals are all of them, so each renewal is one request).
The client is the real one, wrapped to count what it sends."""

from __future__ import annotations

import pytest
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.coordination_v1 import Lease

from localcluster import LocalCluster
from medusa_operator.leader import LeaderElector

pytestmark = pytest.mark.cluster


class CountingClient:
    """The real client; counts each request by verb."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.sent: list[str] = []

    def __getattr__(self, verb):
        method = getattr(self.client, verb)

        async def counted(*args, **kwargs):
            self.sent.append(verb)
            return await method(*args, **kwargs)
        return counted


def elector(local_cluster: LocalCluster, namespace: str, identity: str) -> tuple[LeaderElector, CountingClient]:
    client = CountingClient(AsyncClient(config=KubeConfig.from_file(str(local_cluster.kubeconfig))))
    return LeaderElector(client, namespace, "lease", identity), client


async def test_the_leader_renews_with_one_request_each_time(local_cluster, kube, namespace) -> None:
    leader, sent = elector(local_cluster, namespace, "a")
    await leader.acquire()
    sent.sent.clear()
    for _ in range(3):
        assert await leader._attempt()
    assert sent.sent == ["replace"] * 3
    assert kube.get(Lease, "lease", namespace=namespace).spec.holderIdentity == "a"


async def test_a_renewal_that_finds_the_lease_changed_reads_it_and_still_renews(local_cluster, kube, namespace) -> None:
    leader, sent = elector(local_cluster, namespace, "a")
    await leader.acquire()
    lease = kube.get(Lease, "lease", namespace=namespace)
    lease.metadata.labels = {"touched": "by-someone-else"}  # a new resourceVersion, the same holder
    kube.replace(lease)
    sent.sent.clear()
    assert await leader._attempt()
    assert sent.sent == ["replace", "get", "replace"]
    assert kube.get(Lease, "lease", namespace=namespace).spec.holderIdentity == "a"


async def test_a_renewal_never_takes_back_a_lease_another_replica_holds(local_cluster, kube, namespace) -> None:
    leader, _ = elector(local_cluster, namespace, "a")
    await leader.acquire()
    lease = kube.get(Lease, "lease", namespace=namespace)
    lease.spec.holderIdentity = "b"  # b took over (a was paused past the lease, say)
    kube.replace(lease)
    assert not await leader._attempt()
    assert kube.get(Lease, "lease", namespace=namespace).spec.holderIdentity == "b"
