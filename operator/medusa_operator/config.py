"""Operator-wide settings, from the command line (see cli.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medusa_common.toolchain import TRITON_TRTLLM_IMAGE

# The builder image (builder/Dockerfile) pins TensorRT-LLM toolchain.TRTLLM_VERSION; the default
# serving image is the Triton image that ships the same version, so its engines load.
DEFAULT_BUILDER_IMAGE = "ghcr.io/medusa-operator/medusa-builder:0.1.0"
DEFAULT_SERVING_IMAGE = TRITON_TRTLLM_IMAGE
# Models on the `reference` backend serve from the reference serving image (runtime/Dockerfile:
# the PyTorch runtime and tritonserver with its Python backend, no builder steps) and run their
# Jobs, and their serving pods' fetch, from the reference builder image built on it
# (builder/reference.Dockerfile: the same plus the medusa-builder steps).
DEFAULT_REFERENCE_BUILDER_IMAGE = "ghcr.io/medusa-operator/medusa-reference-builder:0.1.0"
DEFAULT_REFERENCE_SERVING_IMAGE = "ghcr.io/medusa-operator/medusa-reference-serving:0.1.0"
FIELD_MANAGER = "medusa-operator"
# Sets only a Deployment's replicas. Handing the count to an autoscaler through a manager of its
# own keeps the value when the main manager stops applying it (else it falls back to 1), and
# scales a revision the operator no longer renders in full.
REPLICAS_FIELD_MANAGER = "medusa-operator-replicas"


DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Where an image reference's name ends: a path below it, a tag or a digest follows.
NAME_BOUNDARIES = ("/", ":", "@")


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``image`` passes the image policy ``allowed`` (an empty policy allows every image).

    An entry is a digest (``sha256:<64 hex>``: any image pinned to it) or a reference prefix that
    ends at a name boundary: ``registry.example.com/ml`` allows ``registry.example.com/ml/builder:1``
    and ``registry.example.com/ml:1`` but not ``registry.example.com/ml-other/x``; an entry ending
    in ``/``, ``:`` or ``@`` allows anything that starts with it. The chart's admission policy
    (templates/imagepolicy.yaml) states the same rule in CEL.
    """
    if not allowed:
        return True
    for entry in allowed:
        if DIGEST.match(entry):
            if image.endswith("@" + entry):
                return True
        elif (image == entry or any(image.startswith(entry + b) for b in NAME_BOUNDARIES)
              or (entry.endswith(NAME_BOUNDARIES) and image.startswith(entry))):
            return True
    return False


@dataclass(frozen=True)
class OperatorConfig:
    builder_image: str = DEFAULT_BUILDER_IMAGE
    serving_image: str = DEFAULT_SERVING_IMAGE
    reference_builder_image: str = DEFAULT_REFERENCE_BUILDER_IMAGE
    reference_serving_image: str = DEFAULT_REFERENCE_SERVING_IMAGE
    # Where the operator's Jobs run (a build pool, say): merged into every Job's pod spec. GPU
    # builds add the GPU toleration and product selector of the model on top.
    job_node_selector: dict[str, str] = field(default_factory=dict)
    job_tolerations: tuple[dict, ...] = ()
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = True
    metrics_port: int = 8080
    health_port: int = 8081
    leader_elect: bool = True
    lease_name: str = "medusa-operator"
    lease_namespace: str = "default"
    identity: str = "medusa-operator"
    # How soon a model that waits for something no watch reports (a missing Secret) is looked at
    # again, and the first delay of the backoff after a failed pass.
    reconcile_interval: float = 5.0
    # Every model is reconciled at least this often even when no event came: the safety net.
    resync_seconds: float = 600.0
    workers: int = 4  # reconcile passes that may run at once (never two of one model)
    # How often each distinct credentials Secret models name is checked (no watch: see controller/secrets.py).
    secret_check_seconds: float = 60.0
    # A step that failed for infrastructure reasons (exit code 3) is run again after this long.
    infra_retry_seconds: float = 60.0
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    tokens_metric: str = "medusa_tokens_per_second"
    extra_labels: dict[str, str] = field(default_factory=dict)
    # Image policy: the builder and serving images a model may use (see image_allowed); empty: any.
    allowed_images: tuple[str, ...] = ()
