"""Tensor-parallel TensorRT-LLM serving: one rank per GPU in the backend's leader mode.

Issue 23: with tensorParallelSize > 1 a plain `tritonserver` cannot start the engine; the pod must
run one Triton process per rank. The TP 2 Deployment is golden-tested (regenerate with
UPDATE_GOLDEN=1 and review); TP 4 and 8 are checked for the same structure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.config import OperatorConfig
from medusa_operator.render import serving
from medusa_operator.render.context import ModelRef, RenderContext
from medusa_operator.revision import revision_of

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = OperatorConfig(builder_image="registry.example/medusa-builder:1.0", serving_image="registry.example/triton:1.0")


def context(ranks: int, backend: str = "tensorrt-llm") -> RenderContext:
    doc = yaml.safe_load((EXAMPLES / "llama3-8b-tensorrt-llm.yaml").read_text())
    doc["spec"]["engine"].update(tensorParallelSize=ranks, backend=backend)
    doc["spec"]["engine"]["gpu"]["count"] = ranks
    spec = MedusaModelSpec.model_validate(doc["spec"])
    return RenderContext(ModelRef(doc["metadata"]["name"], doc["metadata"]["namespace"], "0000-uid"), spec, CONFIG)


def triton(ctx: RenderContext) -> dict:
    rev = revision_of(ctx.spec, ctx.builder_image, ctx.serving_image)
    pod = serving.deployment(ctx, rev, "s3://engines/llama3-8b/repositories/r/medusa")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "triton")


def app_contexts(args: list[str]) -> list[list[str]]:
    """mpirun's app contexts (separated by ':'), without the global options before the first."""
    contexts, current = [], []
    for arg in args[args.index("-n"):]:
        if arg == ":":
            contexts.append(current)
            current = []
        else:
            current.append(arg)
    return contexts + [current]


def test_tp2_deployment_matches_golden_file() -> None:
    ctx = context(2)
    rev = revision_of(ctx.spec, ctx.builder_image, ctx.serving_image)
    rendered = yaml.safe_dump(serving.deployment(ctx, rev, "s3://engines/llama3-8b/repositories/r/medusa"),
                              sort_keys=True)
    golden = GOLDEN / "llama3-8b-tensorrt-llm-tp2-deployment.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"{golden} is missing: run with UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(), "render output changed: review, then UPDATE_GOLDEN=1"


@pytest.mark.parametrize("ranks", [2, 4, 8])
def test_one_triton_process_per_rank_in_leader_mode(ranks: int) -> None:
    container = triton(context(ranks))
    assert container["command"] == ["mpirun"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(ranks), "one GPU per rank"
    contexts = app_contexts(container["args"])
    assert len(contexts) == ranks
    prefixes = set()
    for rank, argv in enumerate(contexts):
        assert argv[:3] == ["-n", "1", "tritonserver"], "one process per app context, so rank = context order"
        assert f"--model-repository={serving.MODEL_DIR}" in argv and f"--http-port={serving.HTTP_PORT}" in argv
        explicit = "--model-control-mode=explicit" in argv
        assert explicit == (rank > 0), "rank 0 leads and serves the ensemble; the others load only the engine"
        if rank:
            assert f"--load-model={serving.TRTLLM_MODEL}" in argv
        prefixes |= {a for a in argv if a.startswith("--backend-config=python,shm-region-prefix-name=")}
    assert len(prefixes) == ranks, "ranks share /dev/shm: each needs its own Python-backend prefix"
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v2/health/ready", "port": "http"}, "only rank 0 opens the ports the probes use"


def test_a_single_rank_and_the_reference_backend_run_plain_tritonserver() -> None:
    assert triton(context(1))["command"] == ["tritonserver"]
    reference = context(1, backend="reference")
    assert triton(reference)["command"] == ["tritonserver"]
    assert not any(a == ":" for a in triton(reference)["args"])
