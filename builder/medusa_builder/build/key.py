"""The engine cache key a build computes when it is given none.

The operator always passes its own key (``--cache-key``, from the MedusaModel spec); a build run
by hand keys its engine here, from its flags, with ``medusa_common.engine_key.EngineInputs``: the
facts and the hash the operator uses (that module says what each side fills in). This module is
the builder's only maker of engine inputs.
"""

from __future__ import annotations

import re
from typing import Sequence

from medusa_common.contract import UserError
from medusa_common.engine_key import EngineInputs, tree_choices
from medusa_common.toolchain import TRTLLM_VERSION

from .host import builder_version, gpu_description
from .spec import EngineSpec
from .trtllm import installed_trtllm_version

_CACHE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def toolchain(backend: str) -> str:
    """What builds the engine: this builder's version and, for TensorRT-LLM engines, TensorRT-LLM's
    (the installed one; where none is installed, as in a dry run outside the builder image, the
    version that image pins, which a real build insists on)."""
    if backend != "tensorrt-llm":
        return f"medusa-builder {builder_version()}"
    return f"medusa-builder {builder_version()}, tensorrt-llm {installed_trtllm_version() or TRTLLM_VERSION}"


def gpu_product(spec: EngineSpec) -> str | None:
    """The GPU the engine is for: ``--gpu-product``, else the GPU this build runs on as nvidia-smi
    names it, else None (no GPU visible: the key then says nothing about one)."""
    return spec.gpu_product or gpu_description()["name"]


def engine_inputs(spec: EngineSpec, *, base_uri: str, base_revision: str | None, heads_uri: str | None = None,
                  heads_revision: str | None = None, num_heads: int | None = None, num_layers: int | None = None,
                  choices: Sequence[Sequence[int]] | None = None, preset: str | None = None) -> EngineInputs:
    """What a hand-run build's engine is keyed by: the sources, the declared counts, the tree (a
    preset or the checked choices) and the engine flags."""
    return EngineInputs(
        base_uri=base_uri, base_revision=base_revision, heads_uri=heads_uri, heads_revision=heads_revision,
        num_heads=num_heads, num_layers=num_layers,
        tree_choices=tree_choices(choices) if choices is not None else None, tree_preset=preset,
        backend=spec.backend, dtype=spec.dtype, quantization=spec.quantization, tensor_parallel_size=spec.tp_size,
        max_batch_size=spec.max_batch_size, max_input_len=spec.max_input_len, max_output_len=spec.max_output_len,
        gpu_product=gpu_product(spec), toolchain=toolchain(spec.backend),
    )


def check_cache_key(key: str) -> str:
    """A key given by the caller, refused when it cannot name a folder in every store."""
    if not _CACHE_KEY.match(key):
        raise UserError(f"cache key {key!r} may hold only letters, digits, '.', '_' and '-' (at most 128)")
    return key
