"""The engine cache key a build computes when it is given none.

The operator always passes its own key (``--cache-key``, from the MedusaModel spec); a build run
by hand keys its engine here, with ``medusa_common.contract.content_key`` over the build's
inputs, the hash and length the operator uses. This module is the builder's only caller of it.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from medusa_common.contract import ENGINE_KEY_LENGTH, UserError, content_key
from medusa_common.toolchain import TRTLLM_VERSION

from .spec import EngineSpec

_CACHE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def builder_version() -> str:
    """This package's installed version, or ``source`` in a checkout that is not installed."""
    try:
        from importlib.metadata import version

        return version("medusa-operator")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        return "source"


def cache_inputs(spec: EngineSpec, *, base_uri: str, base_revision: str | None, heads_uri: str | None,
                 heads_revision: str | None, tree_spec: Any) -> dict[str, Any]:
    """What the cache key covers: sources, tree, engine shape and toolchain."""
    return {
        "base": [base_uri, base_revision], "heads": [heads_uri, heads_revision], "tree": tree_spec,
        "spec": asdict(spec), "tensorrtLlm": TRTLLM_VERSION if spec.backend == "tensorrt-llm" else None,
        "builder": builder_version(),
    }


def engine_cache_key(spec: EngineSpec, *, base_uri: str, base_revision: str | None, heads_uri: str | None,
                     heads_revision: str | None, tree_spec: Any) -> str:
    """The cache key of the engine these inputs build."""
    return content_key(cache_inputs(spec, base_uri=base_uri, base_revision=base_revision, heads_uri=heads_uri,
                                    heads_revision=heads_revision, tree_spec=tree_spec), ENGINE_KEY_LENGTH)


def check_cache_key(key: str) -> str:
    """A key given by the caller, refused when it cannot name a folder in every store."""
    if not _CACHE_KEY.match(key):
        raise UserError(f"cache key {key!r} may hold only letters, digits, '.', '_' and '-' (at most 128)")
    return key
