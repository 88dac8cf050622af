"""Rollout safety (issue 21) on the local control plane; each test names the bullet it covers.

Real: the operator process, kube-apiserver (server-side apply and its field ownership), the
controller-manager (Deployments, EndpointSlices, HPA, garbage collector), the scheduler and kwok's
nodes. Simulated: what each Job reports (hack/jobscript.py scripts it; kwok ends the pods).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import pytest
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Secret, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from fixtures.cluster import exists, wait_for
from fixtures.manifests import apply, condition, model, model_manifest, status, wait_phase
from fixtures.operator import leader_and_standby
from jobscript import Outcome
from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.config import OperatorConfig
from medusa_operator.controller.kube import Kube, MedusaModelResource
from medusa_operator.render import autoscaling, jobs, names, recorded, serving
from medusa_operator.render.context import ModelRef, RenderContext

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def ready_endpoints(kube: Client, namespace: str, service: str) -> int:
    return sum(1 for s in kube.list(EndpointSlice, namespace=namespace,
                                    labels={"kubernetes.io/service-name": service})
               for e in s.endpoints or [] if e.conditions and e.conditions.ready)


def test_promotion_never_drops_ready_endpoints_of_the_stable_service(local_cluster, kube, namespace, operator,
                                                                    scripter):
    """Bullet: promotion deletes the old revision while the new one has 1 replica. Needs the real
    API server: the new revision's replicas must survive the hand-over to the HPA (server-side
    apply would otherwise reset them to 1) and the EndpointSlice controller counts what serves."""
    autoscaled = {"autoscaling": {"minReplicas": 3, "maxReplicas": 3, "targetTokensPerSecondPerReplica": 150}}
    apply(local_cluster, namespace, model_manifest(serving=autoscaled, rollout={"drainSeconds": 5}))
    old = wait_phase(kube, namespace, "Serving")["revisions"]["current"]
    wait_for(lambda: ready_endpoints(kube, namespace, "smol") == 3, timeout=90,
             what="the HPA to bring the serving revision to its 3 replicas")

    lowest, stop = [3], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], ready_endpoints(kube, namespace, "smol"))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        apply(local_cluster, namespace, model_manifest(serving=autoscaled, rollout={"drainSeconds": 5},
                                                       engine__maxBatchSize=16))
        st = wait_for(lambda: (s := status(kube, namespace)).get("phase") == "Serving"
                      and s["revisions"]["current"] != old and s, timeout=120, what="the new revision to serve")
        new = st["revisions"]["current"]
        assert st["revisions"]["retiring"] == old
        assert exists(kube, Deployment, f"smol-{old[:8]}", namespace), "the previous revision drains first"
        wait_for(lambda: not exists(kube, Deployment, f"smol-{old[:8]}", namespace), timeout=30,
                 what="the previous revision to go after its drain")
        time.sleep(3)  # long enough for a reset replica count to show in the EndpointSlices
    finally:
        stop.set()
        watcher.join(5)
    assert lowest[0] == 3, f"the stable Service fell to {lowest[0]} ready endpoints during the rollout"
    assert kube.get(Deployment, f"smol-{new[:8]}", namespace=namespace).spec.replicas == 3


def test_a_wiped_status_deletes_nothing_that_serves(local_cluster, kube, namespace, operator, scripter):
    """Bullet: empty or unreadable status deletes what serves. The status is wiped through the
    API server (as a restore or a GitOps replace leaves it), once alone and once with a spec
    change whose build takes long: the served Deployment stays, with its pods, in both cases."""
    apply(local_cluster, namespace, model_manifest())
    old = wait_phase(kube, namespace, "Serving")["revisions"]["current"]
    served = kube.get(Deployment, f"smol-{old[:8]}", namespace=namespace)
    ran = dict(scripter.pods_seen)

    def wipe_status() -> None:
        local_cluster.kubectl("patch", "medusamodel", "smol", "-n", namespace, "--subresource=status",
                              "--type=merge", "-p", '{"status": null}')

    wipe_status()
    st = wait_for(lambda: (s := status(kube, namespace)).get("phase") == "Serving" and s, timeout=30,
                  what="the status to be rebuilt")
    assert st["revisions"]["current"] == old
    time.sleep(3)
    assert dict(scripter.pods_seen) == ran, "a wiped status ran the Jobs again"
    assert kube.get(Deployment, f"smol-{old[:8]}", namespace=namespace).metadata.uid == served.metadata.uid

    scripter.script("build", Outcome(hold=True))
    apply(local_cluster, namespace, model_manifest(engine__maxBatchSize=16))
    wipe_status()
    wait_for(lambda: scripter.pods_seen["build"] > ran.get("build", 0), timeout=60, what="the new build to run")
    st = status(kube, namespace)
    assert st["revisions"]["current"] == old and st["revisions"]["candidate"] != old
    assert exists(kube, Deployment, f"smol-{old[:8]}", namespace)
    assert kube.get(Service, "smol", namespace=namespace).spec.selector["medusa.dev/revision"] == old
    assert condition(st, "Ready")["status"] == "True"


@pytest.mark.parametrize("model_name", ["llama-3.1-8b", "3b-instruct", "a" * 253])
def test_every_derived_name_is_accepted_by_the_api_server(kube, namespace, medusa_crd, model_name):
    """Bullet: a model named llama-3.1-8b gives Service names with dots. Every object the
    operator would create for a dotted, a digit-leading and a 253-character model name goes
    through the real API server's validation (server-side dry run: nothing is stored)."""
    spec = MedusaModelSpec.model_validate(model_manifest()["spec"])
    ctx = RenderContext(ModelRef(model_name, namespace, "6a1f3c2e-0000-4000-8000-000000000000"), spec,
                        OperatorConfig(builder_image="b:1", serving_image="t:1"))
    revision = "0123456789"
    manifests = [jobs.lookup_job(ctx, revision, "k"), jobs.base_lookup_job(ctx, revision, "k"),
                 jobs.build_job(ctx, revision, "k"), jobs.base_build_job(ctx, revision, "k"),
                 jobs.package_job(ctx, revision, "s3://e/k"), jobs.package_job(ctx, revision, "s3://e/b", "base"),
                 jobs.validate_job(ctx, revision, baseline=True),
                 recorded.served_deployment(ctx, recorded.record(ctx, "s3://r"), revision, replicas=None),
                 serving.deployment(ctx, revision, "s3://r", variant="base"),
                 serving.revision_service(ctx, revision), serving.revision_service(ctx, revision, "base"),
                 serving.stable_service(ctx, revision), autoscaling.horizontal_pod_autoscaler(ctx, revision)]
    model_object = model_manifest(model_name)
    model_object["metadata"]["namespace"] = namespace
    for manifest in [model_object, *manifests]:
        try:
            kube.apply(from_dict(manifest) if manifest["kind"] != "MedusaModel"
                       else MedusaModelResource.from_dict(manifest), field_manager="medusa-tests", dry_run=True)
        except ApiError as exc:
            pytest.fail(f"the API server refused {manifest['kind']} {manifest['metadata']['name']}: "
                        f"{exc.status.message}")


