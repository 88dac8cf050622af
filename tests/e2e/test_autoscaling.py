"""Autoscaling on tokens/second end to end: Triton -> Prometheus -> prometheus-adapter -> HPA.

Real: tritonserver serving the reference runtime (SmolLM2 + Medusa heads) under a bounded load
generator on loopback; Prometheus (Debian's binary) scraping it and evaluating the chart's rules
file; prometheus-adapter (built from tools/adapter) serving the chart's adapter rules through the
custom metrics API of the local kube-apiserver; the controller-manager's HPA controller scaling a
Deployment rendered by the operator.

Attributed: the one real tritonserver runs on this machine, not in a pod, so Prometheus's
relabelling gives its series the namespace, pod and medusa.dev/* labels of one kwok pod of the
model's Deployment (the labels the chart's PodMonitor attaches to a real serving pod). Every other
pod of the Deployment reports no metrics at all, which is the case the HPA must survive.

The API server reaches aggregated APIs through a Service, and Endpoints may not point at
loopback, so the adapter runs in a network namespace of its own, reached over a veth pair with
private addresses created (and removed) by this test; small TCP relays on the host end of the pair
give it the API server and Prometheus, which listen on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Pod

from fixtures.cluster import wait_for
from fixtures.processes import free_port
from localcluster import LocalCluster
from monitoring import pod_metric as pod_metrics, process, quantity

pytestmark = [pytest.mark.cluster, pytest.mark.triton, pytest.mark.model, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "charts" / "medusa-operator" / "files"
GPU = "NVIDIA-H100-80GB-HBM3"
# The veth pair's two ends: a /30 used only by this test.
HOST_ADDRESS, ADAPTER_ADDRESS = "10.213.47.1", "10.213.47.2"
ADAPTER_PORT = 6443
MIN_REPLICAS, MAX_REPLICAS = 2, 4
# Target tokens/s per replica. This CPU generates a few tokens/s at most, so the target is set far
# below that: any sustained load is many times the target and the HPA must go to maxReplicas.
TARGET = "20m"
LOAD_MAX_REQUESTS, LOAD_MAX_SECONDS, LOAD_CONCURRENCY, LOAD_MAX_TOKENS = 400, 240, 2, 12
# The operator's behaviour waits 5 minutes before scaling down and removes a pod per 2 minutes;
# the test shortens both windows so it ends in minutes (the policies' shape stays the same).
TEST_BEHAVIOR = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]},
    "scaleDown": {"stabilizationWindowSeconds": 15, "selectPolicy": "Min",
                  "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]},
}

APIService = create_global_resource("apiregistration.k8s.io", "v1", "APIService", "apiservices")


# -- plumbing ------------------------------------------------------------------------------------

class TcpRelay:
    """Accepts on ``listen`` and pipes each connection to ``target`` (both host:port pairs)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen)
        self.server.settimeout(0.5)
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.server.close()


NAMESPACES_FOLDER = Path("/run/netns")  # where ip netns keeps named namespaces


def ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


