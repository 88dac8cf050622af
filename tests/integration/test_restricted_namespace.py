"""A namespace that enforces the `restricted` Pod Security Standard admits everything the operator
renders (issue 22, "Test: a namespace labelled pod-security.kubernetes.io/enforce: restricted").

The real API server's PodSecurity admission decides, for every backend and option (both
autoscalers, makeRoom, the base-engine baseline, PVC and S3 stores; tests/rendered_objects.py).
Admission enforces the standard on Pods and only warns about workload templates, so each Job and
Deployment is sent as it is (no warning allowed) and its pod template as a Pod (admitted or not).
Server-side dry run: nothing is stored. ScaledObjects are sent only where the cluster serves KEDA's
API; otherwise that kind is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from localcluster import LocalCluster
from rendered_objects import cases, render_case

pytestmark = pytest.mark.cluster

CASES = cases()


@pytest.fixture
def restricted_namespace(local_cluster: LocalCluster, namespace: str) -> Iterator[str]:
    local_cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                          "pod-security.kubernetes.io/warn=restricted")
    yield namespace


def serves_keda(cluster: LocalCluster) -> bool:
    out = cluster.kubectl("api-resources", "--api-group=keda.sh", "-o", "name", check=False).stdout
    return "scaledobjects.keda.sh" in out


def as_pod(workload: dict) -> dict:
    template = workload["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{workload['metadata']['name']}-pod", "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


def dry_run(cluster: LocalCluster, namespace: str, objects: list[dict]):
    return cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", check=False,
                           input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def test_the_namespace_enforces_the_standard(local_cluster: LocalCluster, restricted_namespace: str) -> None:
    """The check has teeth: a pod that runs as root is refused here."""
    root_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "as-root"},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1",
                                         "securityContext": {"runAsUser": 0}}]}}
    proc = dry_run(local_cluster, restricted_namespace, [root_pod])
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_rendered_object_is_admitted(local_cluster: LocalCluster, restricted_namespace: str, case) -> None:
    objects = render_case(case, restricted_namespace)
    if not serves_keda(local_cluster):
        objects = [o for o in objects if o["kind"] != "ScaledObject"]
    workloads = [o for o in objects if o["kind"] in ("Job", "Deployment")]
    assert workloads

    sent = dry_run(local_cluster, restricted_namespace, objects)
    assert sent.returncode == 0, sent.stderr
    assert "PodSecurity" not in sent.stderr, sent.stderr
    assert sent.stdout.count("(server dry run)") == len(objects)

    pods = dry_run(local_cluster, restricted_namespace, [as_pod(w) for w in workloads])
    assert pods.returncode == 0, pods.stderr
    assert pods.stdout.count("(server dry run)") == len(workloads)
