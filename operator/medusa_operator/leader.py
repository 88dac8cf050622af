"""Lease-based leader election, so that of several replicas exactly one acts.

A follower takes the Lease once its record has not changed for ``lease_seconds`` (measured on the
follower's own clock, so clock skew between nodes does not matter). The leader renews every
``retry_seconds``; each renewal may take at most ``renew_timeout_seconds``. ``is_leader()`` is
true only within ``renew_deadline_seconds`` (shorter than the lease) of the start of the last
successful renewal, so a leader that cannot renew, or was paused, stops acting before anyone else
may take over: the reconcile loop asks it before every write. With the defaults a dead leader is
replaced within about 12 seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from . import metrics

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(self, client: AsyncClient, namespace: str, name: str, identity: str, *,
                 lease_seconds: int = 10, renew_deadline_seconds: float = 7, retry_seconds: float = 2,
                 renew_timeout_seconds: float = 3) -> None:
        if not renew_timeout_seconds < renew_deadline_seconds < lease_seconds:
            raise ValueError("leader election needs renew timeout < renew deadline < lease duration, got "
                             f"{renew_timeout_seconds} / {renew_deadline_seconds} / {lease_seconds}")
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline_seconds
        self.renew_timeout = renew_timeout_seconds
        self.retry = retry_seconds
        self._observed: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # monotonic start of the last successful acquire or renewal
        # The Lease as this replica's last write left it: the next renewal writes over it without
        # reading it first (one request, not two), unless someone else wrote it meanwhile (409).
        self._written: Lease | None = None

    def is_leader(self) -> bool:
        """Whether this replica may act now: it renewed within the renew deadline."""
        return self._renewed_at is not None and time.monotonic() - self._renewed_at < self.renew_deadline

    async def _attempt(self) -> bool:
        """One bounded try: a renewal that hangs counts as failed long before the deadline."""
        started = time.monotonic()
        try:
            held = await asyncio.wait_for(self._try_acquire(), timeout=self.renew_timeout)
        except asyncio.TimeoutError:
            log.warning("lease request timed out", extra={"timeout": self.renew_timeout})
            return False
        if held:
            self._renewed_at = started  # the Lease's renewTime is no earlier than this
        return held

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        log.info("waiting for leadership", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})
        while not await self._attempt():
            await asyncio.sleep(self.retry)
        metrics.LEADER.set(1)
        log.info("became leader", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew until renewal fails for longer than the deadline, then set ``lost``."""
        while not lost.is_set():
            await asyncio.sleep(self.retry)
            try:
                if await self._attempt():
                    continue
            except Exception:  # noqa: BLE001 - any failure to renew counts against the deadline
                log.warning("lease renewal failed", exc_info=True)
            if not self.is_leader():
                metrics.LEADER.set(0)
                log.error("lost leadership", extra={"identity": self.identity})
                lost.set()

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown so a follower takes over at once."""
        self._renewed_at = None
        self._written = None
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                await self.client.replace(lease)
        except ApiError:
            log.warning("could not release the lease", exc_info=True)
        metrics.LEADER.set(0)

    async def _try_acquire(self) -> bool:
        now = datetime.now(timezone.utc)
        if self._written is not None:
            if await self._write(self._written, now):
                return True
            self._written = None  # changed since this replica wrote it: read it and decide again
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            try:
                self._written = await self.client.create(Lease(
                    metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                    spec=LeaseSpec(holderIdentity=self.identity, leaseDurationSeconds=self.lease_seconds,
                                   acquireTime=now, renewTime=now, leaseTransitions=0)))
                return True
            except ApiError as exc2:
                if exc2.status.code == 409:
                    return False
                raise
        spec = lease.spec
        record = (spec.holderIdentity, str(spec.renewTime))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        held_by_other = spec.holderIdentity not in (None, "", self.identity)
        expired = time.monotonic() - self._observed_at > (spec.leaseDurationSeconds or self.lease_seconds)
        if held_by_other and not expired:
            return False
        if spec.holderIdentity != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        return await self._write(lease, now)

    async def _write(self, lease: Lease, now: datetime) -> bool:
        """Write ``lease`` as held by this replica, renewed ``now``; False if it changed since it
        was read (its resourceVersion no longer matches)."""
        spec = lease.spec
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = self.lease_seconds
        spec.renewTime = now
        try:
            self._written = await self.client.replace(lease)
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        self._observed = (self.identity, spec.renewTime)
        self._observed_at = time.monotonic()
        return True
