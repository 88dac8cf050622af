"""Autoscaling's moving parts beside the local cluster: Prometheus and prometheus-adapter.

Both run as processes on this machine, the way a cluster add-on would run in pods:

- Prometheus (Debian's binary) runs the project's own scrape job (deploy/prometheus/prometheus.yml),
  scrapes the serving pods' Triton metrics port over the node's pod network and evaluates the
  chart's recording rules (charts/medusa-operator/files/prometheus-rules.yaml). Debian builds
  Prometheus without Kubernetes service discovery, so a thread here lists the pods through the API
  server and hands Prometheus, through a file, the targets and `__meta_kubernetes_*` labels that
  Kubernetes pod discovery would give: the job's relabelling runs unchanged.
- prometheus-adapter (built from tools/adapter) serves the chart's adapter rules as the custom
  metrics API. The API server reaches it through an APIService and a selector-less Service whose
  Endpoints name the node address the adapter listens on (Endpoints may not point at loopback).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from localcluster import REPO, LocalCluster

SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
CHART_FILES = REPO / "charts" / "medusa-operator" / "files"
RULES = CHART_FILES / "prometheus-rules.yaml"
ADAPTER_VALUES = CHART_FILES / "prometheus-adapter-values.yaml"
CUSTOM_METRICS_VERSIONS = ("v1beta1", "v1beta2")
ADAPTER_NAMESPACE = "kube-system"
ADAPTER_SERVICE = "medusa-prometheus-adapter"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{what} not ready in {timeout:.0f}s; log tail:\n{tail}")


@contextlib.contextmanager
def process(command: list[str], log_path: Path) -> Iterator[subprocess.Popen]:
    """``command`` running in its own session, its output in ``log_path``; stopped on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def prometheus_config(targets_file: Path, scrape_interval: str = "5s") -> dict:
    """The project's serving scrape job, its pods read from ``targets_file`` (see PodTargets),
    and the chart's recording rules."""
    shipped = yaml.safe_load(SCRAPE_CONFIG.read_text())
    job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "medusa-serving")
    job = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
    job.update(scrape_interval=scrape_interval,
               file_sd_configs=[{"files": [str(targets_file)], "refresh_interval": scrape_interval}])
    return {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(RULES)], "scrape_configs": [job]}


def _meta_name(label: str) -> str:
    """A Kubernetes label key as Prometheus's discovery spells it inside a meta label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def pod_targets(pods: list[dict]) -> list[dict]:
    """What Kubernetes pod discovery (role: pod) gives for ``pods``: a target per container port of
    each pod with an address, and the meta labels the project's scrape job reads."""
    groups = []
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if not ip:
            continue
        meta, labels = pod["metadata"], pod["metadata"].get("labels", {})
        common = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
                  "__meta_kubernetes_pod_phase": pod["status"].get("phase", "")}
        for key, value in labels.items():
            common[f"__meta_kubernetes_pod_label_{_meta_name(key)}"] = value
            common[f"__meta_kubernetes_pod_labelpresent_{_meta_name(key)}"] = "true"
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", []):
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **common, "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])}})
    return groups


