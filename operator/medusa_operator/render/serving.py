"""Triton Deployments and Services for a revision, and the stable Service users call.

A serving pod copies its model repository from the artifact store into an emptyDir with an init
container (the builder image's ``fetch``), then Triton serves it from local disk. That works the
same for every store (S3-compatible endpoints, GCS, PVCs) and for engines that must be local.
"""

from __future__ import annotations

from typing import Any

from medusa_common.triton import GRPC_PORT, HTTP_PORT, METRICS_PORT

from . import names, pod_security
from .context import GPU_PRODUCT_LABEL, GPU_RESOURCE, GPU_TOLERATION, RenderContext
from .jobs import artifacts_access, storage_volumes
from .pod_security import MODEL_DIR

# The engine's model in a packaged TensorRT-LLM repository: the only model ranks above 0 load.
TRTLLM_MODEL = "tensorrt_llm"


def triton_launch(ctx: RenderContext) -> tuple[list[str], list[str]]:
    """Command and arguments of the Triton container.

    One rank (tensor-parallel size 1, or the reference backend): a plain ``tritonserver``.
    TensorRT-LLM with tensor-parallel size N > 1 runs the backend's leader mode, as its own
    launch script does: one ``mpirun`` with N one-process app contexts, one ``tritonserver`` per
    rank and GPU. Rank 0 is the leader: it loads the whole repository and alone opens the ports
    (the other ranks never return from loading the engine, so they bind nothing), which keeps the
    probes and Services unchanged. Ranks above 0 load only the engine's model, and each rank
    gets its own Python-backend shared-memory prefix because all of them share /dev/shm.
    Leader mode needs no MPI_Comm_spawn (orchestrator mode does) and keeps every rank a child of
    the container's main process: a rank that dies ends mpirun, so the kubelet restarts the pod.
    """
    server = [f"--model-repository={MODEL_DIR}", f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}",
              f"--metrics-port={METRICS_PORT}", "--allow-metrics=true", "--allow-gpu-metrics=true"]
    ranks = ctx.spec.engine.tensor_parallel_size
    if ctx.spec.engine.backend != "tensorrt-llm" or ranks == 1:
        return ["tritonserver"], server
    args = ["--allow-run-as-root"]
    for rank in range(ranks):
        if rank:
            args += [":"]
        args += ["-n", "1", "tritonserver", *server]
        if rank:
            args += ["--model-control-mode=explicit", f"--load-model={TRTLLM_MODEL}"]
        args += ["--disable-auto-complete-config", f"--backend-config=python,shm-region-prefix-name=rank{rank}_"]
    return ["mpirun"], args


def _resources(ctx: RenderContext) -> dict[str, Any]:
    user = ctx.spec.serving.resources
    limits = {k: str(v) for k, v in (user.limits or {}).items()}
    requests = {k: str(v) for k, v in (user.requests or {}).items()}
    gpus = ctx.spec.engine.gpu.count
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _scheduling(ctx: RenderContext) -> dict[str, Any]:
    serving, gpu = ctx.spec.serving, ctx.spec.engine.gpu
    node_selector = dict(serving.node_selector)
    if gpu.product:
        node_selector[GPU_PRODUCT_LABEL] = gpu.product
    tolerations = [dict(GPU_TOLERATION)]
    tolerations += [t.model_dump(by_alias=True, exclude_none=True) for t in serving.tolerations]
    out: dict[str, Any] = {"tolerations": tolerations}
    if node_selector:
        out["nodeSelector"] = node_selector
    return out


def deployment(ctx: RenderContext, revision: str, repository: str, *, variant: str = "medusa",
               image: str | None = None, replicas: int | None = 1) -> dict[str, Any]:
    """A Triton Deployment serving ``repository``; ``replicas=None`` leaves them to an autoscaler."""
    name = names.deployment_name(ctx.model.name, revision, variant)
    selector = names.revision_selector(ctx.model.name, revision, variant)
    # Only the copy from the artifact store needs credentials; Triton gets none.
    volumes, fetch_mounts, storage_args = storage_volumes([artifacts_access(ctx, writes=False)])
    shm_volume, shm_mount = pod_security.shared_memory()
    volumes += [pod_security.scratch_volume("models"), shm_volume]
    fetch_mounts.append({"name": "models", "mountPath": MODEL_DIR})
    fetch = {
        "name": "fetch-model-repository",
        "image": ctx.builder_image,
        "command": ["medusa-builder"],
        "args": ["fetch", repository, "--dest", MODEL_DIR, *storage_args],
        "volumeMounts": fetch_mounts,
    }
    command, args = triton_launch(ctx)
    triton = {
        "name": "triton",
        "image": image or ctx.serving_image,
        "command": command,
        "args": args,
        "ports": [{"name": "http", "containerPort": HTTP_PORT}, {"name": "grpc", "containerPort": GRPC_PORT},
                  {"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": _resources(ctx),
        "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR, "readOnly": True}, shm_mount],
        "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"},
                         "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 6},
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": {**names.model_labels(ctx.model.name), **selector},
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                                "prometheus.io/path": "/metrics"},
            },
            "spec": pod_security.harden({"initContainers": [fetch], "containers": [triton], "volumes": volumes,
                                         "terminationGracePeriodSeconds": 60, **_scheduling(ctx)}),
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ctx.metadata(name, {names.LABEL_REVISION: revision, names.LABEL_VARIANT: variant}),
        "spec": spec,
    }


def _service(ctx: RenderContext, name: str, selector: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http"},
                      {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                      {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}],
        },
    }


def revision_service(ctx: RenderContext, revision: str, variant: str = "medusa") -> dict[str, Any]:
    """Addresses one revision's pods directly (the validation Job measures through it)."""
    return _service(ctx, names.revision_service_name(ctx.model.name, revision, variant),
                    names.revision_selector(ctx.model.name, revision, variant),
                    {names.LABEL_REVISION: revision, names.LABEL_VARIANT: variant})


def stable_service(ctx: RenderContext, revision: str) -> dict[str, Any]:
    """The Service users call; promotion moves its selector to the validated revision."""
    return _service(ctx, names.stable_service_name(ctx.model.name),
                    names.revision_selector(ctx.model.name, revision, "medusa"), {"medusa.dev/role": "stable"})
