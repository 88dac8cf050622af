"""The project's images (hack/images.py), run the way the cluster runs them.

The reference images run the containers the operator renders for a reference model (the builder
image a Job's step, the serving image the Triton container of a serving Deployment) and the
operator image runs as the chart runs it: with their user, their environment, a read-only root filesystem, every capability
dropped, a tmpfs for each emptyDir they mount and no network but loopback. The first run builds
the images (minutes); later runs reuse them by key.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import textwrap
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

import images
from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.config import OperatorConfig
from medusa_operator.render import jobs, serving
from medusa_operator.render.context import ModelRef, RenderContext

pytestmark = [pytest.mark.images, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHART_VALUES = REPO / "charts" / "medusa-operator" / "values.yaml"
REFERENCE_EXAMPLE = REPO / "examples" / "smollm2-reference.yaml"
SERVER_READY_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def built() -> dict[str, images.Image]:
    if shutil.which("podman") is None or shutil.which("buildah") is None:
        pytest.skip("podman and buildah are missing: run hack/system-deps.sh")
    if os.geteuid() != 0:
        pytest.skip("the local image build runs as root")
    result = images.ensure_images()
    for image in result.values():
        images.ensure_loaded(image)
    return result


def _podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*images.container_command(), *args], env=images.container_env(),
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _as_rendered(pod: dict, container: dict, binds: dict[str, str] | None = None) -> list[str]:
    """``podman run`` options that run ``container`` of ``pod`` as a kubelet would, locked down
    whatever the pod says: its user, its environment, a read-only root, no capabilities, no
    privilege escalation, no network but loopback, a tmpfs for each emptyDir it mounts. ``binds``
    maps volume names to host folders standing in for what another container would have filled."""
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    options = ["--read-only", "--read-only-tmpfs=false", "--network=none", "--cap-drop=all",
               "--security-opt=no-new-privileges"]
    if "runAsUser" in security:
        options += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
    for variable in container.get("env", []):
        if "value" in variable:
            options += ["--env", f"{variable['name']}={variable['value']}"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        path = mount["mountPath"]
        if mount["name"] in (binds or {}):
            options += ["--volume", f"{binds[mount['name']]}:{path}{':ro' if mount.get('readOnly') else ''}"]
        elif "emptyDir" in volumes[mount["name"]] and path != "/dev/shm":  # podman always gives one
            # An emptyDir starts empty: no copy of what the image has at that path.
            options += ["--tmpfs", f"{path}:rw,mode=1777,notmpcopyup"]
    return options


def _image_user(image: images.Image) -> str:
    return json.loads(_podman("image", "inspect", image.reference).stdout)[0]["Config"]["User"]


def _reference_context(built: dict[str, images.Image]) -> RenderContext:
    doc = yaml.safe_load(REFERENCE_EXAMPLE.read_text())
    spec = MedusaModelSpec.model_validate(doc["spec"])
    assert spec.engine.backend == "reference"
    config = OperatorConfig(reference_builder_image=built["reference-builder"].reference,
                            reference_serving_image=built["reference-serving"].reference)
    return RenderContext(ModelRef(doc["metadata"]["name"], "models", "0000-uid"), spec, config)


def _rendered_job_container(built: dict[str, images.Image]) -> tuple[dict, dict]:
    job = jobs.package_job(_reference_context(built), "r1", "s3://bucket/engines/key")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == built["reference-builder"].reference
    return pod, pod["containers"][0]


def _rendered_serving_pod(built: dict[str, images.Image]) -> dict:
    deployment = serving.deployment(_reference_context(built), "r1", "s3://bucket/repo")
    pod = deployment["spec"]["template"]["spec"]
    # Triton runs from the serving image; the init container's fetch is a builder step.
    assert pod["containers"][0]["image"] == built["reference-serving"].reference
    assert [c["image"] for c in pod["initContainers"]] == [built["reference-builder"].reference]
    return pod


def test_images_are_cached_by_key(built):
    again = images.ensure_images()
    assert {name: image.key for name, image in again.items()} == {name: image.key for name, image in built.items()}
    assert all(image.build_seconds is None and image.exists for image in again.values()), again
    manifest = images.manifest(again)
    assert set(manifest["images"]) == {"operator", "reference-serving", "reference-builder"}
    assert "builder" in manifest["not_built"]


@pytest.mark.parametrize("name", ["operator", "reference-serving", "reference-builder"])
def test_images_declare_a_numeric_non_root_user(built, name):
    # runAsNonRoot can only be verified by the kubelet for a numeric user.
    user, _, group = _image_user(built[name]).partition(":")
    assert user.isdigit() and int(user) != 0, user
    assert not group or group.isdigit(), group


def test_operator_image_runs_as_the_chart_runs_it(built):
    values = yaml.safe_load(CHART_VALUES.read_text())
    pod = {"securityContext": values["podSecurityContext"], "volumes": [{"name": "tmp", "emptyDir": {}}]}
    # The chart's Deployment mounts one emptyDir, at /tmp.
    container = {"securityContext": values["securityContext"], "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    result = _podman("run", "--rm", *_as_rendered(pod, container), built["operator"].reference, "--help")
    assert "run" in result.stdout, result.stdout


def test_reference_builder_image_runs_a_builder_step_as_its_job_does(built):
    pod, container = _rendered_job_container(built)
    result = _podman("run", "--rm", *_as_rendered(pod, container), "--entrypoint", container["command"][0],
                     container["image"], container["args"][0], "--help")
    assert "usage" in result.stdout.lower(), result.stdout


def test_reference_builder_image_imports_its_steps_and_runtime_and_writes_only_to_scratch(built):
    probe = textwrap.dedent("""
        import os, json, pathlib
        import torch, transformers, matplotlib.pyplot, boto3, tritonclient.http
        import medusa_runtime.serving.triton_repo, medusa_builder.cli
        x = torch.ones(2, 2) @ torch.ones(2, 2)
        try:
            pathlib.Path("/opt/venv/probe").write_text("x")
            root_writable = True
        except OSError:
            root_writable = False
        print(json.dumps({"uid": os.getuid(), "sum": float(x.sum()), "root_writable": root_writable}))
    """)
    pod, container = _rendered_job_container(built)
    result = _podman("run", "--rm", *_as_rendered(pod, container), "--entrypoint", "python", container["image"],
                     "-c", probe)
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["uid"] != 0 and facts["sum"] == 8.0 and facts["root_writable"] is False, facts


# Issue 24: "the serving image [has] no boto3/matplotlib/kopf". What the Triton container's Python
# environment can import, asked inside it (the serving pods' own interpreter, not the pins).
SERVING_ENVIRONMENT_PROBE = """
import importlib.util, json
names = ["torch", "transformers", "medusa_runtime", "medusa_common", "boto3", "botocore", "matplotlib", "pyarrow",
         "kopf", "lightkube", "prometheus_client", "medusa_builder", "medusa_operator"]
