"""Compatibility lock: the operator's engine cache keys and revision names never change.

An engine in a user's artifact store is found again only under the key it was stored with, and
a served revision keeps serving only while its name stays what it was. The expected values below
are literal: they were computed by the operator before the engine key moved to one shared home
(issue 24, "the engine cache key ... lives twice") and pasted here. Never regenerate them. A
change that makes this test fail orphans every engine already built; if a key must change, that
is a migration, decided and documented on its own.
"""

from __future__ import annotations

import pytest

from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.revision import base_engine_cache_key, engine_cache_key, revision_of

BUILDER_IMAGE = "ghcr.io/example/medusa-builder:0.4.0"
SERVING_IMAGE = "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"

SPECS = {
    "reference_choices_gpu_product": {
        "baseModel": {"uri": "s3://models/base/"},
        "medusa": {"uri": "s3://models/heads/", "tree": {"choices": [[0], [0, 0], [1]]}},
        "engine": {"backend": "reference", "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
        "artifacts": {"uri": "s3://engines/"}, "validation": {"baseline": "none"}},
    "tensorrt_llm_no_tree_defaults": {
        "baseModel": {"uri": "hf://meta-llama/Meta-Llama-3-8B-Instruct", "revision": "5f0b02c"},
        "medusa": {"uri": "s3://heads/llama3-8b-medusa/", "revision": "v2"},
        "artifacts": {"uri": "s3://engines/"}},
    "tensorrt_llm_empty_tree_declared_counts_fp8_tp2": {
        "baseModel": {"uri": "s3://models/base/", "revision": "etag-1"},
        "medusa": {"uri": "s3://models/heads/", "numHeads": 4, "numLayers": 1, "tree": {}},
        "engine": {"backend": "tensorrt-llm", "dtype": "bfloat16", "quantization": "fp8", "tensorParallelSize": 2,
                   "maxBatchSize": 16, "maxInputLen": 2048, "maxOutputLen": 512,
                   "gpu": {"count": 2, "product": "NVIDIA-H100-80GB-HBM3"}},
        "artifacts": {"uri": "gs://engines/"}},
    "tensorrt_llm_preset_num_heads_only": {
        "baseModel": {"uri": "pvc://models/base"},
        "medusa": {"uri": "pvc://models/heads", "numHeads": 3, "tree": {"preset": "medusa3_32"}},
        "engine": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}},
        "artifacts": {"uri": "pvc://engines/"}},
    "reference_auto_preset_num_layers_only_cpu": {
        "baseModel": {"uri": "s3://models/base/"},
        "medusa": {"uri": "s3://models/heads/", "numLayers": 2, "tree": {"preset": "auto"}},
        "engine": {"backend": "reference", "gpu": {"count": 0}},
        "artifacts": {"uri": "s3://engines/"}},
    "tensorrt_llm_deep_choices_declared_counts": {
        "baseModel": {"uri": "s3://models/base/"},
        "medusa": {"uri": "s3://models/heads/", "numHeads": 5, "numLayers": 1,
                   "tree": {"choices": [[1], [0], [0, 0], [0, 0, 0, 0, 0]]}},
        "engine": {"quantization": "fp8"},
        "artifacts": {"uri": "s3://engines/"}},
}

# spec name -> (engine cache key, baseline engine cache key, revision name), computed once and frozen.
EXPECTED = {
    "reference_choices_gpu_product": ("053603db0363c221fa4b18e7", "9a45a2e2e566a363ba170c64", "f07c4a40a5"),
    "tensorrt_llm_no_tree_defaults": ("221940db5a528b427dcaedd1", "fe3c137a8018043b1b5ac972", "3ca4955ad8"),
    "tensorrt_llm_empty_tree_declared_counts_fp8_tp2": ("f72da56e506469095d1be55a", "b826b85358cf746e8c9b5d44",
                                                        "a92dae8da4"),
    "tensorrt_llm_preset_num_heads_only": ("fd2d058018cfb5403b05c71f", "2aa683d860e301181f4c7654", "4508e9e6d1"),
    "reference_auto_preset_num_layers_only_cpu": ("a4f8365c2510ff5d1dc25892", "87148664c6be45c765f16cfe",
                                                  "db82874e62"),
    "tensorrt_llm_deep_choices_declared_counts": ("c37dc581ec9faa61e02f4aea", "6e81c063567fa136ad5b15fc",
                                                  "1661cb8b36"),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_operator_engine_keys_and_revisions_stay_what_they_were(name: str) -> None:
    spec = MedusaModelSpec.model_validate(SPECS[name])
    found = (engine_cache_key(spec, BUILDER_IMAGE), base_engine_cache_key(spec, BUILDER_IMAGE),
             revision_of(spec, BUILDER_IMAGE, SERVING_IMAGE))
    assert found == EXPECTED[name]


def test_the_locked_specs_cover_the_key_s_variations() -> None:
    # The lock is only as wide as its specs: every way the key's payload varies is in one of them.
    specs = [MedusaModelSpec.model_validate(body) for body in SPECS.values()]
    trees = {("choices" if s.medusa.tree and s.medusa.tree.choices else
              (s.medusa.tree.preset if s.medusa.tree and s.medusa.tree.preset else "unset")) for s in specs}
    assert {"choices", "auto", "medusa3_32", "unset"} <= trees
    assert {s.engine.backend for s in specs} == {"tensorrt-llm", "reference"}
    assert {s.engine.quantization for s in specs} == {"none", "fp8"}
    declared = {(s.medusa.num_heads is not None, s.medusa.num_layers is not None) for s in specs}
    assert declared == {(False, False), (True, True), (True, False), (False, True)}
    assert {s.engine.gpu.product is None for s in specs} == {True, False}
    assert len({key for keys in EXPECTED.values() for key in keys}) == 3 * len(EXPECTED)
