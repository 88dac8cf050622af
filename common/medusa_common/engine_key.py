"""The engine cache key: which facts make an engine, named once for the operator and the builder.

An engine is kept in the artifact store under ``engines/<key>/``. Its key is a hash of every
fact that changes the engine's bytes or the checks its build makes: the sources and their
revisions, the head and layer counts the spec declares, the tree, the engine settings, the
backend, the GPU product (engines are not portable across GPUs) and the toolchain that builds it.
The base model's own engine, the baseline a candidate is measured against, is keyed by the same
facts without the heads and the tree.

Both sides build an ``EngineInputs`` and ask it for the key; they fill the fields in as follows.

- The operator, from the MedusaModel spec (``medusa_operator.revision``): ``baseModel`` and
  ``medusa`` give the sources, revisions and declared counts; the tree is the spec's choices, else
  its preset, else ``auto``; ``engine`` gives the settings and ``engine.gpu.product`` (a node
  label value, or None); the toolchain is the builder image reference, which pins TensorRT-LLM.
  The operator passes its key to every build (``--cache-key``).
- A build run by hand without ``--cache-key`` (``medusa_builder.build.key``), from its flags: the
  sources are ``--base-uri``/``--heads-uri`` with their revisions, or for ``build-engine`` the
  resolved folder paths with a fingerprint of their contents; the declared counts are
  ``--num-heads``/``--num-layers`` when given; the tree is ``--tree-choices`` as given (once
  checked), else ``--tree-preset``, else ``default`` (the builder's default preset for the head
  count), and for ``build-engine`` the tree it resolved from the folders; the settings are the
  engine flags; the GPU product is ``--gpu-product``, else the name of the GPU the build runs on
  as ``nvidia-smi`` spells it, else None (no GPU visible); the toolchain is
  ``medusa-builder <version>``, plus ``tensorrt-llm <version>`` for that backend (the installed
  one, else the one the builder image pins).

Given the flags the operator renders, a hand-run build fills in the operator's inputs except the
toolchain, which is named differently: a key made by hand never equals an operator's key. The
``build-base`` flags give the baseline's inputs. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .contract import ENGINE_KEY_LENGTH, content_key

TreeChoices = tuple[tuple[int, ...], ...]


def tree_choices(choices: Sequence[Sequence[int]]) -> TreeChoices:
    """A tree's paths in the immutable form ``EngineInputs`` holds."""
    return tuple(tuple(int(i) for i in path) for path in choices)


@dataclass(frozen=True)
class EngineInputs:
    """Everything an engine's cache key covers. ``heads_uri`` and one of ``tree_choices`` or
    ``tree_preset`` are needed for ``key()``; ``baseline_key()`` ignores the heads and the tree."""

    base_uri: str
    base_revision: str | None
    heads_uri: str | None
    heads_revision: str | None
    # Counts the heads must have; None when left to the checkpoint.
    num_heads: int | None
    num_layers: int | None
    tree_choices: TreeChoices | None
    tree_preset: str | None
    backend: str
    dtype: str
    quantization: str
    tensor_parallel_size: int
    max_batch_size: int
    max_input_len: int
    max_output_len: int
    gpu_product: str | None
    # What builds the engine: the builder image, or the builder's and TensorRT-LLM's versions.
    toolchain: str

    def __post_init__(self) -> None:
        if self.tree_choices is not None and self.tree_preset is not None:
            raise ValueError("an engine's tree is either choices or a preset, not both")

    def _engine(self) -> dict[str, Any]:
        # The JSON names are part of every key already in a store: renaming one (builderImage
        # holds the toolchain since hand-run builds share this payload) orphans those engines.
        return {
            "base": [self.base_uri, self.base_revision],
            "backend": self.backend,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "tensorParallelSize": self.tensor_parallel_size,
            "limits": [self.max_batch_size, self.max_input_len, self.max_output_len],
            "gpuProduct": self.gpu_product,
            "builderImage": self.toolchain,
        }

    def key(self) -> str:
        """The key of the engine with these heads and this tree."""
        if self.heads_uri is None:
            raise ValueError("an engine with heads needs heads_uri; key the base model's engine with baseline_key()")
        if self.tree_choices is None and self.tree_preset is None:
            raise ValueError("an engine with heads needs its tree: tree_choices or tree_preset")
        heads: list[Any] = [self.heads_uri, self.heads_revision]
        # Declared counts only when given, so a spec that leaves them to the checkpoint keeps the
        # key it had before counts could be declared.
        declared = {name: count for name, count in (("numHeads", self.num_heads), ("numLayers", self.num_layers))
                    if count}
        if declared:
            heads.append(declared)
        tree = ({"choices": [list(path) for path in self.tree_choices]} if self.tree_choices is not None
                else {"preset": self.tree_preset})
        return content_key({**self._engine(), "heads": heads, "tree": tree}, ENGINE_KEY_LENGTH)

    def baseline_key(self) -> str:
        """The key of the base model's own engine: these inputs without the heads and the tree."""
        return content_key({"baseline": self._engine()}, ENGINE_KEY_LENGTH)
