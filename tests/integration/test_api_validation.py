"""The real API server refuses bad MedusaModel specs with a message that says what to change."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from localcluster import LocalCluster

pytestmark = pytest.mark.cluster

VALID: dict[str, Any] = {
    "apiVersion": "inference.medusa.dev/v1alpha1",
    "kind": "MedusaModel",
    "metadata": {"name": "m"},
    "spec": {
        "baseModel": {"uri": "hf://meta-llama/Meta-Llama-3-8B-Instruct", "revision": "5f0b02c7"},
        "medusa": {"uri": "s3://heads/llama3-8b-medusa/", "numHeads": 3,
                   "tree": {"choices": [[0], [0, 0], [1], [0, 1], [0, 0, 0]]}},
        "engine": {"backend": "tensorrt-llm", "dtype": "float16", "quantization": "none",
                   "tensorParallelSize": 1, "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
        "artifacts": {"uri": "s3://engines/"},
        "validation": {"accuracy": {"shots": 5, "maxDropVsBase": 0.01},
                       "throughput": {"minSpeedup": 1.5}},
        "serving": {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "provider": "hpa",
                                    "targetTokensPerSecondPerReplica": 1500}},
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """A copy of VALID with the dotted spec path set to value."""
    obj = copy.deepcopy(VALID)
    node = obj["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return obj


def _apply(cluster: LocalCluster, namespace: str, obj: dict[str, Any]):
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)


def _refused(cluster: LocalCluster, namespace: str, obj: dict[str, Any]) -> str:
    proc = _apply(cluster, namespace, obj)
    assert proc.returncode != 0, "the API server accepted an invalid MedusaModel"
    return proc.stderr


@pytest.fixture
def ns(medusa_crd: str, namespace: str) -> str:
    return namespace


def test_valid_spec_is_accepted_and_stored_as_written(local_cluster: LocalCluster, ns: str) -> None:
    proc = _apply(local_cluster, ns, VALID)
    assert proc.returncode == 0, proc.stderr
    stored = json.loads(local_cluster.kubectl("get", "medusamodel", "m", "-n", ns, "-o", "json").stdout)
    assert stored["spec"] == VALID["spec"], "the API server added or changed fields (GitOps drift)"
    assert local_cluster.kubectl("get", "mm", "m", "-n", ns).returncode == 0


def test_unknown_uri_scheme(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("baseModel.uri", "ftp://models/llama"))
    assert 'unsupported URI "ftp://models/llama": use one of the schemes hf://, s3://, gs://, pvc://' in err


def test_artifacts_on_the_hub_are_refused(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("artifacts.uri", "hf://org/engines"))
    assert "use one of the schemes s3://, gs://, pvc://" in err


def test_two_secrets_for_the_same_kind_of_store(local_cluster: LocalCluster, ns: str) -> None:
    obj = _with("medusa.credentialsSecretRef", {"name": "heads-s3"})  # medusa and artifacts are both on s3://
    obj["spec"]["artifacts"]["credentialsSecretRef"] = {"name": "engines-s3"}
    err = _refused(local_cluster, ns, obj)
    assert "medusa.uri and artifacts.uri are in the same kind of store but name different credentialsSecretRefs" in err
    obj["spec"]["artifacts"]["credentialsSecretRef"] = {"name": "heads-s3"}
    obj["spec"]["baseModel"] = {"uri": "hf://org/base", "credentialsSecretRef": {"name": "hf-token"}}
    proc = _apply(local_cluster, ns, obj)
    assert proc.returncode == 0, f"one Secret per kind of store is valid: {proc.stderr}"


def test_preset_and_choices_together(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("medusa.tree", {"preset": "mc_sim_7b_63", "choices": [[0]]}))
    assert "set either tree.preset or tree.choices, not both" in err


def test_tree_deeper_than_num_heads(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("medusa.tree", {"choices": [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]]}))
    assert "a tree.choices path is deeper than numHeads" in err


def test_empty_tree_path(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("medusa.tree", {"choices": [[0], []]}))
    assert "every tree path needs at least one index" in err


def test_negative_tree_index(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("medusa.tree", {"choices": [[0], [-1]]}))
    assert "tree indices are top-k ranks and must be 0 or greater" in err


def test_more_than_256_tree_nodes(local_cluster: LocalCluster, ns: str) -> None:
    choices = [[i] for i in range(16)] + [[i, j] for i in range(16) for j in range(16)]  # 272 nodes
    obj = _with("medusa.tree", {"choices": choices})
    obj["spec"]["medusa"].pop("numHeads")
    err = _refused(local_cluster, ns, obj)
    assert "tree.choices has more than 256 nodes: prune the tree or use a preset" in err


def test_min_replicas_above_max_replicas(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("serving.autoscaling", {"minReplicas": 5, "maxReplicas": 2}))
    assert "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" in err


def test_scale_to_zero_needs_keda(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("serving.autoscaling", {"minReplicas": 0, "maxReplicas": 2}))
    assert "minReplicas 0 (scale to zero) needs provider: keda" in err


def test_tensor_parallel_size_not_a_power_of_two(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("engine.tensorParallelSize", 3))
    assert "spec.engine.tensorParallelSize: Unsupported value: 3" in err
    assert '"1", "2", "4", "8"' in err


@pytest.mark.parametrize("field,value", [
    ("engine.dtype", "float8"),
    ("engine.quantization", "int4"),
    ("engine.backend", "vllm"),
    ("serving.autoscaling.provider", "vpa"),
], ids=["dtype", "quantization", "backend", "provider"])
def test_unknown_enum_values(local_cluster: LocalCluster, ns: str, field: str, value: str) -> None:
    err = _refused(local_cluster, ns, _with(field, value))
    assert f'spec.{field}: Unsupported value: "{value}"' in err
    assert "supported values" in err


def test_min_speedup_below_one(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("validation.throughput.minSpeedup", 0.9))
    assert "spec.validation.throughput.minSpeedup: Invalid value: 0.9: spec.validation.throughput.minSpeedup in body should be greater than or equal to 1" in err


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_max_drop_vs_base_outside_0_1(local_cluster: LocalCluster, ns: str, value: float) -> None:
    err = _refused(local_cluster, ns, _with("validation.accuracy.maxDropVsBase", value))
    bound = "greater than or equal to 0" if value < 0 else "less than or equal to 1"
    assert f"spec.validation.accuracy.maxDropVsBase in body should be {bound}" in err


@pytest.mark.parametrize("value", [-1, 11])
def test_shots_outside_0_10(local_cluster: LocalCluster, ns: str, value: int) -> None:
    err = _refused(local_cluster, ns, _with("validation.accuracy.shots", value))
    bound = "greater than or equal to 0" if value < 0 else "less than or equal to 10"
    assert f"spec.validation.accuracy.shots in body should be {bound}" in err


def test_fp8_on_the_reference_backend(local_cluster: LocalCluster, ns: str) -> None:
    obj = _with("engine.backend", "reference")
    obj["spec"]["engine"]["quantization"] = "fp8"
    assert "quantization fp8 needs backend tensorrt-llm" in _refused(local_cluster, ns, obj)


def test_fewer_gpus_than_tensor_parallel_ranks(local_cluster: LocalCluster, ns: str) -> None:
    obj = _with("engine.tensorParallelSize", 4)
    assert "engine.gpu.count must be at least engine.tensorParallelSize" in _refused(local_cluster, ns, obj)


def test_kubectl_explain_describes_the_tree(local_cluster: LocalCluster, medusa_crd: str) -> None:
    out = local_cluster.kubectl("explain", "medusamodel.spec.medusa.tree").stdout
    assert "The token tree verified in each decoding step." in out
    assert "preset" in out and "choices" in out
    out = local_cluster.kubectl("explain", "medusamodel.spec.medusa.tree.choices").stdout
    assert "prefix-closed" in out


def test_cpu_only_needs_the_reference_backend(local_cluster: LocalCluster, ns: str) -> None:
    obj = _with("engine.gpu", {"count": 0})
    assert "engine.gpu.count 0 (CPU only) needs backend: reference" in _refused(local_cluster, ns, obj)
    obj["spec"]["engine"]["backend"] = "reference"
    proc = _apply(local_cluster, ns, obj)
    assert proc.returncode == 0, proc.stderr


def test_unknown_dataset_uri_scheme(local_cluster: LocalCluster, ns: str) -> None:
    err = _refused(local_cluster, ns, _with("validation.accuracy.datasetUri", "http://evals.example/mmlu"))
    assert 'unsupported URI "http://evals.example/mmlu"' in err


# Issue 23: what TensorRT-LLM 1.1.0 can hold and how it serves tensor parallelism.

def test_tree_index_the_backend_cannot_pack(local_cluster: LocalCluster, ns: str) -> None:
    """TensorRT-LLM packs each index into 4 bits (speculativeChoicesUtils.cpp, computePrefix)."""
    err = _refused(local_cluster, ns, _with("medusa.tree", {"choices": [[0], [16], [0, 0]]}))
    assert "tree indices must be below 16: TensorRT-LLM packs each index of a path into 4 bits" in err
    proc = _apply(local_cluster, ns, _with("medusa.tree", {"choices": [[0], [15], [0, 0]]}))
    assert proc.returncode == 0, proc.stderr


def test_gpu_count_must_equal_tensor_parallel_size(local_cluster: LocalCluster, ns: str) -> None:
    obj = _with("engine.gpu", {"count": 2, "product": "NVIDIA-H100-80GB-HBM3"})
    err = _refused(local_cluster, ns, obj)
    assert "engine.gpu.count must equal engine.tensorParallelSize for backend tensorrt-llm" in err
    obj["spec"]["engine"]["tensorParallelSize"] = 2
    proc = _apply(local_cluster, ns, obj)
    assert proc.returncode == 0, proc.stderr
    defaults = _with("engine.gpu", {"count": 4})
    del defaults["spec"]["engine"]["tensorParallelSize"]
    assert "must equal engine.tensorParallelSize" in _refused(local_cluster, ns, defaults), "TP defaults to 1"


def test_tensor_parallel_needs_tensorrt_llm(local_cluster: LocalCluster, ns: str) -> None:
    obj = _with("engine.backend", "reference")
    obj["spec"]["engine"].update(tensorParallelSize=2, gpu={"count": 2})
    assert "tensorParallelSize above 1 needs backend tensorrt-llm" in _refused(local_cluster, ns, obj)


# -- bounds on fields that reach pods and node selection (issue 22, "Unbounded fields") ----------

@pytest.mark.parametrize(("path", "value", "message"), [
    ("engine.gpu.product", "x" * 64, "Too long: may not be more than 63"),
    ("engine.gpu.product", "NVIDIA H100 80GB", "engine.gpu.product is a node label value"),
    ("engine.gpu.product", "-NVIDIA-H100", "engine.gpu.product is a node label value"),
    ("serving.nodeSelector", {f"pool-{i}": "x" for i in range(33)}, "must have at most 32 items"),
    ("serving.nodeSelector", {"pool": "x" * 64}, "Too long: may not be more than 63"),
    ("serving.nodeSelector", {"pool": "a b"}, "serving.nodeSelector: each value is a label value"),
    ("serving.nodeSelector", {"bad key!": "x"}, "serving.nodeSelector: each key is a label key"),
    ("serving.nodeSelector", {"x" * 64: "y"}, "serving.nodeSelector: each key is a label key"),
    ("serving.resources", {"limits": {"memory": "lots"}}, "serving.resources.limits: each value is a quantity"),
    ("serving.resources", {"requests": {"cpu": "1" * 65}}, "may not be more than 64"),
    ("serving.resources", {"requests": {"cpu": "1e"}}, "serving.resources.requests: each value is a quantity"),
    ("serving.resources", {"requests": {"bad name!": "1"}}, "serving.resources.requests: each key is a resource"),
    ("serving.resources", {"limits": {f"example.com/r{i}": 1 for i in range(17)}}, "must have at most 16 items"),
    ("serving.tolerations", [{"key": "k", "operator": "Equal", "value": "v" * 64}], "may not be more than 63"),
    ("baseModel.uri", "pvc://models/../../etc", "contains a '..' segment"),
    ("artifacts.uri", "s3://engines/../other", "contains a '..' segment"),
    ("medusa.uri", "pvc://Bad_Claim/heads", "does not start with a PersistentVolumeClaim name"),
])
def test_unbounded_fields_are_bounded(local_cluster: LocalCluster, ns: str, path: str, value: Any,
                                      message: str) -> None:
    assert message in _refused(local_cluster, ns, _with(path, value))


@pytest.mark.parametrize(("path", "value"), [
    ("engine.gpu.product", "NVIDIA-H100-80GB-HBM3"),
    ("serving.nodeSelector", {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "pool": "llm_1.a"}),
    ("serving.resources", {"limits": {"memory": "64Gi", "cpu": 8, "nvidia.com/gpu": "1"},
                           "requests": {"cpu": "500m", "ephemeral-storage": "1.5Ti"}}),
    ("baseModel.uri", "pvc://model-store.v1/llama3/8b"),
    ("artifacts.uri", "s3://engines/a..b/"),
])
def test_bounded_fields_still_accept_real_values(local_cluster: LocalCluster, ns: str, path: str, value: Any) -> None:
    proc = _apply(local_cluster, ns, _with(path, value))
    assert proc.returncode == 0, proc.stderr