@contextlib.contextmanager
def network_namespace() -> Iterator[str]:
    """A network namespace joined to the host by a veth pair (HOST_ADDRESS <-> ADAPTER_ADDRESS)."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is missing (Debian package iproute2)")
    suffix = secrets.token_hex(3)
    netns, host_end, inner_end = f"medusa-hpa-{suffix}", f"mh{suffix}h", f"mh{suffix}n"
    # ip makes this folder (a mount on itself) for the first namespace and never removes it.
    made_folder = not NAMESPACES_FOLDER.exists()
    try:
        ip("netns", "add", netns)
    except RuntimeError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", inner_end)
        ip("link", "set", inner_end, "netns", netns)
        ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("-n", netns, "addr", "add", f"{ADAPTER_ADDRESS}/30", "dev", inner_end)
        ip("-n", netns, "link", "set", inner_end, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        yield netns
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        if made_folder and not any(NAMESPACES_FOLDER.iterdir()):
            subprocess.run(["umount", str(NAMESPACES_FOLDER)], capture_output=True)
            with contextlib.suppress(OSError):
                NAMESPACES_FOLDER.rmdir()


def prometheus_config(triton_metrics: str, namespace: str, pod: str, labels: dict[str, str], rules: Path) -> dict:
    """Scrapes the real tritonserver and attributes its series to ``pod`` by relabelling."""
    attributed = {"namespace": namespace, "pod": pod,
                  "medusa_dev_model": labels["medusa.dev/model"],
                  "medusa_dev_revision": labels["medusa.dev/revision"],
                  "medusa_dev_variant": labels["medusa.dev/variant"]}
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{
            "job_name": "medusa-serving",
            "static_configs": [{"targets": [urllib.parse.urlsplit(triton_metrics).netloc]}],
            "relabel_configs": [{"target_label": label, "replacement": value}
                                for label, value in attributed.items()],
        }],
    }


def adapter_kubeconfig(cluster: LocalCluster, server: str) -> dict:
    """The admin identity, through the relay; the API server's certificate names localhost."""
    pki = cluster.pki
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt"),
                                                   "tls-server-name": "localhost"}}],
        "users": [{"name": "admin", "user": {"client-certificate": str(pki / "admin.crt"),
                                             "client-key": str(pki / "admin.key")}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
    }


def apply(cluster: LocalCluster, manifest: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=medusa-tests", "-f", "-",
                    input=json.dumps(manifest))


@contextlib.contextmanager
def custom_metrics_api(cluster: LocalCluster, kube: Client, namespace: str) -> Iterator[None]:
    """Registers custom.metrics.k8s.io (v1beta1 and v1beta2) to a selector-less Service whose
    Endpoints point at the adapter inside the network namespace; unregisters it afterwards."""
    apply(cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "prometheus-adapter",
                                                                         "namespace": namespace},
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": ADAPTER_PORT}]}})
    apply(cluster, {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "prometheus-adapter",
                                                                           "namespace": namespace},
                    "subsets": [{"addresses": [{"ip": ADAPTER_ADDRESS}],
                                 "ports": [{"name": "https", "port": ADAPTER_PORT}]}]})
    names = []
    try:
        for version in ("v1beta1", "v1beta2"):
            name = f"{version}.custom.metrics.k8s.io"
            names.append(name)
            # The adapter's certificate is self-signed in this test, hence insecureSkipTLSVerify.
            apply(cluster, {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
                            "spec": {"group": "custom.metrics.k8s.io", "version": version,
                                     "service": {"name": "prometheus-adapter", "namespace": namespace, "port": 443},
                                     "insecureSkipTLSVerify": True, "groupPriorityMinimum": 100,
                                     "versionPriority": 200 if version == "v1beta2" else 100}})
        yield
    finally:
        for name in names:
            with contextlib.suppress(ApiError):
                kube.delete(APIService, name)


def api_service_available(kube: Client, name: str) -> bool:
    conditions = (kube.get(APIService, name).status or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def prometheus_value(url: str, query: str) -> float | None:
    result = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


class LoadGenerator:
    """A few client threads posting short generations to Triton, bounded in count and time."""

    def __init__(self, server, concurrency: int, max_requests: int, max_seconds: float, max_tokens: int) -> None:
        self.server, self.max_requests, self.max_tokens = server, max_requests, max_tokens
        self.deadline = time.monotonic() + max_seconds
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = self.completed = self.failed = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)]
        for thread in self.threads:
            thread.start()

    def _take(self) -> bool:
        with self.lock:
            if self.stop_event.is_set() or self.sent >= self.max_requests or time.monotonic() > self.deadline:
                return False
            self.sent += 1
            return True

    def _run(self, worker: int) -> None:
        prompts = ["Write a short poem about the sea.", "List three uses of copper.", "What is a neural network?"]
        n = 0
        while self._take():
            try:
                self.server.generate(prompts[(worker + n) % len(prompts)], max_tokens=self.max_tokens, timeout=120)
                with self.lock:
                    self.completed += 1
            except requests.RequestException:
                with self.lock:
                    self.failed += 1
            n += 1

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=150)


# -- the test ------------------------------------------------------------------------------------

