"""The local control plane is a real one: API server with etcd, scheduler, controller-manager
(Deployments, Jobs, garbage collection) and kwok playing GPU nodes and pod lifecycles."""

from __future__ import annotations

import json
import time

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Node, Pod
from lightkube.codecs import from_dict
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference

from fixtures.cluster import wait_for
from jobscript import DELAY, STEP_LABEL, JobScripter, Outcome

pytestmark = pytest.mark.cluster

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


def _job(name: str, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Job:
    return from_dict({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}, "labels": labels or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "step", "image": "example.invalid/builder:1", "args": ["run"]}],
                },
            },
        },
    })


def _job_condition(kube: Client, name: str, namespace: str) -> str | None:
    job = kube.get(Job, name, namespace=namespace)
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def test_gpu_nodes_are_ready_with_capacity(kube: Client) -> None:
    gpu_nodes = [n for n in kube.list(Node) if n.metadata.labels.get("nvidia.com/gpu.product") == GPU_PRODUCT]
    assert len(gpu_nodes) >= 2
    for node in gpu_nodes:
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True"


def test_deployment_pods_become_ready_on_a_gpu_node(kube: Client, namespace: str) -> None:
    kube.create(from_dict({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "triton"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "triton"}},
            "template": {
                "metadata": {"labels": {"app": "triton"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": GPU_PRODUCT},
                    "containers": [{
                        "name": "triton", "image": "example.invalid/triton:1",
                        "resources": {"limits": {"nvidia.com/gpu": "4"}},
                    }],
                },
            },
        },
    }), namespace=namespace)

    wait_for(lambda: (kube.get(Deployment, "triton", namespace=namespace).status.readyReplicas or 0) == 2,
             what="2 ready replicas")
    pods = list(kube.list(Pod, namespace=namespace, labels={"app": "triton"}))
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.nodeName.startswith("gpu-node-")
        assert pod.status.phase == "Running"


def test_gpu_requests_beyond_capacity_stay_pending(kube: Client, namespace: str) -> None:
    kube.create(from_dict({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "too-big"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1",
                                 "resources": {"limits": {"nvidia.com/gpu": "9"}}}]},
    }), namespace=namespace)

    def unschedulable() -> bool:
        pod = kube.get(Pod, "too-big", namespace=namespace)
        conds = {c.type: c for c in (pod.status.conditions or [])}
        return "PodScheduled" in conds and conds["PodScheduled"].reason == "Unschedulable"

    wait_for(unschedulable, what="the scheduler to report the pod unschedulable")
    assert kube.get(Pod, "too-big", namespace=namespace).status.phase == "Pending"


def test_a_job_pod_runs_until_its_scripted_result_is_attached(kube: Client, namespace: str) -> None:
    """Issue 25, bullet "the harness must not race": a Job pod finishes only once its result is
    attached, however late the annotation comes, never on its own without one."""
    kube.create(_job("late"), namespace=namespace)

    def running_pod() -> Pod | None:
        pods = list(kube.list(Pod, namespace=namespace, labels={"job-name": "late"}))
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = wait_for(running_pod, what="the Job's pod to run")
    time.sleep(8)  # a loaded machine scripts late: kwok must keep waiting
    assert kube.get(Pod, pod.metadata.name, namespace=namespace).status.phase == "Running"
    assert _job_condition(kube, "late", namespace) is None

    message = '{"schemaVersion":1,"step":"build","ok":false,"error":{"kind":"infrastructure","message":"store down"}}'
    kube.patch(Pod, pod.metadata.name, {"metadata": {"annotations": {
        "kwok.medusa.dev/exit-code": "3", "kwok.medusa.dev/termination-message": message}}}, namespace=namespace)
    assert wait_for(lambda: _job_condition(kube, "late", namespace), what="the Job to finish") == "Failed"
    terminated = kube.get(Pod, pod.metadata.name, namespace=namespace).status.containerStatuses[0].state.terminated
    assert (terminated.exitCode, terminated.message) == (3, message)


