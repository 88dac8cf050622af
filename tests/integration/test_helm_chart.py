"""The Helm chart against the real local cluster with the real `helm` client: rendered manifests
pass the API server's own validation in both watch modes; install, upgrade with a changed CRD and
uninstall behave as docs/helm.md says. The operator image cannot run here: kwok plays its pods."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lightkube import Client
from lightkube.resources.core_v1 import Namespace

from fixtures.cluster import wait_for
from localcluster import LocalCluster
from realstack import CRD_NAME, adopt_crd

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "medusa-operator"
CRD_FILE = REPO / "crds" / f"{CRD_NAME}.yaml"
RELEASE = "medusa-operator"


def helm(cluster: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([cluster.tool("helm"), *args], capture_output=True, text=True, env=cluster.env())
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def kubectl_json(cluster: LocalCluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def manifests(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def crd_established(cluster: LocalCluster) -> bool:
    crd = kubectl_json(cluster, "get", "crd", CRD_NAME)
    return any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"].get("conditions", []))


def apply_repo_crd(cluster: LocalCluster) -> None:
    """Apply crds/ server-side, taking every field back from Helm, so the shared CRD matches the repo."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_for(lambda: crd_established(cluster), timeout=60, what="the CRD to be established")


@pytest.fixture
def extra_namespace(kube: Client) -> Iterator[str]:
    """A second watched namespace for namespaced mode."""
    name = f"watched-{secrets.token_hex(3)}"
    kube.create(Namespace(metadata={"name": name, "labels": {"medusa.dev/test": "true"}}))
    yield name
    kube.delete(Namespace, name)


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_rendered_chart_passes_server_side_validation(mode: str, local_cluster: LocalCluster, namespace: str,
                                                      extra_namespace: str) -> None:
    apply_repo_crd(local_cluster)
    sets = [] if mode == "cluster" else ["--set", "watchMode=namespaced",
                                         "--set", f"watchNamespaces={{{namespace},{extra_namespace}}}"]
    rendered = helm(local_cluster, "template", RELEASE, str(CHART), "--namespace", namespace, *sets).stdout
    kinds = {doc["kind"] for doc in manifests(rendered)}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "Service", "Role", "RoleBinding",
            "PodDisruptionBudget"} <= kinds
    assert ({"ClusterRole", "ClusterRoleBinding"} <= kinds) == (mode == "cluster")

    proc = local_cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                                 input=rendered, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(manifests(rendered))


def modified_chart(tmp_path: Path) -> Path:
    """A copy of the chart whose CRD has one more printer column, as a new chart version would."""
    chart = tmp_path / "medusa-operator"
    shutil.copytree(CHART, chart)
    crd_file = chart / "files" / f"{CRD_NAME}.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    for version in crd["spec"]["versions"]:
        version.setdefault("additionalPrinterColumns", []).append(
            {"name": "BACKEND", "type": "string", "jsonPath": ".spec.engine.backend", "priority": 1,
             "description": "The engine backend."})
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def printer_columns(cluster: LocalCluster) -> list[str]:
    crd = kubectl_json(cluster, "get", "crd", CRD_NAME)
    return [c["name"] for c in crd["spec"]["versions"][0].get("additionalPrinterColumns", [])]


def can_i(cluster: LocalCluster, service_account: str, verb: str, resource: str, namespace: str,
          subresource: str | None = None) -> bool:
    extra = [f"--subresource={subresource}"] if subresource else []
    proc = cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={service_account}",
                           check=False)
    return proc.stdout.strip() == "yes"


