"""The operator end to end on the local control plane.

Real: the operator process, kube-apiserver, etcd, controller-manager (Jobs, Deployments, HPA,
garbage collector), scheduler and kwok's nodes. Simulated: what each Job's container reports
(hack/jobscript.py annotates the pods, kwok ends them with that exit code and termination
message), because no builder image can run on this machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.batch_v1 import Job
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Pod, Secret, Service

from fixtures.cluster import exists, wait_for
from fixtures.manifests import GPU, apply, condition, job_names, model, model_manifest, status, wait_phase
from fixtures.operator import leader_and_standby
from jobscript import Outcome, arg, default_outcome
from medusa_common.contract import ErrorKind

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_happy_path_to_serving_fills_every_status_field(local_cluster, kube, namespace, operator, scripter):
    apply(local_cluster, namespace, model_manifest())
    st = wait_phase(kube, namespace, "Serving")
    obj = model(kube, namespace)
    rev = st["revisions"]["current"]

    assert re.fullmatch(r"[0-9a-f]{10}", rev)
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert st["revisions"].get("candidate") is None
    for type_ in ("Ready", "EngineBuilt", "Packaged", "Validated", "Available"):
        cond = condition(st, type_)
        assert cond["status"] == "True", cond
        assert cond["reason"] and cond["message"] and cond["lastTransitionTime"]
        assert cond["observedGeneration"] == obj["metadata"]["generation"]
    engine = st["engine"]
    assert re.fullmatch(r"[0-9a-f]{24}", engine["cacheKey"])
    assert engine["uri"] == f"s3://engines/engines/{engine['cacheKey']}"
    assert engine["reused"] is False and engine["buildSeconds"] == 1834.0 and engine["numHeads"] == 3
    assert engine["treeSize"] == 5
    val = st["validation"]
    assert val["passed"] is True and val["revision"] == rev
    assert (val["accuracy"], val["baseAccuracy"], val["speedup"]) == (0.662, 0.665, 2.07)
    assert val["tokensPerSecond"] == 191.0 and val["baseTokensPerSecond"] == 92.4
    assert val["meanAcceptedTokens"] == 2.6
    assert [t["topic"] for t in val["perTopic"]] == ["coding", "writing"]
    assert val["reportUri"] == f"s3://engines/reports/{namespace}/smol/{rev}/validation.json"
    assert st["endpoint"] == f"http://smol.{namespace}.svc:8000"
    assert st["replicas"] == 1

    # The stable Service selects the validated revision; the HPA scales its Deployment.
    stable = kube.get(Service, "smol", namespace=namespace)
    assert stable.spec.selector == {"medusa.dev/model": "smol", "medusa.dev/revision": rev,
                                    "medusa.dev/variant": "medusa"}
    hpa = kube.get(HorizontalPodAutoscaler, "smol", namespace=namespace)
    assert hpa.spec.scaleTargetRef.name == f"smol-{rev[:8]}"
    assert hpa.spec.metrics[0].pods.target.averageValue == "150"
    assert (hpa.spec.minReplicas, hpa.spec.maxReplicas) == (1, 3)
    dep = kube.get(Deployment, f"smol-{rev[:8]}", namespace=namespace)
    assert dep.metadata.ownerReferences[0].name == "smol" and dep.metadata.ownerReferences[0].controller
    limits = dep.spec.template.spec.containers[0].resources.limits
    assert limits == {"nvidia.com/gpu": "1"}
    assert dep.spec.template.spec.nodeSelector == {"nvidia.com/gpu.product": GPU}
    # The baseline is gone after promotion; the served revision's finished Jobs stay, a record of
    # how it was built and validated, until a newer revision replaces it.
    wait_for(lambda: not exists(kube, Deployment, f"smol-{rev[:8]}-base", namespace), what="the baseline to go")
    assert job_names(kube, namespace) == sorted(f"smol-{rev[:8]}-{step}" for step in (
        "lookup", "lookup-base", "build", "build-base", "package", "package-base", "validate"))
    assert scripter.pods_seen == {"lookup": 1, "lookup-base": 1, "build": 1, "build-base": 1, "package": 1,
                                  "package-base": 1, "validate": 1}

    # Nothing was written to the user's object except status: no finalizers, no annotations.
    assert not obj["metadata"].get("finalizers")
    assert not any(k.startswith("kopf") for k in (obj["metadata"].get("annotations") or {}))
    printed = local_cluster.kubectl("get", "mm", "smol", "-n", namespace).stdout
    assert re.search(rf"smol\s+Serving\s+{rev}\s+2\.07\s+0\.662\s+1\s+", printed), printed
    reasons = {e.reason for e in kube.list(Event, namespace=namespace)
               if e.involvedObject.kind == "MedusaModel"}
    assert {"PhaseBuilding", "PhaseValidating", "PhaseServing", "Built", "Passed"} <= reasons
    metrics = operator.metrics()
    assert f'medusa_model_phase{{name="smol",namespace="{namespace}",phase="Serving"}} 1.0' in metrics
    assert 'medusa_engine_cache_lookups_total{result="miss"} 1.0' in metrics
    assert operator.healthy()


def test_same_engine_inputs_reuse_the_engine_without_a_gpu_job(local_cluster, kube, namespace, operator,
                                                              scripter):
    apply(local_cluster, namespace, model_manifest("first"))
    first = wait_phase(kube, namespace, "Serving", "first")
    apply(local_cluster, namespace, model_manifest("second"))
    second = wait_phase(kube, namespace, "Serving", "second")

    assert second["engine"]["cacheKey"] == first["engine"]["cacheKey"]
    assert second["engine"]["reused"] is True
    assert condition(second, "EngineBuilt")["reason"] == "CacheHit"
    assert scripter.pods_seen["build"] == 1, "a second GPU build Job ran for the same engine inputs"
    assert scripter.pods_seen["validate"] == 2
    assert 'medusa_engine_cache_lookups_total{result="hit"} 1.0' in operator.metrics()


def test_an_engine_already_in_the_store_is_reused_without_a_gpu_job(local_cluster, kube, namespace, operator,
                                                                   scripter):
    """The store holds the engine (built for a model since deleted), but no status knows it."""
    def found(pod) -> Outcome:
        key = arg(pod, "--cache-key")
        return Outcome(result={"cacheKey": key, "cacheHit": True, "engineUri": f"s3://engines/engines/{key}",
                               "numHeads": 3, "numLayers": 1, "tree": [[0], [0, 0], [1]]})

    scripter.script("lookup", found)
    apply(local_cluster, namespace, model_manifest())
    st = wait_phase(kube, namespace, "Serving")
    assert st["engine"]["reused"] is True and st["engine"]["treeSize"] == 3
    assert condition(st, "EngineBuilt")["reason"] == "CacheHit"
    assert scripter.pods_seen["lookup"] == 1 and scripter.pods_seen["build"] == 0


def test_build_failure_names_the_reason_and_deploys_nothing(local_cluster, kube, namespace, operator, scripter):
    scripter.script("build", Outcome(error=(ErrorKind.USER, "heads have hidden size 5120, base model has 4096")))
    apply(local_cluster, namespace, model_manifest())
    st = wait_phase(kube, namespace, "Failed")

    built = condition(st, "EngineBuilt")
    assert built["status"] == "False" and built["reason"] == "BuildingFailed"
    assert "heads have hidden size 5120, base model has 4096" in built["message"]
    assert "heads have hidden size 5120, base model has 4096" in st["message"]
    assert st["revisions"]["failed"] and not st["revisions"].get("current")
    assert list(kube.list(Deployment, namespace=namespace)) == []
    assert condition(st, "Ready")["status"] == "False"
    warnings = [e for e in kube.list(Event, namespace=namespace) if e.type == "Warning"]
    assert any("5120" in e.message for e in warnings)


def test_a_job_that_succeeds_without_a_result_is_retried(local_cluster, kube, namespace, operator, scripter):
    """Issue 21, bullet: exit code 0 without a result is an infrastructure failure to retry."""
    attempts = []

    def first_empty(pod) -> Outcome:
        attempts.append(pod.metadata.name)
        return Outcome(exit_code=0, raw_message="") if len(attempts) == 1 else default_outcome("package", pod)

    scripter.script("package", first_empty)
    apply(local_cluster, namespace, model_manifest())
    cond = wait_for(lambda: next((c for c in status(kube, namespace).get("conditions", [])
                                  if c["type"] == "Packaged" and c["reason"] == "RetryingAfterInfrastructureError"),
                                 None), what="the retrying condition")
    assert "left no result (empty termination message)" in cond["message"]
    wait_phase(kube, namespace, "Serving")
    assert len(attempts) == 2


def test_validation_failure_keeps_the_previous_revision_serving(local_cluster, kube, namespace, operator,
                                                                scripter):
    apply(local_cluster, namespace, model_manifest())
    old = wait_phase(kube, namespace, "Serving")["revisions"]["current"]
    scripter.script("validate", Outcome(error=(ErrorKind.VALIDATION, "2 thresholds failed"), result={
        "passed": False, "accuracy": 0.61, "baseAccuracy": 0.665, "speedup": 1.2,
        "failures": [
            {"threshold": "minSpeedup", "measured": 1.2, "required": 1.5,
             "message": "speedup 1.20x is below the required 1.50x"},
            {"threshold": "maxDropVsBase", "measured": 0.055, "required": 0.02,
             "message": "accuracy dropped 0.055 against the base model, more than 0.020"},
        ]}))
    apply(local_cluster, namespace, model_manifest(medusa__tree={"choices": [[0], [0, 0], [1]]}))
    st = wait_phase(kube, namespace, "Degraded")

    new = st["revisions"]["failed"]
    assert new != old and st["revisions"]["current"] == old
    failures = {f["threshold"]: f for f in st["validation"]["failures"]}
    assert failures["minSpeedup"]["measured"] == 1.2 and failures["minSpeedup"]["required"] == 1.5
    assert failures["maxDropVsBase"]["required"] == 0.02
    assert "speedup 1.20x is below the required 1.50x" in condition(st, "Validated")["message"]
    assert kube.get(Service, "smol", namespace=namespace).spec.selector["medusa.dev/revision"] == old
    wait_for(lambda: not exists(kube, Deployment, f"smol-{new[:8]}", namespace), what="the candidate torn down")
    assert not exists(kube, Deployment, f"smol-{new[:8]}-base", namespace)
    assert exists(kube, Deployment, f"smol-{old[:8]}", namespace)
    assert condition(st, "Ready")["status"] == "True"


def test_spec_change_during_build_supersedes_the_revision(local_cluster, kube, namespace, operator, scripter):
    scripter.script("build", Outcome(hold=True))
    apply(local_cluster, namespace, model_manifest())
    first = wait_for(lambda: status(kube, namespace).get("revisions", {}).get("candidate"), what="a candidate")
    wait_for(lambda: any(n.endswith("-build") for n in job_names(kube, namespace)), what="the build Job")

    scripter.script("build", lambda pod: Outcome(result={"cacheKey": "k", "engineUri": "s3://engines/engines/k"}))
    apply(local_cluster, namespace, model_manifest(engine__maxBatchSize=16))
    st = wait_phase(kube, namespace, "Serving")

    assert st["revisions"]["current"] != first
    assert not exists(kube, Job, f"smol-{first[:8]}-build", namespace)
    assert not any(first[:8] in d.metadata.name for d in kube.list(Deployment, namespace=namespace))


def test_serving_only_change_applies_in_place(local_cluster, kube, namespace, operator, scripter):
    apply(local_cluster, namespace, model_manifest())
    rev = wait_phase(kube, namespace, "Serving")["revisions"]["current"]
    jobs_before = dict(scripter.pods_seen)

    apply(local_cluster, namespace, model_manifest(
        serving__autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetTokensPerSecondPerReplica": 300},
        serving__resources={"requests": {"cpu": "4", "memory": "32Gi"}},
        serving__tolerations=[{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}]))

    def hpa_updated() -> bool:
        hpa = kube.get(HorizontalPodAutoscaler, "smol", namespace=namespace)
        return hpa.spec.maxReplicas == 6 and hpa.spec.metrics[0].pods.target.averageValue == "300"

    wait_for(hpa_updated, what="the HPA to follow the new autoscaling settings")
    dep = kube.get(Deployment, f"smol-{rev[:8]}", namespace=namespace)
    container = dep.spec.template.spec.containers[0]
    wait_for(lambda: kube.get(Deployment, f"smol-{rev[:8]}", namespace=namespace)
             .spec.template.spec.containers[0].resources.requests == {"cpu": "4", "memory": "32Gi"},
             what="the resources to be applied")
    dep = kube.get(Deployment, f"smol-{rev[:8]}", namespace=namespace)
    assert any(t.key == "dedicated" for t in dep.spec.template.spec.tolerations)
    assert container.image == "example.invalid/medusa-reference-serving:test"  # a reference model serves with that image
    st = status(kube, namespace)
    assert st["revisions"]["current"] == rev and st["phase"] == "Serving"
    assert dict(scripter.pods_seen) == jobs_before, "a serving-only change ran Jobs"


def test_deleting_during_validation_removes_everything(local_cluster, kube, namespace, operator, scripter):
    scripter.script("validate", Outcome(hold=True))
    apply(local_cluster, namespace, model_manifest())
    wait_phase(kube, namespace, "Validating")
    assert list(kube.list(Deployment, namespace=namespace))

    local_cluster.kubectl("delete", "medusamodel", "smol", "-n", namespace, "--wait=true", "--timeout=30s")

    def nothing_left() -> bool:
        return not any([list(kube.list(Deployment, namespace=namespace)), list(kube.list(Job, namespace=namespace)),
                        [s for s in kube.list(Service, namespace=namespace)],
                        list(kube.list(HorizontalPodAutoscaler, namespace=namespace)),
                        [p for p in kube.list(Pod, namespace=namespace) if not p.metadata.deletionTimestamp]])

    wait_for(nothing_left, timeout=30, what="every owned object to be garbage-collected")


def test_operator_restarted_mid_phase_creates_no_duplicate_jobs(local_cluster, kube, namespace, operator_factory,
                                                                scripter):
    scripter.script("build", Outcome(result={"cacheKey": "k", "engineUri": "s3://engines/engines/k"},
                                     delay_ms=6000))
    first = operator_factory("--no-leader-elect", name="first")
    apply(local_cluster, namespace, model_manifest())
    wait_phase(kube, namespace, "Building")
    wait_for(lambda: scripter.pods_seen["build"] == 1, what="the build pod to run")
    first.kill()
    operator_factory("--no-leader-elect", name="second")
    wait_phase(kube, namespace, "Serving")
    assert scripter.pods_seen["build"] == 1 and scripter.pods_seen["package"] == 1
    assert scripter.pods_seen["validate"] == 1


def test_leader_failover_within_15_seconds(local_cluster, kube, namespace, operator_factory, scripter):
    """A killed leader is replaced in time. That two replicas never act at once is checked by
    test_a_paused_leader_writes_nothing_once_its_lease_could_be_taken (test_rollout_safety.py):
    a killed process cannot act, so this test could not show it."""
    lease_args = ("--leader-elect", "--lease-namespace", namespace, "--lease-name", "medusa-operator")
    a = operator_factory(*lease_args, "--identity", "replica-a", name="replica-a")
    wait_for(lambda: exists(kube, Lease, "medusa-operator", namespace), what="the Lease")
    b = operator_factory(*lease_args, "--identity", "replica-b", name="replica-b")

    def leading(proc) -> bool:
        try:
            return "medusa_operator_leader 1.0" in proc.metrics()
        except OSError:
            return False

    wait_for(lambda: leading(a) and not leading(b), what="replica-a to lead")
    apply(local_cluster, namespace, model_manifest())
    wait_phase(kube, namespace, "Serving")

    a.kill()
    killed = time.monotonic()
    wait_for(lambda: leading(b), timeout=15, interval=0.2, what="replica-b to take over within 15 s")
    assert time.monotonic() - killed < 15
    assert kube.get(Lease, "medusa-operator", namespace=namespace).spec.holderIdentity == "replica-b"
    # The new leader acts: a spec change is carried through.
    apply(local_cluster, namespace, model_manifest(engine__maxBatchSize=4))
    wait_for(lambda: (s := status(kube, namespace)).get("phase") == "Serving" and s["observedGeneration"] == 2,
             what="replica-b to reconcile generation 2")
    assert scripter.pods_seen["build"] == 2


def test_a_leader_stops_within_seconds_of_sigterm_and_hands_over_its_lease(local_cluster, kube, namespace,
                                                                          operator_factory, scripter):
    """Issue 25, bullet: the operator stops within a few seconds of SIGTERM (a rolling update of
    the operator itself), mid-pipeline and holding the Lease, and gives the Lease up so the
    standby takes over at once rather than after the Lease expires."""
    scripter.script("build", Outcome(result={"cacheKey": "k", "engineUri": "s3://engines/engines/k"}, hold=True))
    a, b = leader_and_standby(operator_factory, kube, namespace)
    apply(local_cluster, namespace, model_manifest())
    wait_phase(kube, namespace, "Building")
    wait_for(lambda: scripter.pods_seen["build"] == 1, what="the build pod to run")
    wait_for(b.healthy, what="replica-b to be up")

    os.killpg(a.proc.pid, signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = a.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"replica-a still runs 30 s after SIGTERM:\n{a.log_tail()}")
    stopped_in = time.monotonic() - sent
    assert stopped_in < 5, f"replica-a took {stopped_in:.1f}s to stop:\n{a.log_tail()}"
    assert code == 0
    assert kube.get(Lease, "medusa-operator", namespace=namespace).spec.holderIdentity in (None, "", "replica-b")
    # Released, not expired: the standby takes it within its retry period, not the Lease's duration.
    wait_for(lambda: kube.get(Lease, "medusa-operator", namespace=namespace).spec.holderIdentity == "replica-b",
             timeout=5, interval=0.2, what="replica-b to take the released Lease")
    assert b.proc.poll() is None


def test_missing_secret_is_a_condition_and_recovers_when_created(local_cluster, kube, namespace, operator,
                                                                 scripter):
    apply(local_cluster, namespace, model_manifest(baseModel={"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
                                                              "credentialsSecretRef": {"name": "hf-token"}}))
    st = wait_for(lambda: (s := status(kube, namespace)).get("conditions") and s, what="a status")
    cond = wait_for(lambda: next((c for c in status(kube, namespace).get("conditions", [])
                                  if c["type"] == "CredentialsFound"), None), what="the CredentialsFound condition")
    assert cond["status"] == "False" and cond["reason"] == "SecretNotFound"
    assert "credentials Secret 'hf-token' not found" in cond["message"] and "HF_TOKEN" in cond["message"]
    assert st["phase"] == "Pending"
    time.sleep(2)
    assert job_names(kube, namespace) == []

    kube.create(Secret(metadata=ObjectMeta(name="hf-token"), stringData={"HF_TOKEN": "hf_test_token"}),
                namespace=namespace)
    st = wait_phase(kube, namespace, "Serving")
    assert condition(st, "CredentialsFound")["status"] == "True"


def test_infrastructure_failure_is_retried_until_it_passes(local_cluster, kube, namespace, operator, scripter):
    attempts = []

    def flaky(pod) -> Outcome:
        attempts.append(pod.metadata.name)
        if len(attempts) <= 3:  # the Job's own retries, then the operator's
            return Outcome(error=(ErrorKind.INFRASTRUCTURE, "cannot reach the artifact store s3://engines/"))
        return Outcome(result={"cacheKey": "k", "engineUri": "s3://engines/engines/k"})

    scripter.script("build", flaky)
    apply(local_cluster, namespace, model_manifest())
    cond = wait_for(lambda: next((c for c in status(kube, namespace).get("conditions", [])
                                  if c["type"] == "EngineBuilt" and c["reason"] == "RetryingAfterInfrastructureError"),
                                 None), what="the retrying condition")
    assert "cannot reach the artifact store" in cond["message"]
    wait_phase(kube, namespace, "Serving", timeout=120)
    assert len(attempts) == 4


def test_make_room_hands_the_serving_gpus_to_the_candidate(local_cluster, kube, namespace, operator, scripter):
    """A fake node of its own with 4 GPUs: two serving replicas of 2 GPUs fill it, so the next
    candidate (and its baseline) can only run once the serving revision makes room."""
    product = f"TEST-GPU-{namespace[-6:]}"
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"gpu-{namespace[-6:]}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"type": "kwok", "nvidia.com/gpu.product": product}},
            "status": {"capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "4"},
                       "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "4"}}}
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
    try:
        local_cluster.kubectl("wait", "--for=condition=Ready", f"node/{node['metadata']['name']}", "--timeout=60s")

        def found(pod) -> Outcome:  # the base model's engine is in the store from the first revision
            key = arg(pod, "--cache-key")
            return Outcome(result={"cacheKey": key, "cacheHit": True, "engineUri": f"s3://engines/engines/{key}",
                                   "numHeads": 0, "tree": [], "baseOnly": True})

        spec = {"engine__gpu": {"count": 2, "product": product},
                "serving__autoscaling": {"minReplicas": 2, "maxReplicas": 2},
                "rollout": {"unschedulableTimeoutSeconds": 30, "makeRoom": True}}
        apply(local_cluster, namespace, model_manifest(**spec))
        first = wait_phase(kube, namespace, "Serving", timeout=120)
        old = first["revisions"]["current"]
        wait_for(lambda: status(kube, namespace).get("replicas") == 2, timeout=60, what="two serving replicas")

        scripter.script("lookup-base", found)
        apply(local_cluster, namespace, model_manifest(validation={"throughput": {"minSpeedup": 1.4},
                                                                   "accuracy": {"maxDropVsBase": 0.02}}, **spec))
        # The condition flips back once the candidate's pods run; the Event of the flip stays.
        # CandidateReady reports the same wait in its own words; this is CandidateSchedulable's.
        making_room = f"serving revision {old} is scaled to zero to make room"
        wait_for(lambda: next((e for e in kube.list(Event, namespace=namespace)
                               if e.reason == "Unschedulable" and e.involvedObject.kind == "MedusaModel"
                               and making_room in e.message), None),
                 timeout=90, what=lambda: "the CandidateSchedulable=False event; events: " + "; ".join(
                     e.message for e in kube.list(Event, namespace=namespace) if e.reason == "Unschedulable"))
        wait_for(lambda: not exists(kube, Deployment, f"smol-{old[:8]}", namespace)  # promoted and drained
                 or kube.get(Deployment, f"smol-{old[:8]}", namespace=namespace).spec.replicas == 0,
                 timeout=30, what="the serving revision to be scaled to zero")
        st = wait_for(lambda: (s := status(kube, namespace)).get("phase") == "Serving"
                      and s["revisions"]["current"] != old and s,
                      timeout=120, what=lambda: f"the candidate to be promoted; status now: {status(kube, namespace)}")
        assert st["revisions"]["previous"] == old and not st["revisions"].get("servingScaledDown")
        wait_for(lambda: status(kube, namespace).get("replicas") == 2, timeout=60, what="two serving replicas")
    finally:
        local_cluster.kubectl("delete", "node", node["metadata"]["name"], "--wait=false", check=False)


def test_unschedulable_candidate_gets_a_condition(local_cluster, kube, namespace, operator, scripter):
    manifest = model_manifest(rollout={"unschedulableTimeoutSeconds": 30})
    manifest["spec"]["engine"]["gpu"]["product"] = "NVIDIA-H100-80GB-HBM3"
    manifest["spec"]["serving"]["nodeSelector"] = {"medusa.dev/pool": "reserved-for-llms"}
    apply(local_cluster, namespace, manifest)
    cond = wait_for(lambda: next((c for c in status(kube, namespace).get("conditions", [])
                                  if c["type"] == "CandidateSchedulable" and c["status"] == "False"), None),
                    timeout=90, what="the CandidateSchedulable=False condition")
    assert cond["reason"] == "Unschedulable"
    assert "could not be scheduled" in cond["message"] and "node affinity/selector" in cond["message"]
    assert status(kube, namespace)["phase"] == "Deploying"


def test_a_known_image_mismatch_is_refused_before_any_job(local_cluster, kube, namespace, operator, scripter):
    """Issue 23: an engine loads only in the TensorRT-LLM that built it. The operator's builder
    image carries 1.1.0; Triton 24.08 ships a 0.12 build, so the pair is refused with a condition
    and no Job (no GPU time). Job results are scripted here as everywhere in this file, but no Job
    may run until the serving image is fixed."""
    mismatched = model_manifest(engine__backend="tensorrt-llm",
                                serving__image="nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3")
    apply(local_cluster, namespace, mismatched)
    st = wait_phase(kube, namespace, "Failed")
    built = condition(st, "EngineBuilt")
    assert (built["status"], built["reason"]) == ("False", "IncompatibleImages")
    assert "ships TensorRT-LLM 0.12 but the engine would be built with TensorRT-LLM 1.1.0" in built["message"]
    assert "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3" in built["message"]
    assert st["revisions"]["failed"] and not st["revisions"].get("candidate")
    time.sleep(3)  # three reconcile passes of the operator (--reconcile-interval 1)
    assert job_names(kube, namespace) == [] and sum(scripter.pods_seen.values()) == 0
    assert list(kube.list(Deployment, namespace=namespace)) == []
    warnings = [e for e in kube.list(Event, namespace=namespace) if e.type == "Warning"]
    assert any(e.reason == "IncompatibleImages" for e in warnings)

    fixed = model_manifest(engine__backend="tensorrt-llm",
                           serving__image="nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3")
    apply(local_cluster, namespace, fixed)
    wait_for(lambda: any(n.endswith("-lookup") for n in job_names(kube, namespace)),
             what="the matching pair to start the engine lookup")


def test_an_operator_with_nothing_to_do_asks_the_api_server_nothing(local_cluster, kube, namespace, operator,
                                                                     scripter, chart_identity):
    """Issue 25: an idle operator makes no requests and changes nothing (passes read the watch
    caches; a child already in place is not applied again). Counted in the API server's audit
    log, as the chart's ServiceAccount that the operator runs as; this replica has no Lease."""
    apply(local_cluster, namespace, model_manifest())
    wait_phase(kube, namespace, "Serving")
    time.sleep(5)  # the last steps settle: the baseline's objects go, the status says so
    start = local_cluster.audit_log.stat().st_size
    time.sleep(12)  # a dozen of the fixture's 1 s retry intervals and six Secret checks' worth
    with open(local_cluster.audit_log, "rb") as fh:
        fh.seek(start)
        events = [json.loads(line) for line in fh]
    made = [f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name', '')}" for e in events
            if e["user"]["username"] == chart_identity.service_account and e.get("stage") == "ResponseComplete"
            and e["verb"] != "watch" and "objectRef" in e]
    assert made == [], f"an idle operator made requests: {made[:20]}"
