"""The reference pipeline for real: the operator, its Jobs and Triton in containers on the real node.

Real, all of it: the operator runs as two pods from its image, installed by `helm install` with the
chart's own ServiceAccount and RBAC and leader election; each Job's container runs its
`medusa-builder` step from the reference builder image (fetch from the S3 store on the node address,
build, package, validate); the candidate and baseline Triton Deployments serve SmolLM2-135M-Instruct
with Medusa heads on the CPU from the reference serving image; the validation Job measures accuracy and tokens/s through Service DNS
names (CoreDNS, kube-proxy); the model namespace enforces the `restricted` Pod Security Standard.
Prometheus scrapes the Triton pods, prometheus-adapter serves the tokens/s metric and the HPA
scales the promoted Deployment. Nothing in this file scripts a result.

The tests run in file order and share one model: the second and later ones start from Serving.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import realstack
from fixtures.cluster import wait_for
from localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]

MODEL = "smollm2-medusa"
PIPELINE_TIMEOUT = 1200
PASSING = realstack.CPU_GATES
# Any sustained load is many times this target on a CPU, so the HPA must go to maxReplicas; the
# short scale-down window lets the test see the way back within minutes.
AUTOSCALING = {"serving__autoscaling": {"minReplicas": 1, "maxReplicas": 2, "targetTokensPerSecondPerReplica": 1,
                                        "scaleDownStabilizationSeconds": 30}}
UNREACHABLE_SPEEDUP = 50.0  # a gate no candidate passes
STEPS = ("lookup", "build", "package", "lookup-base", "build-base", "package-base", "validate")


@pytest.fixture(scope="module")
def stack(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from s3server import running_s3_server

    if local_cluster.node is None:
        pytest.skip("the local cluster runs without its real node (MEDUSA_REAL_NODE=0)")
    images = realstack.load_images(local_cluster)
    namespace = f"real-{secrets.token_hex(3)}"
    realstack.create_namespace(local_cluster, namespace, {"medusa.dev/test": "true"})
    with running_s3_server(realstack.NODE_IP) as s3:
        realstack.upload_model_inputs(s3)
        realstack.credentials_secret(local_cluster, namespace, s3)
        realstack.install_operator(local_cluster, images, [namespace])
        try:
            yield {"namespace": namespace, "images": images, "s3": s3,
                   "workdir": tmp_path_factory.mktemp("real-pods")}
        finally:
            logs = realstack.operator_logs(local_cluster)
            (tmp_path_factory.getbasetemp() / "operator-real-pods.log").write_text(logs)
            realstack.uninstall_operator(local_cluster)
            local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def kubectl_json(cluster: LocalCluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def status(cluster: LocalCluster, namespace: str, name: str = MODEL) -> dict:
    return realstack.model_status(cluster, namespace, name)


def watch_phases(cluster: LocalCluster, namespace: str, until: set[str], timeout: float,
                 name: str = MODEL) -> tuple[list[str], dict]:
    """Poll the model's phase; return the phases seen in order and the final status."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(cluster, namespace, name)
        phase = st.get("phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
        if phase in until:
            return seen, st
        time.sleep(1)
    pytest.fail(f"{name} did not reach {until} in {timeout:.0f}s; phases {seen}; status {json.dumps(st)[:3000]}")


def condition(st: dict, type_: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def run_in_pod(cluster: LocalCluster, namespace: str, image: str, script: str, timeout: float = 180) -> str:
    return realstack.run_python_pod(cluster, namespace, image, script, timeout)


def generate(cluster: LocalCluster, namespace: str, image: str, endpoint: str) -> dict:
    return realstack.generate(cluster, namespace, image, endpoint)


def test_reference_model_goes_from_apply_to_serving_with_every_step_in_a_real_container(stack, local_cluster):
    ns = stack["namespace"]
    realstack.apply_model(local_cluster, ns, realstack.reference_model(MODEL, **PASSING, **AUTOSCALING))
    seen, st = watch_phases(local_cluster, ns, {"Serving", "Failed"}, PIPELINE_TIMEOUT)
    assert st["phase"] == "Serving", f"phases {seen}; status {json.dumps(st)[:3000]}"
    for phase in ("Building", "Deploying", "Validating", "Serving"):
        assert phase in seen, seen

    # Every step ran in a container of the real node, and finished there. The kubelet reports a
    # pod's phase a moment after its container's exit, which the operator acts on.
    def finished_step_pods() -> list[dict] | None:
        pods = kubectl_json(local_cluster, "get", "pods", "-n", ns, "-l", "medusa.dev/step")["items"]
        return pods if all(p["status"].get("phase") in ("Succeeded", "Failed") for p in pods) else None

    pods = wait_for(finished_step_pods, timeout=60, what="the step pods' phases")
    steps = {p["metadata"]["labels"]["medusa.dev/step"]: p for p in pods}
    assert {"build", "package", "validate"} <= set(steps), sorted(steps)
    for step, pod in steps.items():
        assert pod["spec"]["nodeName"] == realstack.REAL_NODE_NAME, step
        assert [c["image"] for c in pod["spec"]["containers"]] == [stack["images"].reference_builder], step
        assert pod["status"]["phase"] == "Succeeded", (step, pod["status"])
        (container,) = pod["status"]["containerStatuses"]
        assert container["containerID"].startswith("containerd://"), container
        assert container["state"]["terminated"]["exitCode"] == 0

    # The status shows what the validation Job measured against the base model's Deployment.
    validation = st["validation"]
    assert validation["passed"] is True
    assert 0 <= validation["accuracy"] <= 1 and 0 <= validation["baseAccuracy"] <= 1
    assert validation["tokensPerSecond"] > 0 and validation["baseTokensPerSecond"] > 0
    assert validation["speedup"] == pytest.approx(validation["tokensPerSecond"] / validation["baseTokensPerSecond"],
                                                  rel=0.02)
    assert condition(st, "Ready").get("status") == "True"

    # The serving pods run on the real node and are Ready.
    serving = kubectl_json(local_cluster, "get", "pods", "-n", ns, "-l",
                           f"medusa.dev/revision={st['revisions']['current']},medusa.dev/variant=medusa")["items"]
    assert serving and all(p["spec"]["nodeName"] == realstack.REAL_NODE_NAME for p in serving)
    # Triton runs from the serving image (no builder steps, no operator); only the fetch before it
    # is a builder step.
    for pod in serving:
        assert [c["image"] for c in pod["spec"]["containers"]] == [stack["images"].reference_serving]
        assert [c["image"] for c in pod["spec"]["initContainers"]] == [stack["images"].reference_builder]

    # A request through the stable Service, by its DNS name, from a pod in the namespace.
    reply = generate(local_cluster, ns, stack["images"].reference_serving, st["endpoint"])
    assert isinstance(reply["text_output"], str) and reply["text_output"].strip()


LOAD = """
import json, threading, time, urllib.request
URL, DEADLINE, MAX_REQUESTS = "%s/v2/models/ensemble/generate", time.monotonic() + %d, %d
lock, counts = threading.Lock(), {"sent": 0, "ok": 0, "failed": 0}
def worker():
    while True:
        with lock:
            if counts["sent"] >= MAX_REQUESTS or time.monotonic() > DEADLINE:
                return
            counts["sent"] += 1
        body = json.dumps({"text_input": "Write a short poem about the sea.", "max_tokens": 16}).encode()
        try:
            urllib.request.urlopen(urllib.request.Request(URL, data=body), timeout=120).read()
            with lock:
                counts["ok"] += 1
        except OSError:
            with lock:
                counts["failed"] += 1
threads = [threading.Thread(target=worker) for _ in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(counts))
"""


def test_hpa_scales_the_promoted_deployment_on_measured_tokens_per_second(stack, local_cluster):
    from monitoring import pod_metric, running_custom_metrics_api, running_prometheus

    ns = stack["namespace"]
    st = status(local_cluster, ns)
    assert st.get("phase") == "Serving", "needs the model the first test promoted"
    hpa_name = kubectl_json(local_cluster, "get", "hpa", "-n", ns)["items"][0]["metadata"]["name"]
    workdir: Path = stack["workdir"]

    def hpa() -> dict:
        return kubectl_json(local_cluster, "get", "hpa", hpa_name, "-n", ns)

    with contextlib.ExitStack() as running:
        prometheus = running.enter_context(running_prometheus(local_cluster, workdir / "prometheus", [ns]))
        running.enter_context(running_custom_metrics_api(local_cluster, prometheus, workdir / "adapter",
                                                         realstack.NODE_IP))
        # The real Triton pods are scraped and reach the custom metrics API.
        wait_for(lambda: pod_metric(local_cluster, ns), timeout=180,
                 what=lambda: f"tokens/s of the serving pods in the custom metrics API; HPA {hpa()['status']}")
        assert hpa()["spec"]["minReplicas"] == 1 and hpa()["status"].get("currentReplicas") == 1

        load = threading.Thread(target=lambda: results.append(run_in_pod(
            local_cluster, ns, stack["images"].reference_serving, LOAD % (st["endpoint"], 240, 2000), timeout=400)))
        results: list[str] = []
        load.start()
        try:
            wait_for(lambda: hpa()["status"].get("desiredReplicas") == 2, timeout=240, interval=2,
                     what=lambda: f"scale-up to 2 replicas: {hpa()['status']}")
            rate = prometheus.value(f'sum(medusa:tokens_per_second:rate1m{{namespace="{ns}"}})')
            assert rate and rate > 1
            deployment = hpa()["spec"]["scaleTargetRef"]["name"]
            wait_for(lambda: kubectl_json(local_cluster, "get", "deployment", deployment, "-n", ns)["status"]
                     .get("readyReplicas") == 2, timeout=240, what="the second replica to be Ready")
        finally:
            load.join(timeout=420)
        counts = json.loads(results[0])
        assert counts["ok"] > 0 and counts["failed"] == 0, counts

        # With the load gone, tokens/s falls to zero and the HPA returns to one replica.
        wait_for(lambda: hpa()["status"].get("desiredReplicas") == 1, timeout=300, interval=2,
                 what=lambda: f"scale-down to 1 replica: {hpa()['status']}")
    assert status(local_cluster, ns)["phase"] == "Serving"


def leader(cluster: LocalCluster) -> str:
    lease = kubectl_json(cluster, "get", "lease", "-n", realstack.OPERATOR_NAMESPACE, realstack.RELEASE)
    return lease["spec"].get("holderIdentity", "")


def test_failed_validation_keeps_the_previous_revision_serving_across_a_leader_kill(stack, local_cluster):
    """A threshold SmolLM2 cannot reach fails the new revision on its real measurement; the leader
    pod is killed while that rollout is in flight and the other replica finishes it."""
    ns = stack["namespace"]
    before = status(local_cluster, ns)
    assert before.get("phase") == "Serving"
    serving_revision = before["revisions"]["current"]
    stable = kubectl_json(local_cluster, "get", "service", before["endpoint"].split("//")[1].split(".")[0], "-n", ns)

    manifest = realstack.reference_model(MODEL, **{**PASSING, **AUTOSCALING,
                                                   "validation__throughput__minSpeedup": UNREACHABLE_SPEEDUP})
    realstack.apply_model(local_cluster, ns, manifest)
    wait_for(lambda: status(local_cluster, ns).get("revisions", {}).get("candidate") not in (None, serving_revision),
             timeout=120, what="the new revision to become the candidate")
    candidate = status(local_cluster, ns)["revisions"]["candidate"]

    # Kill the leader while the candidate is being deployed or validated.
    wait_for(lambda: status(local_cluster, ns).get("phase") in ("Deploying", "Validating"), timeout=600,
             what=lambda: f"the rollout to reach Deploying: {status(local_cluster, ns)}")
    old_leader = leader(local_cluster)
    assert old_leader
    local_cluster.kubectl("delete", "pod", old_leader, "-n", realstack.OPERATOR_NAMESPACE, "--grace-period=0",
                          "--force")
    wait_for(lambda: leader(local_cluster) not in ("", old_leader), timeout=120,
             what="the other replica to take the lease")

    def settled() -> dict | None:
        st = status(local_cluster, ns)
        validated = condition(st, "Validated")
        return st if validated.get("status") == "False" and st["revisions"].get("candidate") is None else None

    st = wait_for(settled, timeout=PIPELINE_TIMEOUT, interval=2,
                  what=lambda: f"the candidate {candidate} to fail validation: {status(local_cluster, ns)}")
    assert st["revisions"]["current"] == serving_revision
    assert "minSpeedup" in condition(st, "Validated")["message"] or "speedup" in condition(st, "Validated")["message"]
    # The stable Service still selects the validated revision, which still answers.
    after = kubectl_json(local_cluster, "get", "service", stable["metadata"]["name"], "-n", ns)
    assert after["spec"]["selector"] == stable["spec"]["selector"]
    reply = generate(local_cluster, ns, stack["images"].reference_serving, st["endpoint"])
    assert reply["text_output"].strip()
    # The failed candidate's Deployments are gone.
    deployments = kubectl_json(local_cluster, "get", "deployments", "-n", ns, "-l", f"medusa.dev/revision={candidate}")
    assert deployments["items"] == []


def test_a_missing_image_shows_the_pods_reason_in_the_models_conditions(stack, local_cluster):
    ns = stack["namespace"]
    name = "missing-image"
    realstack.apply_model(local_cluster, ns, realstack.reference_model(
        name, **PASSING, engine__builderImage="localhost/medusa/not-built:0"))
    try:
        def reason() -> str:
            st = status(local_cluster, ns, name)
            text = json.dumps(st.get("conditions", [])) + st.get("message", "")
            return text if ("ErrImagePull" in text or "ImagePullBackOff" in text) else ""

        text = wait_for(reason, timeout=180, interval=2,
                        what=lambda: f"the pull failure in the conditions: {status(local_cluster, ns, name)}")
        assert "localhost/medusa/not-built:0" in text
    finally:
        local_cluster.kubectl("delete", "medusamodel", name, "-n", ns, "--wait=true", check=False)


def test_the_operator_ran_under_the_charts_rbac_without_a_forbidden_request(stack, local_cluster):
    pods = kubectl_json(local_cluster, "get", "pods", "-n", realstack.OPERATOR_NAMESPACE, "-l",
                        f"app.kubernetes.io/instance={realstack.RELEASE}")["items"]
    assert pods and all(p["spec"]["serviceAccountName"] == realstack.RELEASE for p in pods)
    assert all(p["spec"]["nodeName"] == realstack.REAL_NODE_NAME for p in pods)
    logs = realstack.operator_logs(local_cluster)
    assert "starting controller" in logs
    forbidden = [line for line in logs.splitlines() if "forbidden" in line.lower()]
    assert not forbidden, "\n".join(forbidden[:20])
