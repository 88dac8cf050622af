"""Golden tests for the pure render functions: spec in, manifests out.

The expected manifests live in tests/unit/golden/. After an intended change, regenerate them with
`UPDATE_GOLDEN=1 make unit` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.config import OperatorConfig
from medusa_operator.render import autoscaling, jobs, serving
from medusa_operator.render.context import ModelRef, RenderContext, repository_uri
from medusa_operator.revision import base_engine_cache_key, engine_cache_key, revision_of

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = OperatorConfig(builder_image="registry.example/medusa-builder:1.0", serving_image="registry.example/triton:1.0",
                        reference_builder_image="registry.example/medusa-reference-builder:1.0",
                        reference_serving_image="registry.example/medusa-reference-serving:1.0")


def _context(example: str) -> RenderContext:
    doc = yaml.safe_load((EXAMPLES / example).read_text())
    spec = MedusaModelSpec.model_validate(doc["spec"])
    ref = ModelRef(doc["metadata"]["name"], doc["metadata"].get("namespace", "models"), "0000-uid")
    return RenderContext(ref, spec, CONFIG)


def _render_all(ctx: RenderContext) -> list[dict[str, Any]]:
    rev = revision_of(ctx.spec, ctx.builder_image, ctx.serving_image)
    key = engine_cache_key(ctx.spec, ctx.builder_image)
    repo = repository_uri(ctx, rev, "medusa")
    out = [
        jobs.build_job(ctx, rev, key),
        jobs.base_build_job(ctx, rev, base_engine_cache_key(ctx.spec, ctx.builder_image)),
        jobs.package_job(ctx, rev, f"s3://engines/engines/{key}"),
        jobs.package_job(ctx, rev, "s3://engines/engines/base", "base"),
        jobs.validate_job(ctx, rev, baseline=True),
        serving.deployment(ctx, rev, repo, replicas=None),
        serving.revision_service(ctx, rev),
        serving.stable_service(ctx, rev),
        autoscaling.horizontal_pod_autoscaler(ctx, rev),
        autoscaling.scaled_object(ctx, rev),
    ]
    return out


@pytest.mark.parametrize("example", ["llama3-8b-tensorrt-llm.yaml", "smollm2-reference.yaml"])
def test_manifests_match_golden_files(example: str) -> None:
    rendered = yaml.safe_dump_all(_render_all(_context(example)), sort_keys=True)
    golden = GOLDEN / example
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert golden.exists(), f"{golden} is missing: run with UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(), f"render output changed for {example}: review, then UPDATE_GOLDEN=1"


def test_rendering_is_deterministic() -> None:
    ctx = _context("llama3-8b-tensorrt-llm.yaml")
    assert _render_all(ctx) == _render_all(ctx)


def test_every_child_is_owned_by_its_model() -> None:
    for manifest in _render_all(_context("smollm2-reference.yaml")):
        owner = manifest["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "MedusaModel" and owner["uid"] == "0000-uid" and owner["controller"] is True


def test_gpu_requests_and_node_selection_follow_engine_gpu() -> None:
    ctx = _context("llama3-8b-tensorrt-llm.yaml")
    rev = revision_of(ctx.spec, ctx.builder_image, ctx.serving_image)
    build = jobs.build_job(ctx, rev, "k")["spec"]["template"]["spec"]
    assert build["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == str(ctx.spec.engine.gpu.count)
    assert build["nodeSelector"] == {"nvidia.com/gpu.product": ctx.spec.engine.gpu.product}
    package = jobs.package_job(ctx, rev, "s3://e/k")["spec"]["template"]["spec"]
    assert "limits" not in package["containers"][0]["resources"] and "nodeSelector" not in package
    pod = serving.deployment(ctx, rev, "s3://r")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == str(ctx.spec.engine.gpu.count)


def test_credentials_secrets_are_mounted_not_put_in_arguments() -> None:
    ctx = _context("llama3-8b-tensorrt-llm.yaml")
    job = jobs.build_job(ctx, "r" * 10, "k")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    sources = [s["secret"]["name"] for s in volumes["credentials"]["projected"]["sources"]]
    assert sources == jobs.secret_names(ctx) and sources
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--credentials-dir") + 1] == jobs.CREDENTIALS_DIR


@pytest.mark.parametrize("example", ["llama3-8b-tensorrt-llm.yaml", "smollm2-reference.yaml", "minimal.yaml"])
def test_every_rendered_builder_command_parses(example: str) -> None:
    """The operator's Jobs and init containers call medusa-builder with arguments it accepts."""
    from medusa_builder.cli import build_parser

    parser = build_parser()
    containers = []
    for manifest in _render_all(_context(example)):
        pod = manifest["spec"].get("template", {}).get("spec", {})
        containers += pod.get("initContainers", []) + pod.get("containers", [])
    builder_calls = [c for c in containers if c.get("command") == ["medusa-builder"]]
    assert len(builder_calls) == 6
    for container in builder_calls:
        args = parser.parse_args(container["args"])
        assert callable(args.func)


def test_cpu_only_reference_model_requests_no_gpus() -> None:
    ctx = _context("smollm2-reference.yaml")
    cpu = RenderContext(ctx.model, ctx.spec.model_copy(update={"engine": ctx.spec.engine.model_copy(
        update={"gpu": ctx.spec.engine.gpu.model_copy(update={"count": 0})})}), CONFIG)
    rev = revision_of(cpu.spec, cpu.builder_image, cpu.serving_image)
    for manifest in (jobs.build_job(cpu, rev, "k"), serving.deployment(cpu, rev, "s3://r")):
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
