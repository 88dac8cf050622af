"""Deterministic names and labels for everything the operator creates.

A name depends only on the model, the revision and the object's role, so a restarted operator
finds what it created before and never creates a second copy.
"""

from __future__ import annotations

import hashlib

MANAGED_BY = "medusa-operator"
LABEL_MODEL = "medusa.dev/model"
LABEL_REVISION = "medusa.dev/revision"
LABEL_VARIANT = "medusa.dev/variant"  # medusa (the candidate or served model) | base (the baseline)
LABEL_STEP = "medusa.dev/step"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

STEPS = ("lookup", "lookup-base", "build", "build-base", "package", "package-base", "validate")
VARIANTS = ("medusa", "base")


def fit(name: str, limit: int) -> str:
    """``name`` if short enough, else a prefix plus a stable hash of the whole name."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-.')}-{digest}"


def dns_label(name: str, limit: int = 63) -> str:
    """A DNS-1035 label (Services need a leading letter)."""
    name = fit(name, limit)
    return name if name[0].isalpha() else fit(f"m-{name}", limit)


def revision_prefix(model: str, revision: str) -> str:
    return f"{dns_label(model, 40)}-{revision[:8]}"


def job_name(model: str, revision: str, step: str) -> str:
    assert step in STEPS, step
    return f"{revision_prefix(model, revision)}-{step}"


def deployment_name(model: str, revision: str, variant: str = "medusa") -> str:
    assert variant in VARIANTS, variant
    prefix = revision_prefix(model, revision)
    return prefix if variant == "medusa" else f"{prefix}-base"


def revision_service_name(model: str, revision: str, variant: str = "medusa") -> str:
    return deployment_name(model, revision, variant)


def stable_service_name(model: str) -> str:
    return dns_label(model)


def autoscaler_name(model: str) -> str:
    return dns_label(model)


def model_labels(model: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "medusa-model",
        "app.kubernetes.io/instance": fit(model, 63),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MODEL: fit(model, 63),
    }


def revision_selector(model: str, revision: str, variant: str = "medusa") -> dict[str, str]:
    return {LABEL_MODEL: fit(model, 63), LABEL_REVISION: revision, LABEL_VARIANT: variant}


def endpoint(model: str, namespace: str, port: int = 8000) -> str:
    return f"http://{stable_service_name(model)}.{namespace}.svc:{port}"


def revision_endpoint(model: str, namespace: str, revision: str, variant: str = "medusa", port: int = 8000) -> str:
    return f"http://{revision_service_name(model, revision, variant)}.{namespace}.svc:{port}"
