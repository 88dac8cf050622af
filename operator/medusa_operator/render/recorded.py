"""What a served revision was validated with, recorded on its own Deployment.

A promoted revision keeps running what passed validation, whatever the spec says later: its
Deployment is rendered from the spec recorded at promotion (with the images resolved) and only
the fields meant to change in place (``revision.IN_PLACE_SERVING_FIELDS``) come from the live spec.
The record lives in an annotation of the Deployment it describes, so it survives a lost status and
is gone exactly when the revision is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from ..api.v1alpha1 import MedusaModelSpec
from ..revision import IN_PLACE_SERVING_FIELDS
from ..config import OperatorConfig
from . import jobs, serving
from .context import ModelRef, RenderContext

ANNOTATION = "medusa.dev/validated-inputs"


@dataclass(frozen=True)
class Record:
    spec: MedusaModelSpec  # images resolved: engine.builderImage and serving.image are always set
    repository_uri: str

    def secret_names(self) -> list[str]:
        """The credentials Secrets this revision's pods mount."""
        return jobs.secret_names(RenderContext(ModelRef("", "", ""), self.spec, OperatorConfig()))

    def encode(self) -> str:
        doc = {"spec": self.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
               "repositoryUri": self.repository_uri}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def record(ctx: RenderContext, repository_uri: str) -> Record:
    """The record of a revision rendered from ``ctx`` (whose spec is that revision's)."""
    spec = ctx.spec.model_copy(deep=True)
    spec.engine.builder_image = ctx.builder_image
    spec.serving.image = ctx.serving_image
    return Record(spec, repository_uri)


def decode(annotations: dict[str, str] | None) -> Record | None:
    """The record on a Deployment, or None when there is none or it cannot be read."""
    raw = (annotations or {}).get(ANNOTATION)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
        return Record(MedusaModelSpec.model_validate(doc["spec"]), str(doc["repositoryUri"]))
    except (ValueError, KeyError, TypeError, ValidationError):
        return None


def served_context(live: RenderContext, rec: Record) -> RenderContext:
    """The recorded spec, with the in-place fields taken from the live spec."""
    changes: dict[str, Any] = {f: getattr(live.spec.serving, f) for f in IN_PLACE_SERVING_FIELDS}
    spec = rec.spec.model_copy(update={"serving": rec.spec.serving.model_copy(update=changes)})
    return replace(live, spec=spec)


def served_deployment(live: RenderContext, rec: Record, revision: str, *, replicas: int | None) -> dict[str, Any]:
    """The served revision's Deployment, rendered from its record and carrying it."""
    manifest = serving.deployment(served_context(live, rec), revision, rec.repository_uri, replicas=replicas)
    manifest["metadata"].setdefault("annotations", {})[ANNOTATION] = rec.encode()
    return manifest
