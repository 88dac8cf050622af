"""The local cluster's real node (hack/realnode.py): a kubelet with containerd, runc and CNI,
kube-proxy and CoreDNS, running real containers from locally built images beside kwok's fake GPU
nodes. Nothing here is scripted: the containers run, and what the tests read back (termination
messages, logs, HTTP answers) is what the containers wrote."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node, Pod

import nodeimages
from fixtures.cluster import on_real_node, wait_for
from localcluster import NODE_IP, REAL_NODE_NAME, REAL_NODE_SELECTOR, LocalCluster, RealNode

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def _job(name: str, image: str, command: list[str]) -> Job:
    return from_dict({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": on_real_node({
            "restartPolicy": "Never",
            "containers": [{"name": "step", "image": image, "imagePullPolicy": "Never", "command": command}],
        })}},
    })


def _job_finished(kube: Client, name: str, namespace: str) -> str | None:
    job = kube.get(Job, name, namespace=namespace)
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def _job_pod(kube: Client, name: str, namespace: str) -> Pod:
    return next(iter(kube.list(Pod, namespace=namespace, labels={"job-name": name})))


def _describe_pods(kube: Client, namespace: str) -> str:
    return "; ".join(f"{p.metadata.name} on {p.spec.nodeName}: {p.status.phase} "
                     f"{[c.state for c in (p.status.containerStatuses or [])]}"
                     for p in kube.list(Pod, namespace=namespace))


def test_real_node_is_ready_labelled_and_tainted(kube: Client, real_node: RealNode) -> None:
    node = kube.get(Node, REAL_NODE_NAME)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert REAL_NODE_SELECTOR.items() <= node.metadata.labels.items()
    assert [(t.key, t.effect) for t in node.spec.taints or []] == [("medusa.dev/real-node", "NoSchedule")]
    assert node.status.nodeInfo.containerRuntimeVersion.startswith("containerd://2.")


def test_job_runs_in_a_container_and_its_termination_message_reaches_the_pod_status(
        local_cluster: LocalCluster, kube: Client, namespace: str, probe_image: str) -> None:
    """A run-to-completion Job on the real node: the message the container writes to
    /dev/termination-log, its exit code and its log come back through the kubelet."""
    message = json.dumps({"schemaVersion": 1, "step": "package", "ok": True, "result": {"uname": "from the pod"}})
    script = f"uname -s; printf '%s' '{message}' > /dev/termination-log"
    kube.create(_job("step", probe_image, ["sh", "-c", script]), namespace=namespace)
    finished = wait_for(lambda: _job_finished(kube, "step", namespace), timeout=60,
                        what=lambda: f"the Job to finish: {_describe_pods(kube, namespace)}")
    assert finished == "Complete"

    pod = _job_pod(kube, "step", namespace)
    assert pod.spec.nodeName == REAL_NODE_NAME
    status = pod.status.containerStatuses[0]
    assert status.containerID.startswith("containerd://")
    assert status.imageID  # the runtime reports the image it ran
    assert status.state.terminated.exitCode == 0
    assert json.loads(status.state.terminated.message) == json.loads(message)
    logs = local_cluster.kubectl("logs", "-n", namespace, pod.metadata.name).stdout
    assert logs.strip() == "Linux"


def test_failing_job_reports_its_exit_code(kube: Client, namespace: str, probe_image: str) -> None:
    kube.create(_job("fails", probe_image, ["sh", "-c", "echo bad input > /dev/termination-log; exit 2"]),
                namespace=namespace)
    assert wait_for(lambda: _job_finished(kube, "fails", namespace), timeout=60,
                    what=lambda: f"the Job to fail: {_describe_pods(kube, namespace)}") == "Failed"
    terminated = _job_pod(kube, "fails", namespace).status.containerStatuses[0].state.terminated
    assert (terminated.exitCode, terminated.message.strip()) == (2, "bad input")


def test_deployment_behind_a_service_is_reached_by_dns_name_from_another_pod(
        local_cluster: LocalCluster, kube: Client, namespace: str, probe_image: str) -> None:
    kube.create(from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": on_real_node({
                "containers": [{
                    "name": "web", "image": probe_image, "imagePullPolicy": "Never",
                    "command": ["probe", "serve", ":8080", "hello"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                }],
            })},
        },
    }), namespace=namespace)
    kube.create(from_dict({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }), namespace=namespace)
    wait_for(lambda: (kube.get(Deployment, "web", namespace=namespace).status.readyReplicas or 0) == 2,
             timeout=60, what=lambda: f"2 ready web replicas: {_describe_pods(kube, namespace)}")

    # The short name goes through the pod's DNS search path; the full name needs none.
    for url in ("http://web/", f"http://web.{namespace}.svc.cluster.local/"):
        name = f"client-{len(url)}"
        kube.create(_job(name, probe_image, ["probe", "get", url]), namespace=namespace)
        assert wait_for(lambda: _job_finished(kube, name, namespace), timeout=60,
                        what=lambda: f"the client Job: {_describe_pods(kube, namespace)}") == "Complete", \
            local_cluster.kubectl("logs", "-n", namespace, f"job/{name}", check=False).stderr
        answer = local_cluster.kubectl("logs", "-n", namespace, f"job/{name}").stdout
        assert answer.startswith("hello from web-"), answer


def test_pod_reaches_the_api_server_through_the_kubernetes_service(
        local_cluster: LocalCluster, kube: Client, namespace: str, probe_image: str) -> None:
    """In-cluster clients (the operator's pods, its Jobs) find the API server the standard way:
    the kubernetes Service by DNS name, TLS verified against the service account's CA."""
    secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
    kube.create(_job("apicall", probe_image, ["probe", "get", "https://kubernetes.default.svc/version",
                                              f"{secrets}/ca.crt", f"{secrets}/token"]), namespace=namespace)
    finished = wait_for(lambda: _job_finished(kube, "apicall", namespace), timeout=60,
                        what=lambda: f"the Job to finish: {_describe_pods(kube, namespace)}")
    logs = local_cluster.kubectl("logs", "-n", namespace, "job/apicall").stdout
    assert finished == "Complete", logs
    version = json.loads(logs)
    server = json.loads(local_cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"] == server["gitVersion"]


def test_pods_without_the_toleration_never_land_on_the_real_node(kube: Client, namespace: str) -> None:
    # A pod that asks for the real node but does not tolerate its taint stays Pending...
    kube.create(from_dict({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "untolerated"},
        "spec": {"nodeSelector": REAL_NODE_SELECTOR,
                 "containers": [{"name": "c", "image": "example.invalid/x:1"}]},
    }), namespace=namespace)

    def refused() -> str | None:
        conds = {c.type: c for c in (kube.get(Pod, "untolerated", namespace=namespace).status.conditions or [])}
        cond = conds.get("PodScheduled")
        return cond.message if cond is not None and cond.reason == "Unschedulable" else None

    assert "untolerated taint" in wait_for(refused, timeout=30, what="the scheduler to refuse the pod")
    # ...and pods that name no node all go to kwok's nodes, however many there are.
    kube.create(from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "anywhere"},
        "spec": {"replicas": 12, "selector": {"matchLabels": {"app": "anywhere"}},
                 "template": {"metadata": {"labels": {"app": "anywhere"}},
                              "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1"}]}}},
    }), namespace=namespace)
    wait_for(lambda: (kube.get(Deployment, "anywhere", namespace=namespace).status.readyReplicas or 0) == 12,
             what="12 ready replicas on kwok's nodes")
    nodes = {p.spec.nodeName for p in kube.list(Pod, namespace=namespace, labels={"app": "anywhere"})}
    assert REAL_NODE_NAME not in nodes
    assert kube.get(Pod, "untolerated", namespace=namespace).spec.nodeName is None


