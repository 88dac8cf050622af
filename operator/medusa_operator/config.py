"""Operator-wide settings, from the command line (see cli.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The builder image pins TensorRT-LLM 1.1.0; the serving image must carry the same version.
DEFAULT_BUILDER_IMAGE = "ghcr.io/medusa-operator/medusa-builder:0.1.0"
DEFAULT_SERVING_IMAGE = "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"
FIELD_MANAGER = "medusa-operator"
# Sets only a Deployment's replicas. Handing the count to an autoscaler through a manager of its
# own keeps the value when the main manager stops applying it (else it falls back to 1), and
# scales a revision the operator no longer renders in full.
REPLICAS_FIELD_MANAGER = "medusa-operator-replicas"


@dataclass(frozen=True)
class OperatorConfig:
    builder_image: str = DEFAULT_BUILDER_IMAGE
    serving_image: str = DEFAULT_SERVING_IMAGE
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
