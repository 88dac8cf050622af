"""How one pass sends the writes its plan asks for (issue 25: a pass costs round trips to the API
server, and its worker is held for all of them). A stand-in client takes a while to answer each
write and records when each began and ended; the plan is given, so the ordering rules are what
is checked, not what a plan decides."""

from __future__ import annotations

import asyncio

from medusa_operator.api.v1alpha1 import MedusaModelStatus
from medusa_operator.config import OperatorConfig
from medusa_operator.controller import reconciler as reconciler_module
from medusa_operator.controller.plan import Deletion, Plan
from medusa_operator.controller.reconciler import Reconciler

from reconciler_standins import OneModelCache, RecordingKube

WRITE_SECONDS = 0.05


class TimedKube(RecordingKube):
    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[str, tuple[float, float]] = {}

    async def _write(self, what: str) -> None:
        began = asyncio.get_running_loop().time()
        await asyncio.sleep(WRITE_SECONDS)
        self.spans[what] = (began, asyncio.get_running_loop().time())

    async def set_replicas(self, namespace, deployment, replicas):
        await self._write(f"replicas {deployment}")

    async def apply(self, manifest):
        await self._write(f"apply {manifest['kind']} {manifest['metadata']['name']}")

    async def delete(self, namespace, deletion):
        await self._write(f"delete {deletion.kind} {deletion.name}")

    async def patch_status(self, namespace, name, status, resource_version=None):
        await self._write("status")
        return "8"


def manifest(kind: str, name: str, api_version: str = "v1") -> dict:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "ns"}}


async def test_a_promotion_pass_costs_two_round_trips_before_its_status(monkeypatch) -> None:
    """The candidate's replica count before its manifest (the autoscaler takes over from that
    count); the Service, the autoscaler and the baseline's deletion beside the count; the status
    after everything."""
    given = Plan(status=MedusaModelStatus(phase="Serving"),
                 apply=[manifest("Deployment", "m-r2", "apps/v1"), manifest("Service", "m"),
                        manifest("HorizontalPodAutoscaler", "m", "autoscaling/v2")],
                 delete=[Deletion("apps/v1", "Deployment", "m-r2-base")], replicas={"m-r2": 2})
    monkeypatch.setattr(reconciler_module, "plan", lambda *args: given)
    kube = TimedKube()
    await Reconciler(kube, OneModelCache(), OperatorConfig()).reconcile(("ns", "m"))
    spans = kube.spans
    first = ["replicas m-r2", "apply Service m", "apply HorizontalPodAutoscaler m", "delete Deployment m-r2-base"]
    assert set(spans) == set(first) | {"apply Deployment m-r2", "status"}
    assert max(spans[w][0] for w in first) < min(spans[w][1] for w in first), "the first writes go out together"
    assert spans["apply Deployment m-r2"][0] >= spans["replicas m-r2"][1]
    assert spans["status"][0] >= max(end for what, (_, end) in spans.items() if what != "status")
