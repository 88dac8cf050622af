"""The operator's image policy end to end (issue 22, "refused ... with a condition otherwise"):
an operator started with --allowed-image refuses a model whose image the policy does not allow
with the ImageAllowed condition and creates nothing for it; an allowed one proceeds. The chart
passes imagePolicy.allowedImages as these flags (tests/unit/test_chart_render.py)."""

from __future__ import annotations

import json
import time

import pytest
from lightkube import Client
from lightkube.resources.batch_v1 import Job

from fixtures.cluster import wait_for
from localcluster import LocalCluster
from medusa_operator.controller.kube import MedusaModelResource

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def model(name: str, builder_image: str) -> dict:
    return {"apiVersion": "inference.medusa.dev/v1alpha1", "kind": "MedusaModel", "metadata": {"name": name},
            "spec": {"baseModel": {"uri": "s3://models/base/"}, "medusa": {"uri": "s3://models/heads/"},
                     "engine": {"backend": "reference", "gpu": {"count": 0}, "builderImage": builder_image},
                     "artifacts": {"uri": "s3://engines/"}, "validation": {"baseline": "none"},
                     "serving": {"image": "example.invalid/tritonserver:test"}}}


def image_condition(kube: Client, namespace: str, name: str) -> dict | None:
    status = kube.get(MedusaModelResource, name, namespace=namespace).to_dict().get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "ImageAllowed"), None)


def test_a_disallowed_image_gets_a_condition_and_no_job(local_cluster: LocalCluster, kube: Client, namespace: str,
                                                        operator_factory, scripter) -> None:
    operator_factory("--no-leader-elect", "--allowed-image=example.invalid")
    for manifest in (model("refused", "docker.io/someone/builder:1"), model("allowed", "example.invalid/builder:1")):
        local_cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    refused = wait_for(lambda: image_condition(kube, namespace, "refused"), what="the ImageAllowed condition")
    assert refused["status"] == "False" and refused["reason"] == "ImageNotAllowed"
    assert "engine.builderImage 'docker.io/someone/builder:1'" in refused["message"]
    assert "example.invalid" in refused["message"]
    wait_for(lambda: (image_condition(kube, namespace, "allowed") or {}).get("status") == "True",
             what="the allowed model's condition")
    wait_for(lambda: any(j.metadata.labels.get("medusa.dev/model") == "allowed"
                         for j in kube.list(Job, namespace=namespace)), what="the allowed model's first Job")
    time.sleep(2)
    assert not [j for j in kube.list(Job, namespace=namespace) if j.metadata.labels.get("medusa.dev/model") == "refused"]
    status = kube.get(MedusaModelResource, "refused", namespace=namespace).to_dict()["status"]
    assert status["phase"] == "Failed" and status["message"] == refused["message"]
