"""Operator-wide settings, from the command line (see cli.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medusa_builder.toolchain import TRITON_TRTLLM_IMAGE

# The builder image (builder/Dockerfile) pins TensorRT-LLM toolchain.TRTLLM_VERSION; the default
# serving image is the Triton image that ships the same version, so its engines load.
DEFAULT_BUILDER_IMAGE = "ghcr.io/medusa-operator/medusa-builder:0.1.0"
DEFAULT_SERVING_IMAGE = TRITON_TRTLLM_IMAGE
# Models on the `reference` backend build and serve with one image (runtime/Dockerfile): the
# builder steps, the PyTorch runtime and tritonserver with its Python backend.
DEFAULT_REFERENCE_IMAGE = "ghcr.io/medusa-operator/medusa-reference:0.1.0"
FIELD_MANAGER = "medusa-operator"


@dataclass(frozen=True)
class OperatorConfig:
    builder_image: str = DEFAULT_BUILDER_IMAGE
    serving_image: str = DEFAULT_SERVING_IMAGE
    reference_image: str = DEFAULT_REFERENCE_IMAGE
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
    reconcile_interval: float = 5.0
    # A step that failed for infrastructure reasons (exit code 3) is run again after this long.
    infra_retry_seconds: float = 60.0
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    tokens_metric: str = "medusa_tokens_per_second"
    extra_labels: dict[str, str] = field(default_factory=dict)
