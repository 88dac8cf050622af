"""The product installed on the local cluster the way a user installs it, running on the real node.

What `make demo` and the real-pod tests share:

- the project's images, built from the repo's Dockerfiles (hack/images.py) and imported into the
  real node's containerd (nothing is pulled);
- an S3-compatible store (hack/s3server.py) listening on the node address, so pods reach it,
  holding SmolLM2-135M-Instruct, Medusa heads trained for it (hack/testmodel.py), a small
  MMLU-format question set (tests/data/mmlu) and a few throughput prompts (tests/data/prompts);
- the operator installed by `helm install charts/medusa-operator` with the chart's own
  ServiceAccount and RBAC (two replicas, leader election), its pods and the Jobs it starts placed
  on the real node through chart values;
- model namespaces that enforce the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import yaml

from localcluster import REPO, LocalCluster
from realnode import NODE_IP, REAL_NODE_NAME, REAL_NODE_SELECTOR, REAL_NODE_TOLERATIONS  # noqa: F401 - for callers

CHART = REPO / "charts" / "medusa-operator"
EXAMPLE = REPO / "examples" / "smollm2-reference.yaml"
CRD_NAME = "medusamodels.inference.medusa.dev"
OPERATOR_NAMESPACE = "medusa-system"
RELEASE = "medusa-operator"
CREDENTIALS_SECRET = "s3-credentials"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
# What the real node's store holds, under these URIs.
BASE_URI = "s3://models/smollm2-135m-instruct/"
HEADS_URI = "s3://models/smollm2-135m-medusa/"
DATASET_URI = "s3://evals/mmlu/"
PROMPTS_URI = "s3://evals/prompts/"
ARTIFACTS_URI = "s3://engines/smollm2/"
# Gates a working candidate passes on the real node's two shared CPU cores. Tree verification costs
# more than a plain step on a CPU, so Medusa need not beat the base model there: the speedup is
# measured and reported, not gated (the example's minSpeedup is a GPU's). A 135M model is close to
# chance on MMLU, and a few questions per subject make its accuracy coarse: the allowed drop is wide.
CPU_GATES: dict[str, Any] = {"validation__throughput__minSpeedup": None, "validation__accuracy__maxDropVsBase": 0.25}
# What a CPU can decode in minutes: a calibrated (`auto`) tree of 31 nodes costs several times a
# one-token step there and calibrating it takes minutes, so the real node serves a four-node tree
# of the heads' best guesses; throughput is measured on a few short prompts.
CPU_TREE = [[0], [1], [0, 0], [0, 0, 0]]
CPU_THROUGHPUT_TOKENS = 24

class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Images:
    operator: str
    reference_builder: str  # the reference backend's Jobs and the serving pods' fetch
    reference_serving: str  # the reference backend's Triton containers; any pod that needs only Python


def load_images(cluster: LocalCluster) -> Images:
    """Build (or reuse, by content key) the operator and reference images and import them into the
    real node's containerd."""
    import images

    built = images.ensure_images(["operator", "reference-serving", "reference-builder"])
    for image in built.values():
        cluster.load_image(image.archive)
    return Images(operator=built["operator"].reference, reference_builder=built["reference-builder"].reference,
                  reference_serving=built["reference-serving"].reference)


def create_namespace(cluster: LocalCluster, name: str, labels: dict[str, str] | None = None) -> None:
    """A namespace that enforces the restricted Pod Security Standard (plus ``labels``)."""
    cluster.kubectl("apply", "--server-side", "--field-manager=medusa-local", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {**RESTRICTED, **(labels or {})}}}))


def helm(cluster: LocalCluster, *args: str) -> str:
    proc = subprocess.run([cluster.tool("helm"), *args], capture_output=True, text=True, env=cluster.env())
    if proc.returncode != 0:
        raise StackError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def adopt_crd(cluster: LocalCluster, release: str, namespace: str) -> None:
    """Hand a CRD applied earlier with kubectl to a Helm release (the procedure docs/helm.md gives)."""
    if cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    cluster.kubectl("label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl("annotate", "--overwrite", "crd", CRD_NAME,
                    f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={namespace}")


def operator_values(images: Images, watch_namespaces: list[str], replicas: int = 2) -> dict[str, Any]:
    repository, _, tag = images.operator.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicaCount": replicas,
        "watchMode": "namespaced",
        "watchNamespaces": watch_namespaces,
        "operator": {
            "referenceBuilderImage": images.reference_builder,
            "referenceServingImage": images.reference_serving,
            "logFormat": "json",
            "jobs": {"nodeSelector": REAL_NODE_SELECTOR, "tolerations": REAL_NODE_TOLERATIONS},
        },
        "nodeSelector": REAL_NODE_SELECTOR,
        "tolerations": REAL_NODE_TOLERATIONS,
        # One node: the replicas cannot spread, and the budget must not block a drain of it.
        "spreadReplicasOverNodes": False,
    }


