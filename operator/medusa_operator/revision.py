"""Content keys: which spec changes make a new engine, and which a new revision.

The engine cache key is ``medusa_common.engine_key``'s, over the spec's sources, declared counts,
tree, engine settings and GPU product, with the builder image as the toolchain (it pins the
TensorRT-LLM version). The revision adds what changes where it is kept, how it is served or
judged: the artifact store, the credential references, the serving image, the GPU count and the
validation gates. Replicas, autoscaling, resources, node selection and tolerations are in
neither: they apply in place.
"""

from __future__ import annotations

from typing import Any

from medusa_common.contract import content_key
from medusa_common.engine_key import EngineInputs, tree_choices
from medusa_common.tree import AUTO_PRESET

from .api.v1alpha1 import MedusaModelSpec

REVISION_LENGTH = 10
# ``spec.serving`` fields that change a served revision in place. Its other field (the image)
# is part of the revision; a served revision renders everything else from what was validated.
IN_PLACE_SERVING_FIELDS = ("autoscaling", "resources", "node_selector", "tolerations")


def effective_tree(spec: MedusaModelSpec) -> dict[str, Any]:
    """The tree the build is asked for: the spec's choices or preset, else the calibrated one."""
    tree = spec.medusa.tree
    if tree is not None and tree.choices is not None:
        return {"choices": tree.choices}
    return {"preset": (tree.preset if tree is not None and tree.preset else AUTO_PRESET)}


def engine_inputs(spec: MedusaModelSpec, builder_image: str) -> EngineInputs:
    """What the spec's engine is keyed by; the builder image names the toolchain."""
    medusa, engine, tree = spec.medusa, spec.engine, effective_tree(spec)
    return EngineInputs(
        base_uri=spec.base_model.uri, base_revision=spec.base_model.revision,
        heads_uri=medusa.uri, heads_revision=medusa.revision,
        num_heads=medusa.num_heads, num_layers=medusa.num_layers,
        tree_choices=tree_choices(tree["choices"]) if "choices" in tree else None, tree_preset=tree.get("preset"),
        backend=engine.backend, dtype=engine.dtype, quantization=engine.quantization,
        tensor_parallel_size=engine.tensor_parallel_size, max_batch_size=engine.max_batch_size,
        max_input_len=engine.max_input_len, max_output_len=engine.max_output_len,
        gpu_product=engine.gpu.product, toolchain=builder_image,
    )


def engine_cache_key(spec: MedusaModelSpec, builder_image: str) -> str:
    return engine_inputs(spec, builder_image).key()


def revision_of(spec: MedusaModelSpec, builder_image: str, serving_image: str) -> str:
    refs = (("baseModel", spec.base_model.credentials_secret_ref), ("medusa", spec.medusa.credentials_secret_ref),
            ("artifacts", spec.artifacts.credentials_secret_ref))
    payload = {
        "engine": engine_cache_key(spec, builder_image),
        "artifacts": spec.artifacts.uri,
        "credentials": {role: ref.name for role, ref in refs if ref is not None},
        "servingImage": serving_image,
        "validation": spec.validation.model_dump(mode="json", by_alias=True),
        "gpuCount": spec.engine.gpu.count,
    }
    return content_key(payload, REVISION_LENGTH)


def base_engine_cache_key(spec: MedusaModelSpec, builder_image: str) -> str:
    """Key of the base model's own engine (the baseline): the engine inputs without heads or tree."""
    return engine_inputs(spec, builder_image).baseline_key()
