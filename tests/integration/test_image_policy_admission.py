"""The chart's image policy at admission time (issue 22, "restricts images to allowed prefixes or
digests, refused at admission time where possible"): the ValidatingAdmissionPolicy that
`helm template` renders, on the real API server, gives the same verdicts as the operator's own
check (tests/image_policy_cases.py holds them for both) and says what to change.

The policy is bound to the test's namespace only (namespaced watch mode), so it can never refuse
models elsewhere; its cluster-scoped objects are deleted afterwards.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from image_policy_cases import POLICY, VERDICTS
from localcluster import LocalCluster

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "medusa-operator"
REFUSED = "is not allowed by the operator image policy"


def model(builder_image: str | None = None, serving_image: str | None = None) -> dict:
    spec: dict = {"baseModel": {"uri": "s3://models/base/"}, "medusa": {"uri": "s3://models/heads/"},
                  "artifacts": {"uri": "s3://engines/"}, "engine": {}, "serving": {}}
    if builder_image:
        spec["engine"]["builderImage"] = builder_image
    if serving_image:
        spec["serving"]["image"] = serving_image
    return {"apiVersion": "inference.medusa.dev/v1alpha1", "kind": "MedusaModel", "metadata": {"name": "m"},
            "spec": spec}


def create(cluster: LocalCluster, namespace: str, manifest: dict) -> subprocess.CompletedProcess:
    return cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(manifest),
                           check=False)


@pytest.fixture
def image_policy(local_cluster: LocalCluster, namespace: str, medusa_crd: str) -> Iterator[list[dict]]:
    sets = ["--set", "watchMode=namespaced", "--set", f"watchNamespaces={{{namespace}}}",
            "--set", f"imagePolicy.allowedImages={{{','.join(POLICY)}}}"]
    out = subprocess.run([local_cluster.tool("helm"), "template", "medusa-operator", str(CHART), "-n", namespace,
                          *sets], capture_output=True, text=True, check=True).stdout
    objects = [d for d in yaml.safe_load_all(out) if d and d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert {o["kind"] for o in objects} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    # The API server loads new policies within seconds.
    deadline = time.monotonic() + 60
    while REFUSED not in create(local_cluster, namespace, model("docker.io/library/ubuntu:22.04")).stderr:
        assert time.monotonic() < deadline, "the admission policy never took effect"
        time.sleep(1)
    yield objects
    for obj in objects:
        local_cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", check=False)


def test_admission_gives_the_operators_verdicts(local_cluster: LocalCluster, namespace: str, image_policy) -> None:
    wrong = []
    for image, allowed in VERDICTS:
        for manifest in (model(builder_image=image), model(serving_image=image)):
            proc = create(local_cluster, namespace, manifest)
            admitted = proc.returncode == 0
            if admitted != allowed or (not admitted and REFUSED not in proc.stderr):
                wrong.append((image, "admitted" if admitted else proc.stderr.strip()))
    assert wrong == []


def test_a_refusal_names_the_field_the_image_and_what_is_allowed(local_cluster: LocalCluster, namespace: str,
                                                               image_policy) -> None:
    proc = create(local_cluster, namespace, model(serving_image="docker.io/someone/triton:latest"))
    assert proc.returncode != 0
    assert "spec.serving.image docker.io/someone/triton:latest is not allowed" in proc.stderr
    assert all(entry in proc.stderr for entry in POLICY)
    assert create(local_cluster, namespace, model()).returncode == 0, "a model naming no image uses the defaults"
