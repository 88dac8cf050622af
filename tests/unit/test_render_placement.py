"""Which image a model's pods run and where the operator's Jobs are placed."""

from __future__ import annotations

import pytest

from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.config import OperatorConfig
from medusa_operator.render import jobs, serving
from medusa_operator.render.context import ModelRef, RenderContext

CONFIG = OperatorConfig(builder_image="reg.example/builder:1", serving_image="reg.example/triton:1",
                        reference_builder_image="reg.example/reference-builder:1",
                        reference_serving_image="reg.example/reference-serving:1")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
POOL_TOLERATION = {"key": "pool", "operator": "Equal", "value": "build", "effect": "NoSchedule"}


def context(backend: str, config: OperatorConfig = CONFIG, gpus: int = 1, **engine) -> RenderContext:
    spec = MedusaModelSpec.model_validate({
        "baseModel": {"uri": "s3://models/base/"}, "medusa": {"uri": "s3://models/heads/"},
        "engine": {"backend": backend, "gpu": {"count": gpus, "product": "NVIDIA-H100-80GB-HBM3"}, **engine},
        "artifacts": {"uri": "s3://engines/"}})
    return RenderContext(ModelRef("m", "ns", "uid"), spec, config)


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("backend, builder, triton", [
    ("reference", "reg.example/reference-builder:1", "reg.example/reference-serving:1"),
    ("tensorrt-llm", "reg.example/builder:1", "reg.example/triton:1"),
])
def test_backend_picks_the_operator_default_images(backend: str, builder: str, triton: str) -> None:
    ctx = context(backend)
    assert pod_spec(jobs.package_job(ctx, "rev", "s3://engines/e"))["containers"][0]["image"] == builder
    deployment = pod_spec(serving.deployment(ctx, "rev", "s3://engines/r"))
    assert deployment["initContainers"][0]["image"] == builder
    assert deployment["containers"][0]["image"] == triton


def test_a_models_own_builder_image_wins_over_the_reference_default() -> None:
    ctx = context("reference", builderImage="reg.example/custom:2")
    assert pod_spec(jobs.package_job(ctx, "rev", "s3://engines/e"))["containers"][0]["image"] == "reg.example/custom:2"


def test_cpu_jobs_follow_the_operator_job_placement_only() -> None:
    config = OperatorConfig(job_node_selector={"pool": "build"}, job_tolerations=(POOL_TOLERATION,))
    spec = pod_spec(jobs.package_job(context("reference", config), "rev", "s3://engines/e"))
    assert spec["nodeSelector"] == {"pool": "build"}
    assert spec["tolerations"] == [POOL_TOLERATION]


def test_gpu_builds_add_the_models_gpu_scheduling_to_the_job_placement() -> None:
    config = OperatorConfig(job_node_selector={"pool": "build"}, job_tolerations=(POOL_TOLERATION,))
    spec = pod_spec(jobs.build_job(context("tensorrt-llm", config), "rev", "key"))
    assert spec["nodeSelector"] == {"pool": "build", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert spec["tolerations"] == [POOL_TOLERATION, GPU_TOLERATION]


def test_without_job_placement_cpu_jobs_carry_no_scheduling() -> None:
    spec = pod_spec(jobs.package_job(context("reference"), "rev", "s3://engines/e"))
    assert "nodeSelector" not in spec and "tolerations" not in spec


def test_scale_down_waits_for_the_models_stabilization_window() -> None:
    from medusa_operator.render import autoscaling

    def scale_down(window: int | None) -> dict:
        auto = {"maxReplicas": 2, "targetTokensPerSecondPerReplica": 10}
        if window is not None:
            auto["scaleDownStabilizationSeconds"] = window
        spec = MedusaModelSpec.model_validate({
            "baseModel": {"uri": "s3://models/base/"}, "medusa": {"uri": "s3://models/heads/"},
            "engine": {"backend": "reference", "gpu": {"count": 0}}, "artifacts": {"uri": "s3://engines/"},
            "serving": {"autoscaling": auto}})
        ctx = RenderContext(ModelRef("m", "ns", "uid"), spec, CONFIG)
        return autoscaling.horizontal_pod_autoscaler(ctx, "rev")["spec"]["behavior"]["scaleDown"]

    assert scale_down(None)["stabilizationWindowSeconds"] == 300
    assert scale_down(None)["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    assert scale_down(30)["stabilizationWindowSeconds"] == 30
    assert scale_down(30)["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 30}]
    assert scale_down(0)["policies"][0]["periodSeconds"] == 15
