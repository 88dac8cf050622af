"""Kubernetes Events for models, posted beside the reconcile passes rather than inside them.

An Event tells people what happened; nothing in the operator reads it back. A pass that waited
for its Events' round trips would hold its worker (and every model queued behind it) for
nothing, so a pass hands them here and moves on; a few senders take them in the order given
(``SENDERS`` at once, so one slow answer does not hold up the rest).
Events are best effort, as in Kubernetes itself: one the API server refuses is logged and
dropped, and when the API server falls far behind, new ones are dropped (counted) rather than
held without bound. A replica that may no longer act posts none.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from .. import metrics
from .status import Event

log = logging.getLogger(__name__)

# Events waiting to be posted; beyond this the API server is far behind and new ones are dropped.
MAX_PENDING_EVENTS = 10_000
SENDERS = 4  # Events in flight at once

Post = Callable[[str, dict[str, Any], Event, str], Awaitable[None]]


class EventPoster:
    def __init__(self, post: Post, may_act: Callable[[], bool], max_pending: int = MAX_PENDING_EVENTS) -> None:
        self.post_one, self.may_act = post, may_act
        self.pending: asyncio.Queue[tuple[str, dict[str, Any], Event, str]] = asyncio.Queue(max_pending)

    def post(self, namespace: str, model: dict[str, Any], events: list[Event], at: str) -> None:
        """Queue ``events`` about ``model`` (returns at once)."""
        for event in events:
            try:
                self.pending.put_nowait((namespace, model, event, at))
            except asyncio.QueueFull:
                metrics.EVENTS_DROPPED.inc()
                log.warning("event dropped: too many waiting to be posted",
                            extra={"namespace": namespace, "model": model["metadata"]["name"],
                                   "reason": event.reason, "waiting": self.pending.qsize()})

    async def run(self) -> None:
        """Post queued Events until cancelled."""
        senders = [asyncio.create_task(self._send(), name=f"medusa-events-{i}") for i in range(SENDERS)]
        try:
            await asyncio.gather(*senders)
        finally:
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

    async def drain(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until every queued Event is posted; False if some are not."""
        try:
            await asyncio.wait_for(self.pending.join(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _send(self) -> None:
        while True:
            namespace, model, event, at = await self.pending.get()
            try:
                if self.may_act():
                    await self.post_one(namespace, model, event, at)
            except Exception:  # noqa: BLE001 - best effort: the status holds the same facts
                log.warning("posting an event failed", exc_info=True,
                            extra={"namespace": namespace, "model": model["metadata"]["name"],
                                   "reason": event.reason})
            finally:
                self.pending.task_done()