@contextlib.contextmanager
def discovering_pods(cluster: LocalCluster, namespaces: list[str], targets_file: Path,
                     interval: float = 2.0) -> Iterator[None]:
    """Keep ``targets_file`` listing the pods of ``namespaces`` (pod_targets) until the block ends."""
    stop = threading.Event()

    def refresh() -> None:
        pods = []
        for namespace in namespaces:
            out = cluster.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False)
            if out.returncode == 0:
                pods += json.loads(out.stdout)["items"]
        partial = targets_file.with_suffix(".partial")
        partial.write_text(json.dumps(pod_targets(pods)))
        partial.replace(targets_file)  # Prometheus never reads half a file

    def loop() -> None:
        while not stop.wait(interval):
            refresh()

    refresh()
    thread = threading.Thread(target=loop, name="pod-discovery", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False


@contextlib.contextmanager
def running_prometheus(cluster: LocalCluster, workdir: Path, namespaces: list[str]) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is missing: run hack/system-deps.sh (Debian package prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    targets = workdir / "pods.json"
    config.write_text(yaml.safe_dump(prometheus_config(targets)))
    port = _free_port("127.0.0.1")
    log = workdir / "prometheus.log"
    with discovering_pods(cluster, namespaces, targets), \
            process([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"], log):
        prometheus = Prometheus(f"http://127.0.0.1:{port}")
        _wait(prometheus.ready, 60, "Prometheus", log)
        yield prometheus


def _apply(cluster: LocalCluster, manifest: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=medusa-local", "-f", "-",
                    input=json.dumps(manifest))


def _api_services_available(cluster: LocalCluster) -> bool:
    for version in CUSTOM_METRICS_VERSIONS:
        out = cluster.kubectl("get", "apiservice", f"{version}.custom.metrics.k8s.io", "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        if not any(c["type"] == "Available" and c["status"] == "True" for c in conditions):
            return False
    return True


@contextlib.contextmanager
def running_custom_metrics_api(cluster: LocalCluster, prometheus: Prometheus, workdir: Path,
                               host: str) -> Iterator[None]:
    """prometheus-adapter on ``host`` (an address the API server reaches that is not loopback),
    registered as custom.metrics.k8s.io; unregistered afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    config = workdir / "adapter.yaml"
    config.write_text(yaml.safe_dump({"rules": rules}))
    (workdir / "certs").mkdir(exist_ok=True)
    port = _free_port(host)
    log = workdir / "adapter.log"
    kubeconfig = str(cluster.kubeconfig)
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([
            cluster.tool("prometheus-adapter"), f"--prometheus-url={prometheus.url}/", f"--config={config}",
            "--metrics-relist-interval=10s", f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={host}", f"--secure-port={port}", f"--cert-dir={workdir / 'certs'}", "--v=1",
        ], log))
        _apply(cluster, {"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": ADAPTER_SERVICE, "namespace": ADAPTER_NAMESPACE},
                         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}})
        _apply(cluster, {"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": ADAPTER_SERVICE, "namespace": ADAPTER_NAMESPACE},
                         "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port}]}]})
        stack.callback(cluster.kubectl, "delete", "service", ADAPTER_SERVICE, "-n", ADAPTER_NAMESPACE,
                       "--ignore-not-found", check=False)
        for version in CUSTOM_METRICS_VERSIONS:
            name = f"{version}.custom.metrics.k8s.io"
            # The adapter's serving certificate is self-signed, made at its start.
            _apply(cluster, {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                             "metadata": {"name": name},
                             "spec": {"group": "custom.metrics.k8s.io", "version": version,
                                      "service": {"name": ADAPTER_SERVICE, "namespace": ADAPTER_NAMESPACE,
                                                  "port": 443},
                                      "insecureSkipTLSVerify": True, "groupPriorityMinimum": 100,
                                      "versionPriority": 200 if version == "v1beta2" else 100}})
            stack.callback(cluster.kubectl, "delete", "apiservice", name, "--ignore-not-found", check=False)
        _wait(lambda: _api_services_available(cluster), 120, "the custom metrics API", log)
        yield


def pod_metric(cluster: LocalCluster, namespace: str, metric: str = "medusa_tokens_per_second") -> dict[str, float]:
    """``metric`` of every pod of ``namespace`` as the custom metrics API answers it."""
    out = cluster.kubectl("get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/{metric}",
                          check=False)
    if out.returncode != 0:
        return {}
    return {item["describedObject"]["name"]: quantity(item["value"]) for item in json.loads(out.stdout)["items"]}


def quantity(text: str) -> float:
    """A Kubernetes quantity as the custom metrics API writes them (``1500m``, ``2``, ``3k``)."""
    suffixes = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6}
    if text and text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    return float(text)