def test_a_scripted_job_pod_runs_as_long_as_its_script_says(kube: Client, namespace: str) -> None:
    """The Job scripter's run times reach kwok: a pod scripted to run 6 s is still running after
    2 s and finishes after about 6 (margin for a slow watch); a held pod keeps running. (Tests that hold a step, and the
    scale benchmark's Job durations, rely on it.)"""
    scripted = {"build": Outcome(result={"cacheKey": "k"}, delay_ms=6000), "package": Outcome(hold=True)}
    with JobScripter(kube, namespace, scripted):
        kube.create(_job("slow", labels={STEP_LABEL: "build"}), namespace=namespace)
        kube.create(_job("held", labels={STEP_LABEL: "package"}), namespace=namespace)

        def running(job: str) -> Pod | None:
            pods = list(kube.list(Pod, namespace=namespace, labels={"job-name": job}))
            scripted = pods and (pods[0].metadata.annotations or {}).get(DELAY)
            return pods[0] if scripted and pods[0].status.phase == "Running" else None

        slow = wait_for(lambda: running("slow"), what="the scripted pod to run")
        started = time.monotonic()
        held = wait_for(lambda: running("held"), what="the held pod to run")
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
        assert kube.get(Pod, slow.metadata.name, namespace=namespace).status.phase == "Running"
        assert wait_for(lambda: _job_condition(kube, "slow", namespace), timeout=30, interval=0.1,
                        what="the scripted Job to finish") == "Complete"
        assert time.monotonic() - started >= 4.0, "the pod finished long before its scripted 6 s"
        assert kube.get(Pod, held.metadata.name, namespace=namespace).status.phase == "Running"
        assert _job_condition(kube, "held", namespace) is None


def test_job_scripted_to_fail_keeps_its_termination_message(kube: Client, namespace: str) -> None:
    message = json.dumps({"schemaVersion": 1, "step": "build", "ok": False,
                          "error": {"kind": "user", "message": "heads have hidden size 5120, base model has 4096"}})
    kube.create(_job("bad", {
        "kwok.medusa.dev/exit-code": "2",
        "kwok.medusa.dev/termination-message": message,
    }), namespace=namespace)

    assert wait_for(lambda: _job_condition(kube, "bad", namespace), what="the Job to finish") == "Failed"
    pod = next(iter(kube.list(Pod, namespace=namespace, labels={"job-name": "bad"})))
    assert pod.status.phase == "Failed"
    terminated = pod.status.containerStatuses[0].state.terminated
    assert terminated.exitCode == 2
    assert json.loads(terminated.message) == json.loads(message)


def test_job_scripted_to_succeed_with_a_result(kube: Client, namespace: str) -> None:
    message = '{"schemaVersion":1,"step":"package","ok":true,"result":{"repositoryUri":"s3://x/y"}}'
    kube.create(_job("good", {"kwok.medusa.dev/exit-code": "0",
                              "kwok.medusa.dev/termination-message": message}), namespace=namespace)
    assert wait_for(lambda: _job_condition(kube, "good", namespace), what="the Job to finish") == "Complete"
    pod = next(iter(kube.list(Pod, namespace=namespace, labels={"job-name": "good"})))
    assert pod.status.containerStatuses[0].state.terminated.message == message


def test_garbage_collector_deletes_owned_objects(kube: Client, namespace: str) -> None:
    owner = kube.create(ConfigMap(metadata=ObjectMeta(name="owner"), data={"a": "1"}), namespace=namespace)
    kube.create(ConfigMap(metadata=ObjectMeta(
        name="child",
        ownerReferences=[OwnerReference(apiVersion="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)],
    ), data={"b": "2"}), namespace=namespace)

    kube.delete(ConfigMap, "owner", namespace=namespace)

    def child_gone() -> bool:
        try:
            kube.get(ConfigMap, "child", namespace=namespace)
            return False
        except ApiError as exc:
            return exc.status.code == 404

    wait_for(child_gone, what="the garbage collector to delete the owned ConfigMap")


def test_crd_with_cel_rule_rejects_invalid_objects(kube: Client, namespace: str) -> None:
    crd = from_dict({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.test.medusa.dev"},
        "spec": {
            "group": "test.medusa.dev",
            "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [
                            {"rule": "self.min <= self.max", "message": "min must not exceed max"}],
                    }},
                }},
            }],
        },
    })
    kube.apply(crd, force=True)
    wait_for(lambda: any(c.type == "Established" and c.status == "True"
                         for c in (kube.get(CustomResourceDefinition, "gadgets.test.medusa.dev").status.conditions or [])),
             what="the CRD to be established")
    gadget = create_namespaced_resource("test.medusa.dev", "v1", "Gadget", "gadgets")

    def create(lo: int, hi: int):
        return kube.create(gadget(metadata={"name": f"g-{lo}-{hi}"}, spec={"min": lo, "max": hi}), namespace=namespace)

    assert create(1, 2).metadata.name == "g-1-2"
    with pytest.raises(ApiError) as refused:
        create(3, 2)
    assert refused.value.status.code == 422
    assert "min must not exceed max" in refused.value.status.message