def test_a_dotted_model_name_reaches_serving(local_cluster, kube, namespace, operator, scripter):
    """Bullet: a model named llama-3.1-8b loops forever today (its Services are refused)."""
    apply(local_cluster, namespace, model_manifest("llama-3.1-8b"))
    st = wait_phase(kube, namespace, "Serving", name="llama-3.1-8b")
    stable = names.stable_service_name("llama-3.1-8b")
    assert st["endpoint"] == f"http://{stable}.{namespace}.svc:8000"
    assert kube.get(Service, stable, namespace=namespace).spec.selector["medusa.dev/revision"] == \
        st["revisions"]["current"]


def test_a_secret_deleted_while_serving_is_reported_holds_scale_up_and_recovers(local_cluster, kube, namespace,
                                                                                operator, scripter):
    """Bullet: a Secret deleted after the model is Serving. kwok's pods never mount anything, so
    what is checked is the operator's part against the real API server: the status says so, the
    HPA may not add pods that would hang on the mount, and restoring the Secret recovers."""
    kube.create(Secret(metadata=ObjectMeta(name="store-creds"), stringData={"AWS_ACCESS_KEY_ID": "a",
                                                                             "AWS_SECRET_ACCESS_KEY": "b"}),
                namespace=namespace)
    manifest = model_manifest(artifacts={"uri": "s3://engines/", "credentialsSecretRef": {"name": "store-creds"}})
    apply(local_cluster, namespace, manifest)
    wait_phase(kube, namespace, "Serving")

    kube.delete(Secret, "store-creds", namespace=namespace)
    st = wait_phase(kube, namespace, "Degraded", timeout=30)
    found = condition(st, "CredentialsFound")
    assert found["status"] == "False" and "new pods could not mount 'store-creds'" in found["message"]
    assert condition(st, "Ready")["status"] == "True"
    wait_for(lambda: kube.get(HorizontalPodAutoscaler, "smol", namespace=namespace).spec.maxReplicas == 1,
             timeout=30, what="scale-up to be held at the one replica it has")

    kube.create(Secret(metadata=ObjectMeta(name="store-creds"), stringData={"AWS_ACCESS_KEY_ID": "a",
                                                                             "AWS_SECRET_ACCESS_KEY": "b"}),
                namespace=namespace)
    st = wait_phase(kube, namespace, "Serving", timeout=30)
    assert condition(st, "CredentialsFound")["status"] == "True"
    wait_for(lambda: kube.get(HorizontalPodAutoscaler, "smol", namespace=namespace).spec.maxReplicas == 3,
             timeout=30, what="the autoscaler's maxReplicas back")


