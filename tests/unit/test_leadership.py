"""Leadership (issue 21, bullet: a leader that loses its Lease can act for up to a renewal
timeout plus a whole batch plus the shutdown wait). Stand-in clients play the API server where
a hanging request or a lost Lease must be staged; the failover itself runs against the real one
in tests/e2e/test_operator.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from medusa_operator.config import OperatorConfig
from medusa_operator.controller.reconciler import Reconciler
from medusa_operator.leader import LeaderElector

from reconciler_standins import OneModelCache, RecordingKube


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


async def test_a_replica_that_is_not_the_leader_writes_nothing() -> None:
    kube = RecordingKube()
    leading = [True]
    reconciler = Reconciler(kube, OneModelCache(), OperatorConfig(), may_act=lambda: leading[0])
    await reconciler.reconcile(("ns", "m"))
    assert "apply Job" in kube.writes and "status@7" in kube.writes, "status writes are conditional"
    kube.writes.clear()
    leading[0] = False
    reconciler.own_writes.clear()  # as if the watch had brought the status just written
    await reconciler.reconcile(("ns", "m"))
    assert kube.writes == []


async def test_leadership_lost_in_the_middle_of_a_batch_stops_it_at_the_next_write() -> None:
    kube = RecordingKube()
    reconciler = Reconciler(kube, OneModelCache(), OperatorConfig(), may_act=lambda: not kube.writes)
    await reconciler.reconcile(("ns", "m"))
    assert kube.writes == ["apply Job"]


class SlowKube(RecordingKube):
    """Every write takes a while, as on a busy API server; counts the passes that began writing."""

    def __init__(self, write_seconds: float) -> None:
        super().__init__()
        self.write_seconds = write_seconds
        self.passes = 0
        self.first_pass = asyncio.Event()

    async def apply(self, manifest):
        self.passes += 1
        self.first_pass.set()
        await asyncio.sleep(self.write_seconds)
        await super().apply(manifest)


async def test_a_shutdown_waits_for_the_passes_in_flight_not_for_the_whole_queue() -> None:
    """Issue 25, bullet: the operator stops within a few seconds of SIGTERM, however many models
    are due when it comes."""
    kube = SlowKube(write_seconds=0.1)
    cache = OneModelCache()
    cache.keys = [("ns", f"m{i}") for i in range(100)]
    config = OperatorConfig(workers=4)
    reconciler = Reconciler(kube, cache, config)
    stopped = asyncio.Event()
    loop_task = asyncio.create_task(reconciler.run(stopped))
    await kube.first_pass.wait()
    stopped.set()
    await asyncio.wait_for(loop_task, timeout=5)
    assert 1 <= kube.passes <= config.workers


async def test_a_shutdown_cuts_a_hanging_pass_short() -> None:
    """Issue 25, bullet: the operator stops within a few seconds of SIGTERM, even while the API
    server does not answer the pass in flight."""
    import kopf

    from medusa_operator.controller import handlers

    kube = SlowKube(write_seconds=3600)
    reconciler = Reconciler(kube, OneModelCache(), OperatorConfig())
    reconciler.wake(("ns", "m"))
    memo = kopf.Memo(reconciler=reconciler, stopped=asyncio.Event(), stop_flag=asyncio.Event())
    memo.loop_task = asyncio.create_task(reconciler.run(memo.stopped))
    await kube.first_pass.wait()
    started = time.monotonic()
    await asyncio.wait_for(handlers.stop(memo=memo), timeout=10)
    assert time.monotonic() - started < 5 and memo.loop_task.done()
    assert memo.stop_flag.is_set(), "kopf's own wait on its stop flag ends too"