print(json.dumps({name: importlib.util.find_spec(name) is not None for name in names}))
"""


def test_reference_serving_image_has_the_runtime_and_no_builder_or_operator_stack(built):
    pod = _rendered_serving_pod(built)
    triton = pod["containers"][0]
    result = _podman("run", "--rm", *_as_rendered(pod, triton), "--entrypoint", "python", triton["image"],
                     "-c", SERVING_ENVIRONMENT_PROBE)
    present = json.loads(result.stdout.strip().splitlines()[-1])
    assert {name for name, found in present.items() if found} == {
        "torch", "transformers", "medusa_runtime", "medusa_common"}, present


def test_reference_builder_image_is_built_on_the_serving_image(built):
    """A node that runs both stores the serving image's layers once."""
    def layers(image: images.Image) -> list[str]:
        return json.loads(_podman("image", "inspect", image.reference).stdout)[0]["RootFS"]["Layers"]

    serving_layers, builder_layers = layers(built["reference-serving"]), layers(built["reference-builder"])
    assert builder_layers[:len(serving_layers)] == serving_layers
    assert len(builder_layers) > len(serving_layers)


PROBE_CONFIG = """\
name: "probe"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
PROBE_MODEL = '''\
import contextlib
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import medusa_runtime.serving.triton_repo
        import torch

        self.facts = {"uid": os.getuid(), "torch": torch.__version__}

    def execute(self, requests):
        out = np.array([json.dumps(self.facts).encode()], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out)]) for _ in requests]
'''
# Runs inside the serving container: waits for readiness, then POSTs one request over loopback.
CLIENT = """
import json, sys, time, urllib.request
base, path, body, timeout = sys.argv[1:5]
deadline = time.time() + float(timeout)
while True:
    try:
        if urllib.request.urlopen(base + "/v2/health/ready", timeout=2).status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("not ready after " + timeout + " s")
    time.sleep(1)