def write_batches(log_text: str) -> list[dict]:
    records = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "write batch":
            records.append(record)
    return records


def test_a_paused_leader_writes_nothing_once_its_lease_could_be_taken(local_cluster, kube, namespace,
                                                                    operator_factory, scripter):
    """Bullet: leadership. The leader is frozen (SIGSTOP: a long pause, as a stalled node or a
    garbage-collection pause gives), the other replica takes the Lease and acts, then the old
    leader resumes: it must not write anything before it steps down. Each replica logs every
    write batch it starts, so the frozen one's log after the resume says whether it acted."""
    a, b = leader_and_standby(operator_factory, kube, namespace, "--log-level", "DEBUG")
    apply(local_cluster, namespace, model_manifest())
    wait_phase(kube, namespace, "Serving")
    assert write_batches(a.log_path.read_text()), "the leader accounts for its writes in its log"
    assert not write_batches(b.log_path.read_text()), "the follower wrote"

    os.killpg(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: kube.get(Lease, "medusa-operator", namespace=namespace).spec.holderIdentity == "replica-b",
                 timeout=20, what="replica-b to take the Lease")
        apply(local_cluster, namespace, model_manifest(engine__maxBatchSize=4))
        wait_for(lambda: (s := status(kube, namespace)).get("phase") == "Serving" and s["observedGeneration"] == 2,
                 timeout=60, what="replica-b to reconcile generation 2")
        resumed_at = len(a.log_path.read_bytes())
    finally:
        os.killpg(a.proc.pid, signal.SIGCONT)
    assert a.proc.wait(30) == 1, "the old leader steps down (exits to restart as a follower)"
    after = a.log_path.read_bytes()[resumed_at:].decode(errors="replace")
    assert write_batches(after) == [], f"replica-a wrote after its Lease was taken:\n{after[-2000:]}"
    assert b.proc.poll() is None


def test_a_status_write_onto_a_changed_model_is_refused(local_cluster, kube, namespace, medusa_crd):
    """Bullet: leadership; status writes are conditional (resourceVersion), checked against the
    real API server: a writer that read the model before someone else changed it is refused."""
    apply(local_cluster, namespace, model_manifest())
    read = model(kube, namespace)
    apply(local_cluster, namespace, model_manifest(engine__maxBatchSize=4))

    async def write(resource_version: str) -> None:
        await Kube(AsyncClient(config=KubeConfig.from_file(str(local_cluster.kubeconfig)),
                               field_manager="medusa-tests")).patch_status(
            namespace, "smol", {"message": "stale"}, resource_version)

    with pytest.raises(ApiError) as refused:
        asyncio.run(write(read["metadata"]["resourceVersion"]))
    assert refused.value.status.code == 409
    asyncio.run(write(model(kube, namespace)["metadata"]["resourceVersion"]))
    assert status(kube, namespace)["message"] == "stale"
