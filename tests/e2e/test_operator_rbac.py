"""The chart's RBAC grants exactly what the operator uses (issue 22, "RBAC").

Every e2e test runs the operator as the chart's ServiceAccount and fails on a refused request
(tests/fixtures/operator.py). This test adds the other half: one run that takes a model through
everything the operator does (credentials, build, baseline, promotion, an HPA, a switch to KEDA,
autoscaling switched off, a newer revision replacing it, leader election) and then reads the API
server's audit log: every verb on every resource the chart grants must have been used. The one right no request shows is
`update medusamodels/finalizers`: the OwnerReferencesPermissionEnforcement admission plugin
(enabled on the local cluster) checks it when a child carries blockOwnerDeletion, so the test
shows that an account without it is refused such a child.

Simulated: the Jobs' results (hack/jobscript.py). KEDA itself does not run: its ScaledObject API
is served from a CRD of that group, version and kind with an open schema, which is all the
operator talks to.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Secret

from fixtures.cluster import exists, wait_for
from fixtures.manifests import job_names
from fixtures.operator import ChartIdentity
from localcluster import LocalCluster
from medusa_operator.controller.kube import MedusaModelResource, ScaledObject

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Checked by admission, not requested: see the module's docstring.
ADMISSION_CHECKED = {("inference.medusa.dev", "medusamodels/finalizers", "update")}
KEDA_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {"group": "keda.sh", "scope": "Namespaced",
             "names": {"plural": "scaledobjects", "singular": "scaledobject", "kind": "ScaledObject"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def granted(rbac: list[dict]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) for every rule of the chart's roles."""
    out = set()
    for obj in rbac:
        for rule in obj.get("rules", []):
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def audited(cluster: LocalCluster, user: str) -> list[dict]:
    events = []
    with open(cluster.audit_log) as fh:
        for line in fh:
            event = json.loads(line)
            if event["user"]["username"] == user and "objectRef" in event:
                events.append(event)
    return events