request = urllib.request.Request(base + path, data=body.encode(), headers={"Content-Type": "application/json"})
print(json.dumps(json.load(urllib.request.urlopen(request, timeout=300))))
"""


@contextlib.contextmanager
def _serving(built: dict[str, images.Image], repository: Path) -> Iterator[Callable[[str, dict], dict]]:
    """The reference serving image running the Triton container the operator renders, with
    ``repository`` where the init container would have fetched it; yields ``post(path, body)``."""
    pod = _rendered_serving_pod(built)
    triton = pod["containers"][0]
    # The init container fills the models volume in a pod; here it is the test's repository.
    options = _as_rendered(pod, triton, {"models": str(repository)})
    http_port = next(p["containerPort"] for p in triton["ports"] if p["name"] == "http")
    name = f"medusa-images-test-{uuid.uuid4().hex[:8]}"
    _podman("run", "--detach", "--name", name, *options, "--entrypoint", triton["command"][0], triton["image"],
            *triton["args"])

    def post(path: str, body: dict) -> dict:
        result = _podman("exec", name, "python", "-c", CLIENT, f"http://127.0.0.1:{http_port}", path,
                         json.dumps(body), str(SERVER_READY_TIMEOUT_S), timeout=SERVER_READY_TIMEOUT_S + 300,
                         check=False)
        if result.returncode != 0:
            logs = _podman("logs", name, check=False)
            raise AssertionError(f"{result.stdout}\n{result.stderr}\nserver log:\n{logs.stdout}\n{logs.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    try:
        yield post
    finally:
        _podman("rm", "--force", "--time", "5", name, check=False)


def _readable_by_others(repository: Path) -> None:
    """In a pod the init container fetches the repository as the serving user. Here it holds hard
    links into the test caches, some owner-only (safetensors): give those files copies of their own
    that the container's user can read, leaving the cached files as they are."""
    for path in repository.rglob("*"):
        if path.is_file() and not path.stat().st_mode & stat.S_IROTH:
            copy = path.with_name(path.name + ".copy")
            shutil.copyfile(path, copy)
            copy.chmod(0o644)
            copy.replace(path)


def test_reference_serving_image_serves_a_python_backend_model_as_the_deployment_runs_it(built, tmp_path):
    repository = tmp_path / "repository"
    (repository / "probe" / "1").mkdir(parents=True)
    (repository / "probe" / "config.pbtxt").write_text(PROBE_CONFIG)
    (repository / "probe" / "1" / "model.py").write_text(PROBE_MODEL)
    started = time.monotonic()
    with _serving(built, repository) as post:
        body = {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
        facts = json.loads(post("/v2/models/probe/infer", body)["outputs"][0]["data"][0])
    assert facts["uid"] != 0 and facts["torch"], facts
    print(f"tritonserver answered after {time.monotonic() - started:.1f} s: {facts}")


@pytest.mark.model
def test_reference_serving_image_serves_smollm2_with_medusa_heads(built, tmp_path, smollm2_dir, medusa_heads_dir,
                                                                  medusa_tree):
    from medusa_runtime.serving.triton_repo import write_reference_repository
    from medusa_common.tree import REFERENCE_DRAFT_VOCAB

    repository = tmp_path / "repository"
    write_reference_repository(repository, base_dir=smollm2_dir, heads_dir=medusa_heads_dir, tree=medusa_tree,
                               device="cpu", draft_vocab=REFERENCE_DRAFT_VOCAB)
    _readable_by_others(repository)
    with _serving(built, repository) as post:
        answer = post("/v2/models/ensemble/generate", {"text_input": "What is the capital of France?",
                                                       "max_tokens": 16, "return_perf_metrics": True})
    assert answer["text_output"].strip(), answer
    assert answer["total_draft_tokens"] > 0, answer  # the Medusa heads drafted
    print(f"SmolLM2 with Medusa heads in the reference serving image: {answer}")
