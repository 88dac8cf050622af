"""Every pod the operator renders is locked down (issue 22, "Pods the operator renders").

The `restricted` Pod Security Standard is written out here from its definition, independently of
the renderer; the cluster test (tests/integration/test_restricted_namespace.py) has the real API
server admit the same objects. On top of the standard: a read-only root filesystem where every
path a container writes to (HOME, a Job's --work-dir, the folder the model repository is copied
into) is a mounted emptyDir, and no ServiceAccount token.
"""

from __future__ import annotations

from typing import Any

import pytest

from rendered_objects import cases, pod_specs, render_case

# Volume types the restricted standard allows.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
CASES = cases()


def _arg(container: dict[str, Any], flag: str) -> str | None:
    args = container.get("args", [])
    return args[args.index(flag) + 1] if flag in args else None


def _writable_scratch(pod: dict[str, Any], container: dict[str, Any]) -> set[str]:
    """Mount paths of emptyDir volumes the container may write to."""
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    return {m["mountPath"] for m in container.get("volumeMounts", [])
            if m["name"] in empty_dirs and not m.get("readOnly")}


def _under(path: str, folders: set[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def check_restricted(pod: dict[str, Any]) -> list[str]:
    """What in ``pod`` the restricted Pod Security Standard (v1.2x and later) refuses."""
    problems = []
    pod_ctx = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {kinds}")
    if pod_ctx.get("runAsUser") == 0:
        problems.append("the pod runs as uid 0")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        name, ctx = container["name"], container.get("securityContext", {})
        if ctx.get("privileged"):
            problems.append(f"{name} is privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name} does not set allowPrivilegeEscalation: false")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name} does not drop ALL capabilities")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name} adds capabilities {caps['add']}")
        if not (ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True):
            problems.append(f"{name} may run as root (runAsNonRoot not true)")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"{name} runs as uid 0")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name} has seccomp profile {seccomp!r}")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            problems.append(f"{name} uses a host port")
    return problems


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_rendered_pod_meets_the_restricted_standard(case) -> None:
    for name, pod in pod_specs(render_case(case)):
        assert check_restricted(pod) == [], name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_pods_run_as_a_numeric_non_root_user_with_an_fs_group(case) -> None:
    for name, pod in pod_specs(render_case(case)):
        ctx = pod["securityContext"]
        for key in ("runAsUser", "runAsGroup", "fsGroup"):
            assert isinstance(ctx.get(key), int) and ctx[key] > 0, (name, key, ctx)
        assert pod["automountServiceAccountToken"] is False, name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_root_filesystems_are_read_only_and_every_written_path_is_a_mounted_empty_dir(case) -> None:
    for name, pod in pod_specs(render_case(case)):
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name}/{container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            scratch = _writable_scratch(pod, container)
            home = {e["name"]: e.get("value") for e in container.get("env", [])}.get("HOME")
            assert home and _under(home, scratch), f"{where}: HOME {home} is not on a writable emptyDir"
            assert _under("/tmp", scratch), f"{where}: /tmp is not a writable emptyDir"
            for flag in ("--work-dir", "--dest"):
                folder = _arg(container, flag)
                if folder is not None:
                    assert _under(folder, scratch), f"{where}: {flag} {folder} is not a writable emptyDir"


def test_the_cases_cover_every_backend_store_and_option() -> None:
    kinds = {m["kind"] for case in CASES for m in render_case(case)}
    assert kinds == {"Job", "Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject"}
    steps = {m["metadata"]["labels"].get("medusa.dev/step") for case in CASES for m in render_case(case)}
    assert {"lookup", "lookup-base", "build", "build-base", "package", "package-base", "validate"} <= steps
    variants = {m["metadata"]["labels"].get("medusa.dev/variant") for case in CASES for m in render_case(case)
                if m["kind"] == "Deployment"}
    assert variants == {"medusa", "base"}


# -- credentials and volumes only where they are used ("Serving pods mount only the artifact
# store's credentials; each Secret only into the containers that use it") -----------------------

THREE_STORES = {
    "baseModel": {"uri": "hf://meta-llama/Meta-Llama-3-8B-Instruct", "credentialsSecretRef": {"name": "hf-token"}},
    "medusa": {"uri": "gs://heads/llama3/", "credentialsSecretRef": {"name": "gcs-hmac"}},
    "artifacts": {"uri": "s3://engines/", "credentialsSecretRef": {"name": "aws"}},
    "validation": {"accuracy": {"datasetUri": "s3://evals/mmlu/"}},
}


def _containers(manifests: list[dict[str, Any]]) -> dict[str, tuple[dict, dict]]:
    """(pod spec, container) by step name for Jobs and by container name for the serving pod."""
    out = {}
    for manifest in manifests:
        if manifest["kind"] == "Job":
            pod = manifest["spec"]["template"]["spec"]
            out[manifest["metadata"]["labels"]["medusa.dev/step"]] = (pod, pod["containers"][0])
        elif manifest["kind"] == "Deployment" and manifest["metadata"]["labels"]["medusa.dev/variant"] == "medusa":
            pod = manifest["spec"]["template"]["spec"]
            for container in pod["initContainers"] + pod["containers"]:
                out[container["name"]] = (pod, container)
    return out


def _mounted_secrets(pod: dict[str, Any], container: dict[str, Any]) -> set[str]:
    volumes = {v["name"]: v for v in pod["volumes"]}
    found: set[str] = set()
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            found.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                found.add(source["secret"]["name"])
    return found


def _mounted_claims(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, bool]:
    """Claim name -> mounted writable."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {volumes[m["name"]]["persistentVolumeClaim"]["claimName"]: not m.get("readOnly")
            for m in container.get("volumeMounts", []) if "persistentVolumeClaim" in volumes[m["name"]]}


def test_each_secret_is_mounted_only_into_the_containers_that_use_it() -> None:
    from rendered_objects import Case

    spec = {**THREE_STORES, "engine": {"backend": "tensorrt-llm", "gpu": {"count": 1}}}
    containers = _containers(render_case(Case("three-stores", spec)))
    mounted = {name: _mounted_secrets(pod, c) for name, (pod, c) in containers.items()}
    assert mounted == {
        "lookup": {"aws"}, "lookup-base": {"aws"},  # only look the engine up in the store
        "build": {"hf-token", "gcs-hmac", "aws"}, "build-base": {"hf-token", "aws"},
        "package": {"aws"}, "package-base": {"aws"},
        "validate": {"aws"},  # the store and the s3:// dataset
        "fetch-model-repository": {"aws"},  # copies the repository from the store
        "triton": set(),  # serves from local disk
    }


def test_source_volumes_are_read_only_and_only_writers_may_write_the_store() -> None:
    from rendered_objects import Case

    spec = {"baseModel": {"uri": "pvc://models/llama3"}, "medusa": {"uri": "pvc://heads/llama3"},
            "artifacts": {"uri": "pvc://engines/cache"}, "engine": {"backend": "reference", "gpu": {"count": 0}},
            "validation": {"accuracy": {"datasetUri": "pvc://evals/mmlu"}}}
    containers = _containers(render_case(Case("pvc", spec)))
    claims = {name: _mounted_claims(pod, c) for name, (pod, c) in containers.items()}
    assert claims == {
        "lookup": {"engines": False}, "lookup-base": {"engines": False},
        "build": {"models": False, "heads": False, "engines": True},
        "build-base": {"models": False, "engines": True},
        "package": {"engines": True}, "package-base": {"engines": True},
        "validate": {"engines": True, "evals": False},
        "fetch-model-repository": {"engines": False},
        "triton": {},
    }
