"""Whether a manifest is already in place, so that an unchanged child costs no request.

Each manifest the operator applies carries the digest of its own content in an annotation. A
child is left alone when its cached copy carries the digest of today's manifest (nothing the
operator wants changed) and still holds every field the manifest sets with the same value
(nobody edited or removed them by hand; fields the API server or other controllers add do not
count). Anything else is applied again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..render import names


def digest(manifest: dict[str, Any]) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def stamped(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its digest annotation (the digest covers the manifest without it)."""
    meta = dict(manifest.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), names.APPLIED_ANNOTATION: digest(manifest)}
    return {**manifest, "metadata": meta}


def _holds(live: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and _holds(live[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(live, list) and len(live) == len(wanted) and all(map(_holds, live, wanted))
    return live == wanted


def in_place(manifest: dict[str, Any], live: dict[str, Any] | None) -> bool:
    if live is None:
        return False
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if annotations.get(names.APPLIED_ANNOTATION) != digest(manifest):
        return False
    meta = manifest.get("metadata") or {}
    return (_holds(live["metadata"].get("labels") or {}, meta.get("labels") or {})
            and _holds(annotations, meta.get("annotations") or {})
            and _holds(live.get("spec"), manifest.get("spec") or {}))
