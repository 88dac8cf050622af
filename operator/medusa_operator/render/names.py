"""Deterministic names and labels for everything the operator creates.

A name depends only on the model, the revision and the object's role, so a restarted operator
finds what it created before and never creates a second copy. A model's name is a DNS-1123
subdomain (up to 253 characters, dots allowed, may start with a digit); every name derived from
it is a DNS-1035 label (what Services need, and short enough for the ``job-name`` label of a
Job's pods), and two models never derive the same name.
"""

from __future__ import annotations

import hashlib
import re

from medusa_common.triton import HTTP_PORT

MANAGED_BY = "medusa-operator"
LABEL_MODEL = "medusa.dev/model"
LABEL_REVISION = "medusa.dev/revision"
LABEL_VARIANT = "medusa.dev/variant"  # medusa (the candidate or served model) | base (the baseline)
LABEL_STEP = "medusa.dev/step"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# Set by users on a MedusaModel: a new value retries its failed revision without a spec change.
RETRY_ANNOTATION = "medusa.dev/retry"
APPLIED_ANNOTATION = "medusa.dev/applied-digest"  # the digest of the manifest last applied (controller/applied.py)

STEPS = ("lookup", "lookup-base", "build", "build-base", "package", "package-base", "validate")


def builder_command(step: str) -> str:
    """The ``medusa-builder`` command a step's Job runs (a lookup is ``build --lookup-only``)."""
    return "build" if step.startswith("lookup") else step.removesuffix("-base")
VARIANTS = ("medusa", "base")


def fit(name: str, limit: int) -> str:
    """``name`` if short enough, else a prefix plus a stable hash of the whole name."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-.')}-{digest}"


DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_NOT_IN_LABEL = re.compile(r"[^a-z0-9-]+")
_DIGEST = 6


def dns_label(name: str, limit: int = 63) -> str:
    """``name`` itself when it is a DNS-1035 label of at most ``limit`` characters. Otherwise
    what is left after dots and other characters a label cannot hold become '-', after a leading
    letter is added and the text is cut to fit, followed by a hash of the whole name: so
    ``llama-3.1-8b`` and a model really named ``llama-3-1-8b`` get different names."""
    if len(name) <= limit and DNS_LABEL.fullmatch(name):
        return name
    text = _NOT_IN_LABEL.sub("-", name.lower()).strip("-")
    if not text[:1].isalpha():
        text = f"m-{text}".rstrip("-")
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST]
    return f"{text[: limit - _DIGEST - 1].rstrip('-')}-{digest}"


REVISION_CHARS = 8  # of a revision, in names


def revision_prefix(model: str, revision: str) -> str:
    # The model's part leaves room for the revision and the longest step within one label.
    room = 63 - 1 - REVISION_CHARS - 1 - max(len(step) for step in STEPS)
    return f"{dns_label(model, room)}-{revision[:REVISION_CHARS]}"


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


def endpoint(model: str, namespace: str, port: int = HTTP_PORT) -> str:
    return f"http://{stable_service_name(model)}.{namespace}.svc:{port}"


def revision_endpoint(model: str, namespace: str, revision: str, variant: str = "medusa", port: int = HTTP_PORT) -> str:
    return f"http://{revision_service_name(model, revision, variant)}.{namespace}.svc:{port}"
