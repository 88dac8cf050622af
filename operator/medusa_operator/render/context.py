"""What every render function needs to know about the model it renders for."""

from __future__ import annotations

from dataclasses import dataclass

from ..api.v1alpha1 import GROUP, KIND, VERSION, MedusaModelSpec
from ..config import OperatorConfig
from . import names

# The device plugin's resource, the GPU Operator's product label, and the taint GPU nodes carry:
# every pod that asks for GPUs tolerates it.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class ModelRef:
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class RenderContext:
    model: ModelRef
    spec: MedusaModelSpec
    config: OperatorConfig

    @property
    def builder_image(self) -> str:
        if self.spec.engine.builder_image:
            return self.spec.engine.builder_image
        if self.spec.engine.backend == "reference":
            return self.config.reference_builder_image
        return self.config.builder_image

    @property
    def serving_image(self) -> str:
        if self.spec.serving.image:
            return self.spec.serving.image
        if self.spec.engine.backend == "reference":
            return self.config.reference_serving_image
        return self.config.serving_image

    def metadata(self, name: str, labels: dict[str, str] | None = None,
                 annotations: dict[str, str] | None = None) -> dict:
        meta = {
            "name": name,
            "namespace": self.model.namespace,
            "labels": {**names.model_labels(self.model.name), **self.config.extra_labels, **(labels or {})},
            "ownerReferences": [owner_reference(self.model)],
        }
        if annotations:
            meta["annotations"] = annotations
        return meta


def owner_reference(model: ModelRef) -> dict:
    """Children are owned by their MedusaModel: deleting it lets the garbage collector remove them."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": model.name,
        "uid": model.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def artifact_path(ctx: RenderContext, *parts: str) -> str:
    return "/".join([ctx.spec.artifacts.uri.rstrip("/"), *parts])


def engine_uri(ctx: RenderContext, cache_key: str) -> str:
    return artifact_path(ctx, "engines", cache_key)


def repository_uri(ctx: RenderContext, revision: str, variant: str) -> str:
    """Per namespace and model: two models with the same inputs (the same revision) must not
    overwrite a repository the other's pods may be fetching."""
    return artifact_path(ctx, "repositories", ctx.model.namespace, ctx.model.name, revision, variant)


def report_uri(ctx: RenderContext, revision: str) -> str:
    return artifact_path(ctx, "reports", ctx.model.namespace, ctx.model.name, revision, "validation.json")
