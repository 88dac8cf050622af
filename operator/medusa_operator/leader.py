"""Lease-based leader election, so that of several replicas exactly one acts.

A follower takes the Lease once its record has not changed for ``lease_seconds`` (measured on the
follower's own clock, so clock skew between nodes does not matter). The leader renews every
``retry_seconds``; if it cannot renew for ``renew_deadline_seconds`` (shorter than the lease) it
stops acting before anyone else may take over. With the defaults a dead leader is replaced within
about 12 seconds.
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
                 lease_seconds: int = 10, renew_deadline_seconds: float = 7, retry_seconds: float = 2) -> None:
        assert renew_deadline_seconds < lease_seconds
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline_seconds
        self.retry = retry_seconds
        self._observed: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        log.info("waiting for leadership", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})
        while not await self._try_acquire():
            await asyncio.sleep(self.retry)
        metrics.LEADER.set(1)
        log.info("became leader", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew until renewal fails for longer than the deadline, then set ``lost``."""
        last_renewal = time.monotonic()
        while not lost.is_set():
            await asyncio.sleep(self.retry)
            try:
                if await self._try_acquire():
                    last_renewal = time.monotonic()
                    continue
            except Exception:  # noqa: BLE001 - any failure to renew counts against the deadline
                log.warning("lease renewal failed", exc_info=True)
            if time.monotonic() - last_renewal > self.renew_deadline:
                metrics.LEADER.set(0)
                log.error("lost leadership", extra={"identity": self.identity})
                lost.set()

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown so a follower takes over at once."""
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
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            try:
                await self.client.create(Lease(
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
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = self.lease_seconds
        spec.renewTime = now
        try:
            await self.client.replace(lease)  # carries resourceVersion: a concurrent writer makes this 409
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        self._observed = (self.identity, spec.renewTime)
        self._observed_at = time.monotonic()
        return True
