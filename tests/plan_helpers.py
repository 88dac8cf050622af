"""Hand-made specs, observations and lookups for the unit tests of ``plan()``."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from medusa_common.contract import StepResult
from medusa_operator.api.v1alpha1 import MedusaModelSpec, MedusaModelStatus
from medusa_operator.config import OperatorConfig
from medusa_operator.controller.observed import DeploymentObs, JobObs, Unschedulable
from medusa_operator.render import names, recorded
from medusa_operator.render.context import ModelRef, RenderContext
from medusa_operator.revision import revision_of

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
# The models here are on the reference backend, which builds with the reference builder image.
CONFIG = OperatorConfig(builder_image="b:1", serving_image="t:1", reference_builder_image="b:1", reference_serving_image="b:1", infra_retry_seconds=60)
SPEC = {
    "baseModel": {"uri": "s3://models/base/"},
    "medusa": {"uri": "s3://models/heads/", "tree": {"choices": [[0], [0, 0], [1]]}},
    "engine": {"backend": "reference", "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
    "artifacts": {"uri": "s3://engines/"},
    "validation": {"baseline": "none"},
}


def ctx(**changes) -> RenderContext:
    spec = json.loads(json.dumps(SPEC))
    for path, value in changes.items():
        node = spec
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return RenderContext(ModelRef("m", "ns", "uid-1"), MedusaModelSpec.model_validate(spec), CONFIG)


def rev(c: RenderContext) -> str:
    return revision_of(c.spec, c.builder_image, c.serving_image)


def ok(step: str, **result) -> StepResult:
    return StepResult(step=step, ok=True, result=result)


def built_and_packaged(r: str) -> dict[str, JobObs]:
    """Observed Jobs of revision ``r`` up to a packaged repository."""
    build, package = names.job_name("m", r, "build"), names.job_name("m", r, "package")
    return {build: JobObs(build, r, "succeeded", result=ok("build", engineUri="s3://e/k")),
            package: JobObs(package, r, "succeeded", result=ok("package", repositoryUri="s3://e/repo"))}


def kinds(p) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in p.apply]


def cond(status: MedusaModelStatus, type_: str):
    return next(c for c in status.conditions if c.type == type_)


def container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def validated(r: str, **verdict) -> dict[str, JobObs]:
    """Observed Jobs of revision ``r`` up to a passed validation."""
    name = names.job_name("m", r, "validate")
    return {**built_and_packaged(r),
            name: JobObs(name, r, "succeeded", result=ok("validate", passed=True, **verdict))}


def serving_status(r: str, **revisions) -> MedusaModelStatus:
    """Revision ``r`` serves; ``revisions`` adds fields of status.revisions (camelCase)."""
    return MedusaModelStatus.model_validate({"phase": "Serving", "revisions": {
        "current": r, "currentRepositoryUri": "s3://r", "currentImage": "t:1", **revisions}})


def manifest(p, kind: str, name: str) -> dict | None:
    return next((m for m in p.apply if m["kind"] == kind and m["metadata"]["name"] == name), None)


def served(revision: str, ready: int, *, replicas: int | None = None, unschedulable: Unschedulable | None = None,
           validated_with: RenderContext | None = None) -> DeploymentObs:
    """The Deployment of a promoted revision, carrying the record of what it was validated with."""
    return DeploymentObs(names.deployment_name("m", revision), revision, "medusa", ready, unschedulable=unschedulable,
                         replicas=ready if replicas is None else replicas,
                         record=recorded.record(validated_with or ctx(), "s3://r"))