def render_serving(namespace: str) -> tuple[dict, dict]:
    """The Deployment and HPA the operator renders for a small reference-backend model."""
    from medusa_operator.api.v1alpha1 import MedusaModelSpec
    from medusa_operator.config import OperatorConfig
    from medusa_operator.render import autoscaling, serving
    from medusa_operator.render.context import ModelRef, RenderContext

    spec = MedusaModelSpec.model_validate({
        "baseModel": {"uri": "s3://models/smollm2-135m-instruct/"},
        "medusa": {"uri": "s3://models/smollm2-heads/"},
        "engine": {"backend": "reference", "gpu": {"count": 1, "product": GPU}},
        "artifacts": {"uri": "s3://engines/"},
        "serving": {"autoscaling": {"minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS,
                                    "targetTokensPerSecondPerReplica": 1}},
    })
    ctx = RenderContext(ModelRef("smol", namespace, "0000-uid"), spec, OperatorConfig())
    revision = "a1b2c3d4e5"
    deployment = serving.deployment(ctx, revision, "s3://engines/repositories/a1b2c3d4e5/medusa",
                                    replicas=MIN_REPLICAS)
    hpa = autoscaling.horizontal_pod_autoscaler(ctx, revision)
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = TARGET
    hpa["spec"]["behavior"] = TEST_BEHAVIOR
    for manifest in (deployment, hpa):
        manifest["metadata"].pop("ownerReferences", None)
    return deployment, hpa


def ready_pods(kube: Client, namespace: str, selector: dict[str, str]) -> list[Pod]:
    pods = [p for p in kube.list(Pod, namespace=namespace, labels=selector) if p.metadata.deletionTimestamp is None]
    return [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]


