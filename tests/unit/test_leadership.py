"""Leadership (issue 21, bullet: a leader that loses its Lease can act for up to a renewal
timeout plus a whole batch plus the shutdown wait). Stand-in clients play the API server where
a hanging request or a lost Lease must be staged; the failover itself runs against the real one
in tests/e2e/test_operator.py."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest

from medusa_operator.config import OperatorConfig
from medusa_operator.controller.observed import Observed
from medusa_operator.controller.reconciler import Reconciler
from medusa_operator.leader import LeaderElector

from plan_helpers import SPEC


class HangingClient:
    """The API server stops answering."""

    async def get(self, *args, **kwargs):
        await asyncio.sleep(3600)


def test_renewal_timeout_must_stay_below_the_renew_deadline() -> None:
    with pytest.raises(ValueError, match="renew timeout < renew deadline < lease duration"):
        LeaderElector(HangingClient(), "ns", "lease", "a", lease_seconds=10, renew_deadline_seconds=7,
                      renew_timeout_seconds=7)


async def test_a_hanging_renewal_ends_in_time_and_leadership_lapses_at_the_deadline() -> None:
    elector = LeaderElector(HangingClient(), "ns", "lease", "a", lease_seconds=2, renew_deadline_seconds=0.6,
                            retry_seconds=0.05, renew_timeout_seconds=0.2)
    elector._renewed_at = time.monotonic()  # it held the Lease a moment ago
    assert elector.is_leader()
    started = time.monotonic()
    assert await elector._attempt() is False
    assert time.monotonic() - started < 0.5, "a renewal may not hang past its timeout"
    lost = asyncio.Event()
    holder = asyncio.create_task(elector.hold(lost))
    await asyncio.wait_for(lost.wait(), timeout=2)
    holder.cancel()
    assert not elector.is_leader() and time.monotonic() - started >= 0.6


class RecordingKube:
    """Serves one model and records every write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    async def get_model(self, namespace, name):
        return {"metadata": {"name": name, "namespace": namespace, "uid": "u", "generation": 1,
                             "resourceVersion": "7"}, "spec": SPEC}

    async def observe(self, namespace, model, secret_names, now):
        return Observed(now=datetime.now(timezone.utc))

    async def set_replicas(self, *args):
        self.writes.append("replicas")

    async def apply(self, manifest):
        self.writes.append(f"apply {manifest['kind']}")

    async def delete(self, *args):
        self.writes.append("delete")

    async def patch_status(self, namespace, name, status, resource_version=None):
        self.writes.append(f"status@{resource_version}")

    async def emit(self, *args):
        self.writes.append("event")


async def test_a_replica_that_is_not_the_leader_writes_nothing() -> None:
    kube = RecordingKube()
    leading = [True]
    reconciler = Reconciler(kube, OperatorConfig(), may_act=lambda: leading[0])
    await reconciler.reconcile(("ns", "m"))
    assert "apply Job" in kube.writes and "status@7" in kube.writes, "status writes are conditional"
    kube.writes.clear()
    leading[0] = False
    await reconciler.reconcile(("ns", "m"))
    assert kube.writes == []


async def test_leadership_lost_in_the_middle_of_a_batch_stops_it_at_the_next_write() -> None:
    kube = RecordingKube()
    reconciler = Reconciler(kube, OperatorConfig(), may_act=lambda: not kube.writes)
    await reconciler.reconcile(("ns", "m"))
    assert kube.writes == ["apply Job"]
