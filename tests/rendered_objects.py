"""Every object the operator renders, for every backend and option: the input of the tests that
check all of them at once (pod security, credentials, admission by a real API server).

Each case is one MedusaModel spec; ``render_case`` returns what the operator would apply for it
over a revision's life: lookup, build, package and validation Jobs (and the baseline's), the
candidate and baseline Deployments, the serving Deployment scaled to zero (rollout.makeRoom,
keepPreviousRevision), the Services and the autoscaler.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.config import OperatorConfig
from medusa_operator.render import autoscaling, jobs, serving
from medusa_operator.render.context import ModelRef, RenderContext, engine_uri, repository_uri
from medusa_operator.revision import base_engine_cache_key, engine_cache_key, revision_of

CONFIG = OperatorConfig(builder_image="registry.example/medusa-builder:1.0",
                        serving_image="registry.example/triton:1.0")
GPU = "NVIDIA-H100-80GB-HBM3"

S3_STORES = {
    "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "credentialsSecretRef": {"name": "hf-token"}},
    "medusa": {"uri": "s3://heads/smollm2/", "credentialsSecretRef": {"name": "aws"}},
    "artifacts": {"uri": "s3://engines/", "credentialsSecretRef": {"name": "aws"}},
}
PVC_STORES = {
    "baseModel": {"uri": "pvc://models/smollm2"},
    "medusa": {"uri": "pvc://heads/smollm2"},
    "artifacts": {"uri": "pvc://engines/cache"},
}


@dataclass(frozen=True)
class Case:
    name: str
    spec: dict[str, Any]


def _spec(stores: dict[str, Any], backend: str, gpus: int, baseline: str, autoscaling_provider: str | None,
          make_room: bool) -> dict[str, Any]:
    spec = copy.deepcopy(stores)
    spec["engine"] = {"backend": backend, "gpu": {"count": gpus, **({"product": GPU} if gpus else {})}}
    spec["validation"] = {"baseline": baseline,
                          "accuracy": {"datasetUri": "s3://evals/mmlu/", "minScore": 0.5},
                          "throughput": {"minSpeedup": 1.2} if baseline == "base-engine" else {}}
    auto: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 3}
    if autoscaling_provider:
        auto.update(provider=autoscaling_provider, targetTokensPerSecondPerReplica=500)
    spec["serving"] = {"autoscaling": auto, "nodeSelector": {"pool": "llm"},
                       "resources": {"requests": {"cpu": "2", "memory": "16Gi"}}}
    spec["rollout"] = {"makeRoom": make_room, "keepPreviousRevision": make_room}
    return spec


def cases() -> list[Case]:
    out = []
    for store_name, stores in (("s3", S3_STORES), ("pvc", PVC_STORES)):
        for backend, gpus in (("tensorrt-llm", 1), ("reference", 1), ("reference", 0)):
            for baseline in ("base-engine", "none"):
                for provider in ("hpa", "keda", None):
                    make_room = provider == "hpa"
                    name = f"{store_name}-{backend}-{gpus}gpu-{baseline}-{provider or 'fixed'}"
                    out.append(Case(name, _spec(stores, backend, gpus, baseline, provider, make_room)))
    return out


def context(case: Case, namespace: str = "models") -> RenderContext:
    spec = MedusaModelSpec.model_validate(case.spec)
    return RenderContext(ModelRef("smol", namespace, "0000-uid"), spec, CONFIG)


def render_case(case: Case, namespace: str = "models") -> list[dict[str, Any]]:
    ctx = context(case, namespace)
    rev = revision_of(ctx.spec, ctx.builder_image, ctx.serving_image)
    key = engine_cache_key(ctx.spec, ctx.builder_image)
    base_key = base_engine_cache_key(ctx.spec, ctx.builder_image)
    baseline = ctx.spec.validation.baseline == "base-engine"
    out = [
        jobs.lookup_job(ctx, rev, key),
        jobs.build_job(ctx, rev, key),
        jobs.package_job(ctx, rev, engine_uri(ctx, key)),
        jobs.validate_job(ctx, rev, baseline=baseline),
        serving.deployment(ctx, rev, repository_uri(ctx, rev, "medusa")),
        serving.revision_service(ctx, rev),
        serving.stable_service(ctx, rev),
    ]
    if baseline:
        out += [
            jobs.base_lookup_job(ctx, rev, base_key),
            jobs.base_build_job(ctx, rev, base_key),
            jobs.package_job(ctx, rev, engine_uri(ctx, base_key), "base"),
            serving.deployment(ctx, rev, repository_uri(ctx, rev, "base"), variant="base"),
            serving.revision_service(ctx, rev, "base"),
        ]
    if ctx.spec.rollout.make_room or ctx.spec.rollout.keep_previous_revision:
        scaled_down = serving.deployment(ctx, "0123456789", repository_uri(ctx, "0123456789", "medusa"),
                                         image="registry.example/triton:0.9", replicas=0)
        out.append(scaled_down)
    auto = autoscaling.autoscaler(ctx, rev)
    if auto is not None:
        out.append(auto)
    return out


def pod_specs(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) for every Job and Deployment among ``manifests``."""
    return [(m["metadata"]["name"], m["spec"]["template"]["spec"]) for m in manifests
            if m["kind"] in ("Job", "Deployment")]