def install_operator(cluster: LocalCluster, images: Images, watch_namespaces: list[str], replicas: int = 2,
                     timeout: str = "5m") -> None:
    """`helm upgrade --install` of the chart into OPERATOR_NAMESPACE, waiting for its pods."""
    create_namespace(cluster, OPERATOR_NAMESPACE)
    adopt_crd(cluster, RELEASE, OPERATOR_NAMESPACE)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
        yaml.safe_dump(operator_values(images, watch_namespaces, replicas), values)
        values.flush()
        helm(cluster, "upgrade", "--install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
             "--values", values.name, "--wait", "--timeout", timeout)


def uninstall_operator(cluster: LocalCluster) -> None:
    subprocess.run([cluster.tool("helm"), "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait"],
                   capture_output=True, text=True, env=cluster.env())


def upload_model_inputs(s3) -> None:
    """SmolLM2, its Medusa heads and the question set into the store, under the URIs above."""
    import testmodel

    model_dir = testmodel.smollm2_dir()
    s3.upload_folder(model_dir, BASE_URI)
    s3.upload_folder(testmodel.cached_test_heads(model_dir), HEADS_URI)
    s3.upload_folder(testmodel.DATASET_DIR, DATASET_URI)
    s3.upload_folder(testmodel.PROMPTS_DIR, PROMPTS_URI)
    bucket = ARTIFACTS_URI.removeprefix("s3://").split("/", 1)[0]
    client = s3.client()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)


def credentials_secret(cluster: LocalCluster, namespace: str, s3) -> None:
    """The Secret the model names: the store's keys and endpoint, as medusa-builder reads them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=medusa-local", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "Secret",
                                      "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
                                      "stringData": s3.env()}))


def subjects() -> list[str]:
    import testmodel

    return sorted(p.name.removesuffix("_test.csv") for p in (testmodel.DATASET_DIR / "data" / "test").glob("*_test.csv"))


def reference_model(name: str = "smollm2-medusa", **overrides: Any) -> dict[str, Any]:
    """examples/smollm2-reference.yaml, pointed at the local store and question set and placed on
    the real node (a CPU node: no GPUs). ``overrides`` are spec paths joined by ``__``; None removes
    the field."""
    manifest = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    manifest["metadata"] = {"name": name}
    spec = manifest["spec"]
    spec["baseModel"]["uri"], spec["medusa"]["uri"] = BASE_URI, HEADS_URI
    spec["artifacts"]["uri"] = ARTIFACTS_URI
    spec["engine"]["gpu"] = {"count": 0}
    spec["medusa"]["tree"] = {"choices": CPU_TREE}
    spec["validation"]["accuracy"].update(datasetUri=DATASET_URI, subjects=subjects(), maxExamplesPerSubject=4)
    spec["validation"]["throughput"].update(promptsUri=PROMPTS_URI, maxTokens=CPU_THROUGHPUT_TOKENS)
    spec["serving"]["nodeSelector"] = dict(REAL_NODE_SELECTOR)
    spec["serving"]["tolerations"] = [dict(t) for t in REAL_NODE_TOLERATIONS]
    for path, value in overrides.items():
        node = spec
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return manifest


def apply_model(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=user", "-n", namespace, "-f", "-",
                    input=json.dumps(manifest))


def model_status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "medusamodel", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}


def operator_logs(cluster: LocalCluster) -> str:
    """Every operator pod's log (current and previous containers)."""
    out = cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}",
                          "--all-containers", "--prefix", "--tail=-1", check=False)
    return out.stdout + out.stderr


def run_python_pod(cluster: LocalCluster, namespace: str, image: str, script: str, timeout: float = 180) -> str:
    """Runs ``python3 -c script`` in a one-off restricted pod on the real node; returns its log, or
    raises StackError with it when the pod fails."""
    name = f"client-{secrets.token_hex(3)}"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "nodeSelector": REAL_NODE_SELECTOR, "tolerations": REAL_NODE_TOLERATIONS,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "client", "image": image, "command": ["python3", "-c", script],
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    try:
        deadline = time.monotonic() + timeout
        phase = None
        while time.monotonic() < deadline:
            out = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False)
            phase = out.stdout.strip()
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        log = cluster.kubectl("logs", name, "-n", namespace, check=False).stdout
        if phase != "Succeeded":
            raise StackError(f"pod {name} ended {phase or 'nowhere'} after {timeout:.0f}s at most: {log[-2000:]}")
        return log
    finally:
        cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=False)


_GENERATE = """
import json, sys, urllib.request
body = json.dumps({"text_input": sys.argv[2], "max_tokens": int(sys.argv[3])}).encode()
request = urllib.request.Request(sys.argv[1] + "/v2/models/ensemble/generate", data=body,
                                 headers={"Content-Type": "application/json"})
print(json.dumps(json.load(urllib.request.urlopen(request, timeout=120))))
"""


def generate(cluster: LocalCluster, namespace: str, image: str, endpoint: str,
             prompt: str = "What is the capital of France?", max_tokens: int = 16) -> dict:
    """One generate request to ``endpoint`` (a Service URL) from a pod in ``namespace``."""
    script = f"import sys; sys.argv = {['-', endpoint, prompt, str(max_tokens)]!r}\n{_GENERATE}"
    return json.loads(run_python_pod(cluster, namespace, image, script).strip().splitlines()[-1])