def used(events: list[dict]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) the requests exercised. A server-side apply is a patch; one
    that created its object (201) also needed, and was authorised for, create."""
    out = set()
    for event in events:
        ref = event["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.add((ref.get("apiGroup", ""), resource, event["verb"]))
        if event["verb"] == "patch" and event.get("responseStatus", {}).get("code") == 201:
            out.add((ref.get("apiGroup", ""), resource, "create"))
    return out


def model_manifest(**autoscaling: Any) -> dict[str, Any]:
    return {"apiVersion": "inference.medusa.dev/v1alpha1", "kind": "MedusaModel", "metadata": {"name": "smol"},
            "spec": {"baseModel": {"uri": "s3://models/smollm2/", "credentialsSecretRef": {"name": "store"}},
                     "medusa": {"uri": "s3://models/smollm2-heads/", "credentialsSecretRef": {"name": "store"}},
                     "engine": {"backend": "reference", "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
                     "artifacts": {"uri": "s3://engines/", "credentialsSecretRef": {"name": "store"}},
                     "validation": {"baseline": "base-engine", "throughput": {"minSpeedup": 1.5}},
                     "serving": {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, **autoscaling}}}}


def apply(cluster: LocalCluster, namespace: str, manifest: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=user", "-n", namespace, "-f", "-",
                    input=json.dumps(manifest))


@pytest.fixture
def keda_api(local_cluster: LocalCluster) -> Any:
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(KEDA_CRD))
    local_cluster.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s")
    yield
    local_cluster.kubectl("delete", "crd", "scaledobjects.keda.sh", "--ignore-not-found", "--wait=true")


def test_every_right_the_chart_grants_is_used_and_nothing_more_is_asked(
        local_cluster: LocalCluster, kube: Client, namespace: str, chart_identity: ChartIdentity, keda_api,
        operator_factory, scripter) -> None:
    kube.create(Secret(metadata=ObjectMeta(name="store"), stringData={"AWS_ACCESS_KEY_ID": "id"}), namespace=namespace)
    operator = operator_factory("--leader-elect")
    apply(local_cluster, namespace, model_manifest(provider="hpa", targetTokensPerSecondPerReplica=100))

    def phase() -> str | None:
        return (kube.get(MedusaModelResource, "smol", namespace=namespace).to_dict().get("status") or {}).get("phase")

    wait_for(lambda: phase() == "Serving", timeout=120, what=lambda: f"Serving; phase now {phase()}")
    wait_for(lambda: exists(kube, HorizontalPodAutoscaler, "smol", namespace), what="the HPA")

    apply(local_cluster, namespace, model_manifest(provider="keda", targetTokensPerSecondPerReplica=100))
    wait_for(lambda: exists(kube, ScaledObject, "smol", namespace)
             and not exists(kube, HorizontalPodAutoscaler, "smol", namespace), what="the HPA replaced by KEDA")
    apply(local_cluster, namespace, model_manifest(provider="keda"))
    wait_for(lambda: not exists(kube, ScaledObject, "smol", namespace), what="the ScaledObject removed")

    # A newer revision replaces the served one, whose Jobs and Deployment then go.
    served = kube.get(MedusaModelResource, "smol", namespace=namespace).to_dict()["status"]["revisions"]["current"]
    newer = model_manifest(provider="keda")
    newer["spec"]["validation"]["throughput"]["minSpeedup"] = 1.4
    newer["spec"]["rollout"] = {"drainSeconds": 0}
    apply(local_cluster, namespace, newer)
    wait_for(lambda: not any(served[:8] in name for name in job_names(kube, namespace)), timeout=120,
             what=lambda: f"the replaced revision's Jobs to go; phase now {phase()}")
    time.sleep(3)  # at least one Lease renewal after the last change
    operator.stop()

    events = audited(local_cluster, chart_identity.service_account)
    refused = sorted({(e["verb"], e["objectRef"]["resource"]) for e in events
                      if e.get("responseStatus", {}).get("code") == 403})
    assert refused == []
    unused = granted(chart_identity.rbac) - used(events) - ADMISSION_CHECKED
    assert unused == set(), f"the chart grants rights the operator never used: {sorted(unused)}"


def test_children_with_block_owner_deletion_need_the_finalizers_right(
        local_cluster: LocalCluster, namespace: str, chart_identity: ChartIdentity, medusa_crd: str) -> None:
    """The chart's account may create a child that blocks its model's deletion; the same account
    without `update medusamodels/finalizers` is refused, so that rule is what allows it."""
    apply(local_cluster, namespace, model_manifest())
    uid = json.loads(local_cluster.kubectl("get", "mm", "smol", "-n", namespace, "-o", "json").stdout)["metadata"]["uid"]
    (role,) = [o for o in chart_identity.rbac if o["kind"] == "Role" and o["metadata"]["namespace"] == namespace
               and any("medusamodels" in r["resources"] for r in o["rules"])]
    without = {**role, "metadata": {"name": "without-finalizers", "namespace": namespace},
               "rules": [r for r in role["rules"] if r["resources"] != ["medusamodels/finalizers"]]}
    assert len(without["rules"]) == len(role["rules"]) - 1
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "without-finalizers",
                                                                   "namespace": namespace}},
        without,
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "without-finalizers", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "without-finalizers"},
         "subjects": [{"kind": "ServiceAccount", "name": "without-finalizers", "namespace": namespace}]},
    ]}))
    child = {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "child", "namespace": namespace, "ownerReferences": [{
            "apiVersion": "inference.medusa.dev/v1alpha1", "kind": "MedusaModel", "name": "smol", "uid": uid,
            "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"ports": [{"port": 8000}]}}

    def create_as(account: str):
        return local_cluster.kubectl("create", "--dry-run=server", f"--as={account}", "-f", "-",
                                     input=json.dumps(child), check=False)

    allowed = create_as(chart_identity.service_account)
    assert allowed.returncode == 0, allowed.stderr
    refused = create_as(f"system:serviceaccount:{namespace}:without-finalizers")
    assert refused.returncode != 0 and "cannot set blockOwnerDeletion" in refused.stderr, refused.stderr
