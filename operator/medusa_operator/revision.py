"""Content keys: which spec changes make a new engine, and which a new revision.

The engine cache key covers everything that changes the engine's bytes or how its build checks
the inputs: sources and their revisions, the declared head and layer counts, the tree, engine
settings, backend, the builder image (which pins the TensorRT-LLM version) and the GPU product
(engines are not portable across GPUs). The revision adds what changes where it is kept, how it
is served or judged: the artifact store, the credential references, the serving image, the GPU
count and the validation gates. Replicas, autoscaling, resources, node selection and tolerations
are in neither: they apply in place.
"""

from __future__ import annotations

from typing import Any

from medusa_common.contract import ENGINE_KEY_LENGTH, content_key
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


def _heads(spec: MedusaModelSpec) -> list[Any]:
    heads: list[Any] = [spec.medusa.uri, spec.medusa.revision]
    # Declared counts only when given, so the key of a spec that leaves them to the checkpoint
    # stays what it always was (and its engines in the store are found again).
    declared = {k: v for k, v in (("numHeads", spec.medusa.num_heads), ("numLayers", spec.medusa.num_layers)) if v}
    return heads + [declared] if declared else heads


def engine_inputs(spec: MedusaModelSpec, builder_image: str) -> dict[str, Any]:
    engine = spec.engine
    return {
        "base": [spec.base_model.uri, spec.base_model.revision],
        "heads": _heads(spec),
        "tree": effective_tree(spec),
        "backend": engine.backend,
        "dtype": engine.dtype,
        "quantization": engine.quantization,
        "tensorParallelSize": engine.tensor_parallel_size,
        "limits": [engine.max_batch_size, engine.max_input_len, engine.max_output_len],
        "gpuProduct": engine.gpu.product,
        "builderImage": builder_image,
    }


def engine_cache_key(spec: MedusaModelSpec, builder_image: str) -> str:
    return content_key(engine_inputs(spec, builder_image), ENGINE_KEY_LENGTH)


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
    inputs = engine_inputs(spec, builder_image)
    del inputs["heads"], inputs["tree"]
    return content_key({"baseline": inputs}, ENGINE_KEY_LENGTH)