def still_there(cluster: LocalCluster, obj: dict) -> bool:
    args = ["get", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", "-o", "name"]
    if "namespace" in obj["metadata"]:
        args += ["-n", obj["metadata"]["namespace"]]
    return bool(cluster.kubectl(*args).stdout.strip())


@pytest.fixture
def release_namespace(namespace: str, local_cluster: LocalCluster) -> Iterator[str]:
    """The release's namespace, enforcing the restricted Pod Security Standard; the CRD is restored after."""
    local_cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    yield namespace
    helm(local_cluster, "uninstall", RELEASE, "--namespace", namespace, "--wait", check=False)
    apply_repo_crd(local_cluster)


def test_install_upgrade_and_uninstall(local_cluster: LocalCluster, release_namespace: str, extra_namespace: str,
                                       tmp_path: Path) -> None:
    ns = release_namespace
    service_account = f"system:serviceaccount:{ns}:{RELEASE}"
    adopt_crd(local_cluster, RELEASE, ns)

    # Install in namespaced mode, watching the release namespace and one more.
    helm(local_cluster, "install", RELEASE, str(CHART), "--namespace", ns, "--wait", "--timeout", "120s",
         "--set", "watchMode=namespaced", "--set", f"watchNamespaces={{{ns},{extra_namespace}}}")
    wait_for(lambda: crd_established(local_cluster), timeout=60, what="the CRD to be established")
    deployment = kubectl_json(local_cluster, "-n", ns, "get", "deployment", RELEASE)
    assert deployment["status"].get("readyReplicas") == 2
    pods = kubectl_json(local_cluster, "-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] in {"gpu-node-0", "gpu-node-1", "cpu-node-0"}
    assert can_i(local_cluster, service_account, "create", "jobs.batch", extra_namespace)
    assert can_i(local_cluster, service_account, "patch", "medusamodels.inference.medusa.dev", ns, "status")
    assert not can_i(local_cluster, service_account, "patch", "medusamodels.inference.medusa.dev", ns)
    assert can_i(local_cluster, service_account, "get", "secrets", ns)
    assert not can_i(local_cluster, service_account, "list", "secrets", ns)
    assert not can_i(local_cluster, service_account, "watch", "secrets", ns)
    assert not can_i(local_cluster, service_account, "create", "jobs.batch", "default")
    assert not can_i(local_cluster, service_account, "create", "secrets", ns)
    assert not can_i(local_cluster, service_account, "update", "leases.coordination.k8s.io/someone-else", ns)
    assert can_i(local_cluster, service_account, "update", f"leases.coordination.k8s.io/{RELEASE}", ns)
    privileged_pod = local_cluster.kubectl("-n", ns, "run", "privileged", "--image=example.invalid/x:1",
                                           "--privileged", "--dry-run=server", check=False)
    assert "violates PodSecurity" in privileged_pod.stderr, "the namespace must enforce the restricted standard"
    first_manifest = manifests(helm(local_cluster, "get", "manifest", RELEASE, "--namespace", ns).stdout)
    assert "BACKEND" not in printer_columns(local_cluster)

    # Upgrade to a chart whose CRD changed, switching to cluster mode on the way.
    helm(local_cluster, "upgrade", RELEASE, str(modified_chart(tmp_path)), "--namespace", ns, "--wait",
         "--timeout", "120s", "--set", "watchMode=cluster")
    assert "BACKEND" in printer_columns(local_cluster)
    wait_for(lambda: crd_established(local_cluster), timeout=60, what="the upgraded CRD to be established")
    assert can_i(local_cluster, service_account, "create", "jobs.batch", "default")
    assert not local_cluster.kubectl("-n", extra_namespace, "get", "role", RELEASE, "--ignore-not-found",
                                     "-o", "name").stdout.strip()
    second_manifest = manifests(helm(local_cluster, "get", "manifest", RELEASE, "--namespace", ns).stdout)

    # Upgrading back to the chart in the repository removes the column again.
    helm(local_cluster, "upgrade", RELEASE, str(CHART), "--namespace", ns, "--wait", "--timeout", "120s")
    assert "BACKEND" not in printer_columns(local_cluster)

    # Uninstall: every object of every revision is gone, except the CRD, which the keep policy holds.
    helm(local_cluster, "uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "120s")
    created = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o
               for o in first_manifest + second_manifest}
    left = [key for key, o in created.items()
            if o["kind"] != "CustomResourceDefinition" and still_there(local_cluster, o)]
    assert left == []
    wait_for(lambda: not kubectl_json(local_cluster, "-n", ns, "get", "pods", "-l",
                                      f"app.kubernetes.io/instance={RELEASE}")["items"],
             timeout=60, what="the operator pods to be deleted")
    assert not kubectl_json(local_cluster, "-n", ns, "get", "secrets", "-l", "owner=helm")["items"]
    crd = kubectl_json(local_cluster, "get", "crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd_established(local_cluster)
