"""Events leave the pass (issue 25: a pass's worker is the scarce thing when the API server is
slow, and an Event is a round trip that nothing in the operator waits on). Stand-in clients stage
an API server that is slow to take Events; what is posted, when and by whom is checked."""

from __future__ import annotations

import asyncio

from medusa_operator import metrics
from medusa_operator.config import OperatorConfig
from medusa_operator.controller.events import EventPoster
from medusa_operator.controller.reconciler import Reconciler
from medusa_operator.controller.status import Event

from reconciler_standins import OneModelCache, RecordingKube


class EventKube(RecordingKube):
    """Takes ``event_seconds`` to answer each Event; records reasons in the order posted."""

    def __init__(self, event_seconds: float) -> None:
        super().__init__()
        self.event_seconds = event_seconds
        self.reasons: list[str] = []
        self.begun: list[str] = []

    async def emit(self, namespace, model, event, at):
        self.begun.append(event.reason)
        await asyncio.sleep(self.event_seconds)
        self.reasons.append(event.reason)


async def test_a_pass_does_not_wait_for_its_events() -> None:
    kube = EventKube(event_seconds=3600)
    reconciler = Reconciler(kube, OneModelCache(), OperatorConfig())
    await asyncio.wait_for(reconciler.reconcile(("ns", "m")), timeout=5)
    assert "status@7" in kube.writes
    assert reconciler.events.pending.qsize() >= 1, "the first pass of a new model has Events to tell"


async def stop_once_events_are_posted(kube: EventKube, shutdown_seconds: float) -> None:
    """Run the reconcile loop over one model, stop it once its first Event is on its way, and
    give the shutdown ``shutdown_seconds``."""
    cache = OneModelCache()
    cache.keys = [("ns", "m")]
    reconciler = Reconciler(kube, cache, OperatorConfig())
    stopped = asyncio.Event()
    loop = asyncio.create_task(reconciler.run(stopped))
    for _ in range(200):
        if kube.begun:
            break
        await asyncio.sleep(0.01)
    stopped.set()
    await asyncio.wait_for(loop, timeout=shutdown_seconds)


async def test_a_shutdown_waits_for_the_events_on_their_way() -> None:
    kube = EventKube(event_seconds=0.3)
    await stop_once_events_are_posted(kube, shutdown_seconds=5)
    assert kube.begun and kube.reasons == kube.begun


async def test_a_replica_that_may_not_act_posts_no_events() -> None:
    kube = EventKube(event_seconds=0)
    leading = [True]
    poster = EventPoster(kube.emit, lambda: leading[0])
    model = {"metadata": {"name": "m"}}
    poster.post("ns", model, [Event("Normal", "First", "one")], "2026-01-01T00:00:00Z")
    leading[0] = False
    poster.post("ns", model, [Event("Normal", "Second", "two")], "2026-01-01T00:00:00Z")
    sender = asyncio.create_task(poster.run())
    assert await poster.drain(2)
    sender.cancel()
    assert kube.reasons == [], "leadership is asked when an Event is sent, not when it is queued"


async def test_events_beyond_the_bound_are_dropped_and_counted_and_a_failed_one_does_not_stop_the_rest() -> None:
    posted: list[str] = []

    async def post(namespace, model, event, at):
        if event.reason == "Refused":
            raise RuntimeError("the API server refused it")
        posted.append(event.reason)

    poster = EventPoster(post, lambda: True, max_pending=2)
    dropped_before = metrics.EVENTS_DROPPED._value.get()
    model = {"metadata": {"name": "m"}}
    poster.post("ns", model, [Event("Warning", "Refused", "x"), Event("Normal", "Kept", "y"),
                              Event("Normal", "Dropped", "z")], "2026-01-01T00:00:00Z")
    assert metrics.EVENTS_DROPPED._value.get() == dropped_before + 1
    sender = asyncio.create_task(poster.run())
    assert await poster.drain(2)
    sender.cancel()
    assert posted == ["Kept"]


async def test_a_shutdown_does_not_wait_long_for_an_api_server_that_takes_no_events() -> None:
    await stop_once_events_are_posted(EventKube(event_seconds=3600), shutdown_seconds=3)