def test_hpa_scales_on_tokens_per_second_from_triton_and_ignores_a_silent_pod(
        local_cluster: LocalCluster, kube: Client, namespace: str, triton_medusa, tmp_path: Path) -> None:
    prometheus_bin = shutil.which("prometheus")
    assert prometheus_bin, "prometheus is missing: run hack/system-deps.sh (Debian package prometheus)"
    adapter_bin = local_cluster.tool("prometheus-adapter")

    deployment, hpa = render_serving(namespace)
    apply(local_cluster, deployment)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pods = wait_for(lambda: len(ready_pods(kube, namespace, selector)) == MIN_REPLICAS
                    and ready_pods(kube, namespace, selector), timeout=60, what="the Deployment's kwok pods")
    measured, silent = sorted(pods, key=lambda p: (p.metadata.creationTimestamp, p.metadata.name))
    # The pod that carries the real server's series must survive every scale-down.
    kube.patch(Pod, measured.metadata.name, {"metadata": {"annotations": {
        "controller.kubernetes.io/pod-deletion-cost": "1000"}}}, namespace=namespace)

    rules = tmp_path / "medusa-rules.yaml"
    shutil.copy(FILES / "prometheus-rules.yaml", rules)
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(yaml.safe_dump(prometheus_config(triton_medusa.metrics_url, namespace,
                                                            measured.metadata.name, measured.metadata.labels, rules)))
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    adapter_config = tmp_path / "adapter.yaml"
    adapter_config.write_text(yaml.safe_dump(
        {"rules": yaml.safe_load((FILES / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]}))

    with contextlib.ExitStack() as stack:
        stack.enter_context(process([
            prometheus_bin, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h",
        ], tmp_path / "prometheus.log"))
        wait_for(lambda: _ready(prom_url), timeout=60, what=lambda: f"Prometheus to start:\n{(tmp_path / 'prometheus.log').read_text()[-2000:]}")

        netns = stack.enter_context(network_namespace())
        api_relay = TcpRelay((HOST_ADDRESS, 0), ("127.0.0.1", local_cluster.ports.apiserver))
        prom_relay = TcpRelay((HOST_ADDRESS, 0), ("127.0.0.1", prom_port))
        stack.callback(api_relay.close)
        stack.callback(prom_relay.close)
        kubeconfig = tmp_path / "adapter-kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(adapter_kubeconfig(
            local_cluster, f"https://{HOST_ADDRESS}:{api_relay.server.getsockname()[1]}")))
        (tmp_path / "adapter-certs").mkdir()
        adapter_log = tmp_path / "adapter.log"
        stack.enter_context(process([
            "ip", "netns", "exec", netns, adapter_bin,
            f"--prometheus-url=http://{HOST_ADDRESS}:{prom_relay.server.getsockname()[1]}/",
            f"--config={adapter_config}", "--metrics-relist-interval=10s",
            f"--lister-kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", f"--bind-address={ADAPTER_ADDRESS}",
            f"--secure-port={ADAPTER_PORT}", f"--cert-dir={tmp_path / 'adapter-certs'}", "--v=2",
        ], adapter_log))
        stack.enter_context(custom_metrics_api(local_cluster, kube, namespace))
        wait_for(lambda: all(api_service_available(kube, f"{v}.custom.metrics.k8s.io") for v in ("v1beta1", "v1beta2")),
                 timeout=90, what=lambda: f"the custom metrics APIService:\n{adapter_log.read_text()[-3000:]}")

        # The idle server's series reach the custom metrics API for the measured pod only.
        answer = wait_for(lambda: pod_metrics(local_cluster, namespace), timeout=120,
                          what=lambda: f"medusa_tokens_per_second in the custom metrics API:\n"
                                       f"{adapter_log.read_text()[-3000:]}")
        assert set(answer) == {measured.metadata.name}

        apply(local_cluster, hpa)
        hpa_name = hpa["metadata"]["name"]

        def hpa_state() -> str:
            status = kube.get(HorizontalPodAutoscaler, hpa_name, namespace=namespace).status
            return json.dumps(status.to_dict() if status else {}, default=str)[:2000]

        load = LoadGenerator(triton_medusa, LOAD_CONCURRENCY, LOAD_MAX_REQUESTS, LOAD_MAX_SECONDS, LOAD_MAX_TOKENS)
        try:
            wait_for(lambda: kube.get(Deployment, deployment["metadata"]["name"], namespace=namespace).spec.replicas
                     == MAX_REPLICAS, timeout=180, interval=2, what=lambda: f"scale-up to {MAX_REPLICAS}: {hpa_state()}")
            under_load = pod_metrics(local_cluster, namespace)
            tokens_per_second = prometheus_value(
                prom_url, f'sum(medusa:tokens_per_second:rate1m{{namespace="{namespace}"}})')
        finally:
            load.stop()
        assert load.completed > 0 and load.failed == 0, (load.completed, load.failed)
        # Only the measured pod has a value; the silent pods never blocked the decision.
        assert set(under_load) == {measured.metadata.name} and under_load[measured.metadata.name] > quantity(TARGET)
        assert silent.metadata.name not in under_load
        assert tokens_per_second and tokens_per_second > 0
        status = kube.get(HorizontalPodAutoscaler, hpa_name, namespace=namespace).status
        assert status.currentReplicas == MAX_REPLICAS or status.desiredReplicas == MAX_REPLICAS

        # Every finished request was counted once by the server's histogram.
        finished = f'sum(nv_llm_output_token_len_count{{namespace="{namespace}"}})'
        wait_for(lambda: prometheus_value(prom_url, finished) is not None
                 and prometheus_value(prom_url, finished) >= load.completed, timeout=30,
                 what="the completed requests in Prometheus")
        tokens = prometheus_value(prom_url, f'sum(nv_llm_output_token_len_sum{{namespace="{namespace}"}})')
        assert 0 < tokens <= LOAD_MAX_TOKENS * prometheus_value(prom_url, finished)

        # With the load gone the rate falls to zero and the HPA returns to minReplicas, keeping the
        # pod that reports metrics.
        wait_for(lambda: kube.get(Deployment, deployment["metadata"]["name"], namespace=namespace).spec.replicas
                 == MIN_REPLICAS, timeout=240, interval=2, what=lambda: f"scale-down to {MIN_REPLICAS}: {hpa_state()}")
        wait_for(lambda: pod_metrics(local_cluster, namespace) == {measured.metadata.name: 0.0}, timeout=90,
                 what="the measured pod's tokens/s to fall to zero")
        remaining = wait_for(lambda: len(ready_pods(kube, namespace, selector)) == MIN_REPLICAS
                             and ready_pods(kube, namespace, selector), timeout=60, what="pods after scale-down")
        assert measured.metadata.name in {p.metadata.name for p in remaining}
        kube.delete(HorizontalPodAutoscaler, hpa_name, namespace=namespace)


def _ready(prometheus_url: str) -> bool:
    try:
        return requests.get(f"{prometheus_url}/-/ready", timeout=2).ok
    except requests.RequestException:
        return False
