"""The Jobs of a revision: build (GPU), package (CPU) and validate (CPU).

Each Job runs one ``medusa-builder`` step. Inputs are arguments and mounted Secrets; the result is
the container's termination message (see medusa_common.contract). A user error (exit code 2)
or a failed validation (4) fails the Job at once; other failures are retried twice by the Job
controller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from medusa_common.contract import FINAL_EXIT_CODES, PVC_MOUNT_ROOT

from ..api.v1alpha1 import SecretRef
from ..revision import effective_tree
from . import names, pod_security
from .context import GPU_PRODUCT_LABEL, GPU_RESOURCE, GPU_TOLERATION, RenderContext, report_uri, repository_uri
from .pod_security import WORK_DIR

CREDENTIALS_DIR = "/var/run/secrets/medusa/credentials"
# Secret files belong to root; the pod's fsGroup (pod_security) becomes their group. Readable by
# owner and group, so by the image's unprivileged user through that group, and by no one else.
# (With an fsGroup the kubelet also adds these bits to Secret files; the manifest says it itself.)
CREDENTIALS_MODE = 0o440
BUILD_DEADLINE_SECONDS = 6 * 3600
PACKAGE_DEADLINE_SECONDS = 3600
STEP_REQUESTS = {"cpu": "1", "memory": "4Gi"}
LOOKUP_REQUESTS = {"cpu": "100m", "memory": "512Mi"}  # reads one manifest from the store


def secret_names(ctx: RenderContext) -> list[str]:
    """Distinct credential Secrets the spec refers to, in a stable order."""
    spec = ctx.spec
    refs = (spec.base_model.credentials_secret_ref, spec.medusa.credentials_secret_ref,
            spec.artifacts.credentials_secret_ref)
    return sorted({ref.name for ref in refs if ref is not None})


@dataclass(frozen=True)
class Access:
    """A location a container reads or writes, and the Secret that holds its credentials."""

    uri: str
    secret: str | None
    writes: bool = False


def _secret(ref: SecretRef | None) -> str | None:
    return ref.name if ref is not None else None


def base_model_access(ctx: RenderContext) -> Access:
    return Access(ctx.spec.base_model.uri, _secret(ctx.spec.base_model.credentials_secret_ref))


def heads_access(ctx: RenderContext) -> Access:
    return Access(ctx.spec.medusa.uri, _secret(ctx.spec.medusa.credentials_secret_ref))


def artifacts_access(ctx: RenderContext, *, writes: bool) -> Access:
    return Access(ctx.spec.artifacts.uri, _secret(ctx.spec.artifacts.credentials_secret_ref), writes)


def validation_inputs_access(ctx: RenderContext) -> list[Access]:
    """The validation dataset and prompts have no Secret of their own: they are read with the
    Secret of the spec's location in the same kind of store (the artifact store's first)."""
    spec, out = ctx.spec, []
    owners = (spec.artifacts, spec.base_model, spec.medusa)
    for uri in (spec.validation.accuracy.dataset_uri, spec.validation.throughput.prompts_uri):
        if uri:
            scheme = uri.split("://", 1)[0]
            secret = next((o.credentials_secret_ref.name for o in owners
                           if o.credentials_secret_ref is not None and o.uri.split("://", 1)[0] == scheme), None)
            out.append(Access(uri, secret))
    return out


def _claim(uri: str) -> str | None:
    return uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else None


def storage_volumes(accesses: list[Access]) -> tuple[list[dict], list[dict], list[str]]:
    """Volumes, mounts and builder arguments for the Secrets and PVCs of the locations one
    container uses, and no others. A PVC is mounted read-only unless the container writes to it."""
    volumes: list[dict] = []
    mounts: list[dict] = []
    args: list[str] = []
    secrets = sorted({a.secret for a in accesses if a.secret})
    if secrets:
        volumes.append({"name": "credentials", "projected": {
            "defaultMode": CREDENTIALS_MODE, "sources": [{"secret": {"name": s}} for s in secrets]}})
        mounts.append({"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
        args += ["--credentials-dir", CREDENTIALS_DIR]
    claims: dict[str, bool] = {}
    for access in accesses:
        claim = _claim(access.uri)
        if claim is not None:
            claims[claim] = claims.get(claim, False) or access.writes
    for claim, writes in sorted(claims.items()):
        volume = f"pvc-{names.dns_label(claim, 50)}"  # volume names are DNS labels; claims may hold dots
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": volume, "mountPath": f"{PVC_MOUNT_ROOT}/{claim}", **({} if writes else {"readOnly": True})})
    return volumes, mounts, args


def _scheduling(ctx: RenderContext, gpus: int) -> dict[str, Any]:
    """The operator's Job placement, plus the model's GPU toleration and product for GPU steps."""
    node_selector = dict(ctx.config.job_node_selector)
    tolerations = [dict(t) for t in ctx.config.job_tolerations]
    if gpus:
        tolerations.append(dict(GPU_TOLERATION))
        if ctx.spec.engine.gpu.product:
            node_selector[GPU_PRODUCT_LABEL] = ctx.spec.engine.gpu.product
    spec: dict[str, Any] = {}
    if tolerations:
        spec["tolerations"] = tolerations
    if node_selector:
        spec["nodeSelector"] = node_selector
    return spec


def step_job(ctx: RenderContext, revision: str, step: str, args: list[str], accesses: list[Access], *,
             gpus: int = 0, deadline_seconds: int = BUILD_DEADLINE_SECONDS, command: str | None = None,
             requests: dict[str, str] = STEP_REQUESTS) -> dict[str, Any]:
    """A Job running ``medusa-builder COMMAND ARGS`` (COMMAND defaults to the step's name) with the
    credentials and volumes of ``accesses``, the locations the step reads and writes."""
    volumes, mounts, storage_args = storage_volumes(accesses)
    volumes.insert(0, pod_security.scratch_volume("work"))
    mounts.insert(0, {"name": "work", "mountPath": WORK_DIR})
    name = names.job_name(ctx.model.name, revision, step)
    labels = {names.LABEL_REVISION: revision, names.LABEL_STEP: step}
    resources: dict[str, Any] = {"requests": dict(requests)}
    if gpus:
        resources["limits"] = {GPU_RESOURCE: str(gpus)}
    container = {
        "name": "builder",
        "image": ctx.builder_image,
        "command": ["medusa-builder"],
        "args": [command or names.builder_command(step), *args, *storage_args],
        "resources": resources,
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if gpus:
        shm_volume, shm_mount = pod_security.shared_memory()
        volumes.append(shm_volume)
        container["volumeMounts"] = [*mounts, shm_mount]
    pod_spec: dict[str, Any] = pod_security.harden({
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        **_scheduling(ctx, gpus),
    })
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": ctx.metadata(name, labels),
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": deadline_seconds,
            "podFailurePolicy": {"rules": [
                # An eviction, a preemption or a lost node says nothing about the step: retry it
                # without spending one of the Job's retries.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": "builder", "operator": "In",
                                                      "values": list(FINAL_EXIT_CODES)}},
            ]},
            "template": {
                "metadata": {"labels": {**names.model_labels(ctx.model.name), **labels}},
                "spec": pod_spec,
            },
        },
    }


def _engine_args(ctx: RenderContext) -> list[str]:
    e = ctx.spec.engine
    args = [
        "--backend", e.backend, "--dtype", e.dtype, "--quantization", e.quantization,
        "--tp-size", str(e.tensor_parallel_size), "--max-batch-size", str(e.max_batch_size),
        "--max-input-len", str(e.max_input_len), "--max-output-len", str(e.max_output_len),
        "--artifacts-uri", ctx.spec.artifacts.uri, "--work-dir", WORK_DIR,
    ]
    if e.gpu.product:
        args += ["--gpu-product", e.gpu.product]
    return args


def _build_args(ctx: RenderContext, cache_key: str) -> list[str]:
    spec = ctx.spec
    args = ["--base-uri", spec.base_model.uri, "--heads-uri", spec.medusa.uri, "--cache-key", cache_key]
    if spec.base_model.revision:
        args += ["--base-revision", spec.base_model.revision]
    if spec.medusa.revision:
        args += ["--heads-revision", spec.medusa.revision]
    if spec.medusa.num_heads:
        args += ["--num-heads", str(spec.medusa.num_heads)]
    if spec.medusa.num_layers:
        args += ["--num-layers", str(spec.medusa.num_layers)]
    tree = effective_tree(spec)
    if "choices" in tree:
        args += ["--tree-choices", json.dumps(tree["choices"], separators=(",", ":"))]
    else:
        args += ["--tree-preset", tree["preset"]]
    return args + _engine_args(ctx)


def _base_build_args(ctx: RenderContext, cache_key: str) -> list[str]:
    args = ["--base-uri", ctx.spec.base_model.uri, "--base-only", "--cache-key", cache_key]
    if ctx.spec.base_model.revision:
        args += ["--base-revision", ctx.spec.base_model.revision]
    return args + _engine_args(ctx)


def build_job(ctx: RenderContext, revision: str, cache_key: str) -> dict[str, Any]:
    accesses = [base_model_access(ctx), heads_access(ctx), artifacts_access(ctx, writes=True)]
    return step_job(ctx, revision, "build", _build_args(ctx, cache_key), accesses, gpus=ctx.spec.engine.gpu.count)


def base_build_job(ctx: RenderContext, revision: str, cache_key: str) -> dict[str, Any]:
    """The base model's own engine, the baseline a candidate is measured against."""
    accesses = [base_model_access(ctx), artifacts_access(ctx, writes=True)]
    return step_job(ctx, revision, "build-base", _base_build_args(ctx, cache_key), accesses,
                    gpus=ctx.spec.engine.gpu.count)


def lookup_job(ctx: RenderContext, revision: str, cache_key: str) -> dict[str, Any]:
    """CPU only: is the engine already in the store? Runs before the GPU build Job and reads
    nothing but the store (the sources' URIs are only checked for their form)."""
    return step_job(ctx, revision, "lookup", [*_build_args(ctx, cache_key), "--lookup-only"],
                    [artifacts_access(ctx, writes=False)], command="build",
                    deadline_seconds=PACKAGE_DEADLINE_SECONDS, requests=LOOKUP_REQUESTS)


def base_lookup_job(ctx: RenderContext, revision: str, cache_key: str) -> dict[str, Any]:
    """CPU only: is the base model's engine already in the store?"""
    return step_job(ctx, revision, "lookup-base", [*_base_build_args(ctx, cache_key), "--lookup-only"],
                    [artifacts_access(ctx, writes=False)], command="build", deadline_seconds=PACKAGE_DEADLINE_SECONDS, requests=LOOKUP_REQUESTS)


def package_job(ctx: RenderContext, revision: str, engine: str, variant: str = "medusa") -> dict[str, Any]:
    step = "package" if variant == "medusa" else "package-base"
    args = [
        "--engine-uri", engine, "--backend", ctx.spec.engine.backend,
        "--output-uri", repository_uri(ctx, revision, variant),
        "--max-batch-size", str(ctx.spec.engine.max_batch_size), "--work-dir", WORK_DIR,
    ]
    return step_job(ctx, revision, step, args, [artifacts_access(ctx, writes=True)],
                    deadline_seconds=PACKAGE_DEADLINE_SECONDS)


def tokenizer_uri(ctx: RenderContext, revision: str) -> str:
    """Where the packaged repository keeps the tokenizer the validation counts tokens with."""
    repo = repository_uri(ctx, revision, "medusa")
    if ctx.spec.engine.backend == "reference":
        return f"{repo}/ensemble/1/base"
    return f"{repo}/preprocessing/1/tokenizer"


def validate_job(ctx: RenderContext, revision: str, baseline: bool) -> dict[str, Any]:
    v = ctx.spec.validation
    ns, model = ctx.model.namespace, ctx.model.name
    args = [
        "--candidate", names.revision_endpoint(model, ns, revision, "medusa"),
        "--tokenizer", tokenizer_uri(ctx, revision),
        "--report-uri", report_uri(ctx, revision),
        "--max-tokens", str(v.throughput.max_tokens),
        "--concurrency", ",".join(str(c) for c in v.throughput.concurrency),
        "--shots", str(v.accuracy.shots),
        "--max-examples-per-subject", str(v.accuracy.max_examples_per_subject),
        "--timeout-seconds", str(v.timeout_seconds),
    ]
    if baseline:
        args += ["--baseline", names.revision_endpoint(model, ns, revision, "base")]
    if v.accuracy.dataset_uri:
        args += ["--dataset-uri", v.accuracy.dataset_uri]
    if v.accuracy.subjects:
        args += ["--subjects", ",".join(v.accuracy.subjects)]
    if v.throughput.prompts_uri:
        args += ["--prompts-uri", v.throughput.prompts_uri]
    for flag, value in (("--min-score", v.accuracy.min_score), ("--max-drop-vs-base", v.accuracy.max_drop_vs_base),
                        ("--min-speedup", v.throughput.min_speedup)):
        if value is not None:
            args += [flag, str(value)]
    accesses = [artifacts_access(ctx, writes=True), *validation_inputs_access(ctx)]
    return step_job(ctx, revision, "validate", args, accesses, deadline_seconds=v.timeout_seconds)
