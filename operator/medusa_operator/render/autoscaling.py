"""Autoscalers for the served revision: an HPA on a Pods metric, or a KEDA ScaledObject.

Both scale on generated tokens per second per replica. Scale-up reacts within a minute; scale-down
waits for the model's stabilization window (five minutes by default) and removes one pod at a time,
so a GPU pod that took minutes to load its engine is not thrashed by a short lull.
"""

from __future__ import annotations

from typing import Any

from . import names
from .context import RenderContext

SCALE_UP = {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60},
                         {"type": "Percent", "value": 100, "periodSeconds": 60}]}
RECORDING_RULE = "medusa:tokens_per_second:rate1m"


def behavior(ctx: RenderContext) -> dict[str, Any]:
    """Scale up within a minute; scale down one pod at a time after the model's stabilization window."""
    window = ctx.spec.serving.autoscaling.scale_down_stabilization_seconds
    return {"scaleUp": SCALE_UP,
            "scaleDown": {"stabilizationWindowSeconds": window, "selectPolicy": "Min",
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": max(15, min(window, 120))}]}}


def _target(ctx: RenderContext, revision: str) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.deployment_name(ctx.model.name, revision)}


def autoscaling_enabled(ctx: RenderContext) -> bool:
    return ctx.spec.serving.autoscaling.target_tokens_per_second_per_replica is not None


def horizontal_pod_autoscaler(ctx: RenderContext, revision: str) -> dict[str, Any]:
    auto = ctx.spec.serving.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": ctx.metadata(names.autoscaler_name(ctx.model.name), {names.LABEL_REVISION: revision}),
        "spec": {
            "scaleTargetRef": _target(ctx, revision),
            "minReplicas": max(auto.min_replicas, 1),
            "maxReplicas": auto.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": ctx.config.tokens_metric},
                "target": {"type": "AverageValue",
                           "averageValue": str(auto.target_tokens_per_second_per_replica)},
            }}],
            "behavior": behavior(ctx),
        },
    }


def scaled_object(ctx: RenderContext, revision: str) -> dict[str, Any]:
    auto = ctx.spec.serving.autoscaling
    selector = (f'namespace="{ctx.model.namespace}",model="{names.fit(ctx.model.name, 63)}",'
                f'revision="{revision}"')
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": ctx.metadata(names.autoscaler_name(ctx.model.name), {names.LABEL_REVISION: revision}),
        "spec": {
            "scaleTargetRef": _target(ctx, revision),
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            # When Prometheus cannot be read three times running, hold this many replicas.
            "fallback": {"failureThreshold": 3, "replicas": max(auto.min_replicas, 1)},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(ctx)}},
            "triggers": [{"type": "prometheus", "metadata": {
                "serverAddress": ctx.config.prometheus_url,
                "query": f"sum({RECORDING_RULE}{{{selector}}})",
                "threshold": str(auto.target_tokens_per_second_per_replica),
            }}],
        },
    }


def autoscaler(ctx: RenderContext, revision: str) -> dict[str, Any] | None:
    if not autoscaling_enabled(ctx):
        return None
    if ctx.spec.serving.autoscaling.provider == "keda":
        return scaled_object(ctx, revision)
    return horizontal_pod_autoscaler(ctx, revision)