def test_pod_becomes_ready_in_seconds(kube: Client, namespace: str, probe_image: str) -> None:
    """Real pods must stay cheap enough for every end-to-end test: create -> Ready is measured
    at about a second on a busy 2-core machine; ten is the line past which something is wrong."""
    started = time.monotonic()
    kube.create(from_dict({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quick"},
        "spec": on_real_node({"containers": [{"name": "c", "image": probe_image, "imagePullPolicy": "Never",
                                              "command": ["sleep", "600"]}],
                              "terminationGracePeriodSeconds": 0}),
    }), namespace=namespace)

    def ready() -> bool:
        conds = kube.get(Pod, "quick", namespace=namespace).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conds)

    wait_for(ready, timeout=30, interval=0.05, what=lambda: f"the pod to be Ready: {_describe_pods(kube, namespace)}")
    assert time.monotonic() - started < 10


def test_load_image_imports_an_archive_again_only_when_its_content_or_image_changed(
        local_cluster: LocalCluster, real_node: RealNode, tmp_path) -> None:
    ref = "localhost/medusa/load-test:1"

    def archive(name: str, text: bytes):
        path = tmp_path / name
        nodeimages.write_docker_archive(path, ref, [nodeimages.layer_tar([("hello.txt", text, 0o644)])], {})
        return path

    def digest() -> str | None:
        out = subprocess.run([str(local_cluster.bin / "ctr"), "--address", str(real_node.socket), "-n", "k8s.io",
                              "images", "ls"], capture_output=True, text=True, check=True).stdout
        return next((line.split()[2] for line in out.splitlines() if line.startswith(ref + " ")), None)

    first, second = archive("a.tar", b"first"), archive("b.tar", b"second")
    cli = [sys.executable, str(REPO / "hack" / "localcluster.py"), "load-image"]
    loaded = subprocess.run([*cli, str(first)], capture_output=True, text=True, env=local_cluster.env())
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == [ref]
    first_digest = digest()
    assert first_digest is not None
    # Same name, other content: imported, and the name now points at it.
    assert local_cluster.load_image(second) == [ref]
    assert digest() not in (None, first_digest)
    # The image removed behind the node's back: the same archive is imported again.
    subprocess.run([str(local_cluster.bin / "ctr"), "--address", str(real_node.socket), "-n", "k8s.io",
                    "images", "rm", ref], check=True, capture_output=True)
    assert digest() is None
    local_cluster.load_image(second)
    assert digest() not in (None, first_digest)


def test_pod_reaches_a_server_on_this_machine_at_node_ip(
        local_cluster: LocalCluster, kube: Client, namespace: str, probe_image: str) -> None:
    """Servers the tests run on the host (S3, Prometheus) listen on NODE_IP for pods."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"host saw {self.client_address[0]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer((NODE_IP, 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://{NODE_IP}:{server.server_address[1]}/"
        kube.create(_job("hostcall", probe_image, ["probe", "get", url]), namespace=namespace)
        finished = wait_for(lambda: _job_finished(kube, "hostcall", namespace), timeout=60,
                            what=lambda: f"the Job to finish: {_describe_pods(kube, namespace)}")
        logs = local_cluster.kubectl("logs", "-n", namespace, "job/hostcall").stdout
        assert finished == "Complete", logs
    finally:
        server.shutdown()
        server.server_close()
    pod_ip = _job_pod(kube, "hostcall", namespace).status.podIP
    assert logs == f"host saw {pod_ip}"  # not masqueraded: the pod's own address
