"""The operator refuses a builder / serving image pair it knows cannot serve the engine, before
any Job runs; images it does not know are allowed and the built version is recorded.

Issue 23: an engine loads only in the TensorRT-LLM version that built it, and TensorRT-LLM 1.1
(Triton 25.12, 26.01, 26.02) is the last line that builds Medusa engines.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from medusa_common.contract import StepResult
from medusa_operator.api.v1alpha1 import MedusaModelSpec, MedusaModelStatus
from medusa_operator.config import DEFAULT_SERVING_IMAGE, OperatorConfig
from medusa_operator.controller.observed import JobObs, Observed
from medusa_operator.controller.plan import plan
from medusa_operator.images import image_refusal
from medusa_operator.render import names
from medusa_operator.render.context import ModelRef, RenderContext
from medusa_operator.revision import engine_cache_key, revision_of

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
OPERATOR_BUILDER = "registry.example/medusa-builder:0.1.0"
CONFIG = OperatorConfig(builder_image=OPERATOR_BUILDER)
TRITON = "nvcr.io/nvidia/tritonserver:{}-trtllm-python-py3"
SPEC = {
    "baseModel": {"uri": "s3://models/base/"},
    "medusa": {"uri": "s3://models/heads/", "tree": {"choices": [[0], [0, 0], [1]]}},
    "engine": {"backend": "tensorrt-llm", "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
    "artifacts": {"uri": "s3://engines/"},
    "validation": {"baseline": "none"},
}


def ctx(*, serving: str | None = None, builder: str | None = None, backend: str = "tensorrt-llm") -> RenderContext:
    spec = json.loads(json.dumps(SPEC))
    spec["engine"]["backend"] = backend
    if serving:
        spec["serving"] = {"image": serving}
    if builder:
        spec["engine"]["builderImage"] = builder
    return RenderContext(ModelRef("m", "ns", "uid-1"), MedusaModelSpec.model_validate(spec), CONFIG)


def test_the_default_serving_image_matches_the_builder() -> None:
    assert DEFAULT_SERVING_IMAGE == TRITON.format("25.12")
    assert image_refusal(ctx()) is None


@pytest.mark.parametrize("release", ["25.12", "26.01", "26.02"])
def test_every_triton_release_with_the_builders_tensorrt_llm_is_allowed(release: str) -> None:
    assert image_refusal(ctx(serving=TRITON.format(release))) is None


def test_an_older_serving_image_is_refused_with_both_versions() -> None:
    message = image_refusal(ctx(serving=TRITON.format("24.08")))
    assert message is not None
    assert "ships TensorRT-LLM 0.12" in message and "built with TensorRT-LLM 1.1.0" in message
    assert "loads only in the TensorRT-LLM version that built it" in message
    assert TRITON.format("25.12") in message


def test_a_builder_image_past_the_medusa_line_is_refused() -> None:
    message = image_refusal(ctx(builder=TRITON.format("26.03"), serving=TRITON.format("26.03")))
    assert message is not None and "TensorRT-LLM 1.2.0rc8 cannot build Medusa engines" in message
    assert "engine.backend: reference" in message


def test_unknown_images_are_allowed_unless_the_serving_side_is_past_medusa() -> None:
    custom = "registry.example/team/medusa-builder:custom"
    assert image_refusal(ctx(builder=custom, serving="registry.example/team/triton:custom")) is None
    assert image_refusal(ctx(builder=custom)) is None
    assert "ships TensorRT-LLM 1.2.1" in image_refusal(ctx(builder=custom, serving=TRITON.format("26.04")))


def test_the_reference_backend_does_not_depend_on_tensorrt_llm() -> None:
    assert image_refusal(ctx(serving=TRITON.format("24.08"), backend="reference")) is None


def test_a_known_mismatch_fails_the_revision_before_any_job() -> None:
    c = ctx(serving=TRITON.format("24.08"))
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW))
    assert [m for m in p.apply if m["kind"] == "Job"] == []
    built = next(x for x in p.status.conditions if x.type == "EngineBuilt")
    assert (built.status, built.reason) == ("False", "IncompatibleImages")
    assert "0.12" in built.message and "1.1.0" in built.message
    assert p.status.phase == "Failed" and p.status.revisions.failed == revision_of(c.spec, c.builder_image,
                                                                                    c.serving_image)
    again = plan(c, 1, p.status, Observed(now=NOW))
    assert [m for m in again.apply if m["kind"] == "Job"] == [], "a refused revision stays refused"


def build_result(c: RenderContext, version: str) -> Observed:
    r = revision_of(c.spec, c.builder_image, c.serving_image)
    key = engine_cache_key(c.spec, c.builder_image)
    lookup, build = names.job_name("m", r, "lookup"), names.job_name("m", r, "build")
    return Observed(now=NOW, jobs={
        lookup: JobObs(lookup, r, "succeeded", result=StepResult(step="build", ok=True,
                                                                 result={"cacheKey": key, "cacheHit": False})),
        build: JobObs(build, r, "succeeded", result=StepResult(step="build", ok=True, result={
            "cacheKey": key, "cacheHit": False, "engineUri": f"s3://engines/engines/{key}", "numHeads": 2,
            "tree": [[0], [0, 0], [1]], "tensorrtLlmVersion": version}))})


def test_an_unknown_builder_image_records_the_version_it_built_with() -> None:
    c = ctx(builder="registry.example/team/medusa-builder:custom", serving="registry.example/team/triton:custom")
    p = plan(c, 1, MedusaModelStatus(), build_result(c, "1.1.0rc5"))
    assert p.status.engine.tensorrt_llm_version == "1.1.0rc5"
    assert next(x for x in p.status.conditions if x.type == "EngineBuilt").status == "True"
    assert any(m["kind"] == "Job" and m["metadata"]["labels"][names.LABEL_STEP] == "package" for m in p.apply)


def test_an_engine_built_with_another_version_than_the_serving_image_is_not_deployed() -> None:
    c = ctx(builder="registry.example/team/medusa-builder:custom", serving=TRITON.format("25.12"))
    p = plan(c, 1, MedusaModelStatus(), build_result(c, "1.1.0rc5"))
    built = next(x for x in p.status.conditions if x.type == "EngineBuilt")
    assert (built.status, built.reason) == ("False", "IncompatibleImages")
    assert "was built with TensorRT-LLM 1.1.0rc5" in built.message
    assert p.status.engine.tensorrt_llm_version == "1.1.0rc5"
    assert not any(m["kind"] in ("Job", "Deployment") for m in p.apply)
