"""Every manifest in examples/ is accepted by the real API server with the generated CRD, parses
with the API types, and reads back exactly as written (the CRD adds no defaults)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from localcluster import LocalCluster
from medusa_operator.api.v1alpha1 import MedusaModel

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CRD_FILE = REPO / "crds" / "medusamodels.inference.medusa.dev.yaml"
CRD_NAME = "medusamodels.inference.medusa.dev"


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module")
def medusa_crd(local_cluster: LocalCluster) -> None:
    """The CRD from crds/, applied server-side (taking its fields back from any other manager)."""
    local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")


def test_the_three_documented_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"minimal.yaml", "llama3-8b-tensorrt-llm.yaml", "smollm2-reference.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_parses_with_the_api_types(path: Path) -> None:
    for doc in _documents(path):
        assert doc["kind"] == "MedusaModel"
        MedusaModel.model_validate(doc)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_applies_and_reads_back_unchanged(path: Path, medusa_crd: None, local_cluster: LocalCluster,
                                                 namespace: str) -> None:
    docs = _documents(path)
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    local_cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))

    for doc in docs:
        name = doc["metadata"]["name"]
        stored = json.loads(local_cluster.kubectl("-n", namespace, "get", "mm", name, "-o", "json").stdout)
        assert stored["spec"] == doc["spec"], f"{path.name}: the API server changed the spec of {name}"
        assert stored["metadata"].get("labels", {}) == doc["metadata"].get("labels", {})


def test_reference_example_uses_the_reference_backend_and_auto_tree() -> None:
    (doc,) = _documents(REPO / "examples" / "smollm2-reference.yaml")
    model = MedusaModel.model_validate(doc)
    assert model.spec.engine.backend == "reference"
    assert model.spec.medusa.tree.preset == "auto"
    assert model.spec.base_model.uri.split("://")[0] in ("s3", "pvc")
    assert model.spec.medusa.uri.split("://")[0] in ("s3", "pvc")


def test_production_example_gates_validation_and_autoscales() -> None:
    (doc,) = _documents(REPO / "examples" / "llama3-8b-tensorrt-llm.yaml")
    spec = MedusaModel.model_validate(doc).spec
    assert spec.engine.backend == "tensorrt-llm"
    assert spec.base_model.revision, "production sources are pinned"
    assert spec.engine.gpu.product, "engines are tied to a GPU product"
    assert spec.validation.accuracy.min_score is not None and spec.validation.accuracy.max_drop_vs_base is not None
    assert spec.validation.throughput.min_speedup is not None and spec.validation.throughput.min_speedup > 1
    autoscaling = spec.serving.autoscaling
    assert autoscaling.target_tokens_per_second_per_replica and autoscaling.max_replicas > autoscaling.min_replicas
