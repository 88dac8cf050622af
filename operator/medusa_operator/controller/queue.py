"""A work queue of model keys: each key at most once in the queue and in one worker at a time.

A key added while a worker holds it is marked dirty and queued again when that worker is done,
so no change is lost and no two passes of one model overlap. ``add_after`` keeps the earliest
of the times asked for a key (a retry, a deadline the plan named, the periodic resync).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, on_wait: Callable[[float], None] | None = None) -> None:
        """``on_wait`` is told, for each key a worker takes, how long it waited for one (seconds
        from being queued, or from its timer firing)."""
        self._ready: deque[K] = deque()
        self._queued: dict[K, float] = {}  # key -> when it was queued
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._has_work = asyncio.Event()
        self._on_wait = on_wait

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued[key] = time.monotonic()
            self._ready.append(key)
            self._has_work.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """Drop a key's pending timer (its model is gone); a pass in flight still finishes."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._dirty.discard(key)

    async def get(self) -> K:
        while not self._ready:
            self._has_work.clear()
            await self._has_work.wait()
        key = self._ready.popleft()
        queued = self._queued.pop(key)
        self._active.add(key)
        if self._on_wait is not None:
            self._on_wait(time.monotonic() - queued)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
