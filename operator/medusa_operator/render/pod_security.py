"""How every pod the operator renders is locked down: the `restricted` Pod Security Standard.

The builder and serving images run as one unprivileged user and group and write only to
emptyDir volumes mounted at the paths below; the root filesystem is read-only. HOME points into
the scratch folder, so tools that keep caches under ``~`` work with any image. No pod the operator
starts talks to the Kubernetes API, so none gets a ServiceAccount token.
"""

from __future__ import annotations

from typing import Any

# The user and group the builder and serving images run as (a uid of 0 would be refused anyway).
RUN_AS_USER = 1000
RUN_AS_GROUP = 1000

# The only writable paths in a container; each is an emptyDir.
TMP_DIR = "/tmp"  # HOME and caches
WORK_DIR = "/work"  # a Job's downloads and build outputs
MODEL_DIR = "/models"  # the Triton model repository a serving pod copies from the store
SHM_DIR = "/dev/shm"  # shared memory for Triton's Python backend and multi-GPU runs
SHM_SIZE_LIMIT = "8Gi"  # memory-backed: it counts against the pod's memory


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings. ``fsGroup`` makes mounted Secrets and volumes group-owned by the
    image's group, so the unprivileged user can read them (see jobs.CREDENTIALS_MODE)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        # Large model volumes are chowned once, not on every mount.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def scratch_volume(name: str, *, memory: bool = False, size_limit: str | None = None) -> dict[str, Any]:
    empty_dir: dict[str, Any] = {}
    if memory:
        empty_dir["medium"] = "Memory"
    if size_limit:
        empty_dir["sizeLimit"] = size_limit
    return {"name": name, "emptyDir": empty_dir}


TMP_VOLUME = "tmp"


def shared_memory() -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume and mount of a memory-backed /dev/shm larger than the runtime's 64 MiB."""
    return (scratch_volume("shm", memory=True, size_limit=SHM_SIZE_LIMIT), {"name": "shm", "mountPath": SHM_DIR})


def harden(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """``pod_spec`` with the pod and container security settings, the token switched off, a
    scratch /tmp for every container and HOME pointing into it."""
    out = dict(pod_spec)
    out["automountServiceAccountToken"] = False
    out["securityContext"] = pod_security_context()
    out["volumes"] = [*pod_spec.get("volumes", []), scratch_volume(TMP_VOLUME)]
    for key in ("initContainers", "containers"):
        if key in pod_spec:
            out[key] = [_harden_container(c) for c in pod_spec[key]]
    return out


def _harden_container(container: dict[str, Any]) -> dict[str, Any]:
    out = dict(container)
    out["securityContext"] = container_security_context()
    out["env"] = [*container.get("env", []), {"name": "HOME", "value": TMP_DIR}]
    out["volumeMounts"] = [*container.get("volumeMounts", []), {"name": TMP_VOLUME, "mountPath": TMP_DIR}]
    return out
