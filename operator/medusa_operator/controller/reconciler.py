"""The reconcile loop: a work queue of models, each passed through read -> plan -> apply -> status.

Passes read the watch caches (cache.py), never the API server; the only requests are writes,
and a write is made only where something differs: a child whose manifest is already in place is
not applied again (applied.py), an unchanged status is not patched. A change of a model or of
any of its children queues the model, and so does a credentials Secret it names that goes or
comes back (secrets.py); a model also comes back when a wait or deadline its plan named ends,
while a Secret it needs is missing, and at the slow resync
(``resync_seconds``), the safety net for anything no watch reported. Several workers take
models from the queue; one model is never in two passes at once. A pass that raises is retried
with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from lightkube.core.exceptions import ApiError
from pydantic import ValidationError

from ..api.v1alpha1 import EngineStatus, MedusaModelSpec, MedusaModelStatus
from ..config import OperatorConfig
from ..render.context import ModelRef, RenderContext
from ..render import names
from ..render.jobs import secret_names
from .. import metrics
from . import applied
from . import status as st
from .events import EventPoster
from .kube import Kube
from .observed import Children, observe, secrets_to_check
from .plan import known_engine_key, plan
from .queue import WorkQueue
from .secrets import SecretPresence

log = logging.getLogger(__name__)

Key = tuple[str, str]
MAX_BACKOFF_SECONDS = 300.0
# After its own status write, a pass waits for the watch to bring that version before it reads
# the model again (it would plan from the status before its own write); at most this long.
OWN_WRITE_WAIT_SECONDS = 5.0
# How long a shutdown waits, after the passes in flight, for the Events they queued.
EVENT_DRAIN_SECONDS = 1.0
SYNC_WARNING_SECONDS = 30.0  # how often a start that waits for its caches says which


class NotLeader(Exception):
    """This replica may no longer act: the writes of the pass are dropped."""


class StatusConflict(Exception):
    """The model changed between this pass's read and its status write (another writer)."""


class Reads(Protocol):
    """What a pass reads: the watch caches (cache.ClusterCache)."""

    async def wait_synced(self) -> None: ...
    def unsynced(self) -> list[str]: ...
    def model(self, key: Key) -> dict[str, Any] | None: ...
    def model_keys(self) -> list[Key]: ...
    def children_of(self, key: Key) -> Children: ...
    def live(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (removed keys become null)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch


class Reconciler:
    def __init__(self, kube: Kube, cache: Reads, config: OperatorConfig,
                 may_act: Callable[[], bool] | None = None) -> None:
        self.kube = kube
        self.cache = cache
        self.config = config
        self.may_act = may_act or (lambda: True)  # the leader elector's is_leader, asked before every write
        self.queue: WorkQueue[Key] = WorkQueue(on_wait=metrics.QUEUE_WAIT_SECONDS.observe)
        self.failures: dict[Key, int] = {}
        self.last_phase: dict[Key, tuple[str | None, float]] = {}
        # The model version this replica's last status write made, and when, until the watch brings it.
        self.own_writes: dict[Key, tuple[str, float]] = {}
        # Manifests applied lately, by object, with their digest: a pass that runs before the watch
        # brings the result of an apply does not make the same request again.
        self.applied_lately: dict[tuple[str, str, str], tuple[str, float]] = {}
        # Engines any model here has built or found, by plan.known_engine_key; full descriptions.
        self.known_engines: dict[tuple[str, str, str], EngineStatus] = {}
        self.busy = 0  # passes in flight
        self.secrets = SecretPresence(kube.secret_exists, config.secret_check_seconds, self.queue.add)
        self.events = EventPoster(kube.emit, self.may_act)

    # -- what wakes a model ----------------------------------------------------------------

    def model_changed(self, key: Key, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        if after is None:
            self.forget(key)
            return
        written = self.own_writes.get(key)
        if written is not None and written[0] == after["metadata"].get("resourceVersion"):
            del self.own_writes[key]
        self.queue.add(key)

    def seen(self, key: Key, version: str) -> bool:
        """Whether the cache already holds ``version`` of the model, or a later one (the watch can
        bring a write's event before the write's own response arrives)."""
        cached = self.cache.model(key)
        held = (cached or {}).get("metadata", {}).get("resourceVersion")
        if held is None:
            return False
        try:
            return int(held) >= int(version)  # etcd's versions; opaque to clients, numeric in practice
        except ValueError:
            return held == version

    def wake(self, key: Key) -> None:
        self.queue.add(key)

    def forget(self, key: Key) -> None:
        self.queue.forget(key)
        self.failures.pop(key, None)
        self.last_phase.pop(key, None)
        self.own_writes.pop(key, None)
        self.secrets.track(key, set())
        metrics.forget_model(*key)

    # -- the workers -----------------------------------------------------------------------

    async def run(self, stopped: asyncio.Event) -> None:
        """Work until ``stopped``; a shutdown waits for the passes in flight, not for the queue."""
        if not await self.until_synced(stopped):
            return
        for key in self.cache.model_keys():
            self.queue.add(key)
        workers = [asyncio.create_task(self.work(stopped), name=f"medusa-worker-{i}")
                   for i in range(max(self.config.workers, 1))]
        workers.append(asyncio.create_task(self.secrets.run(), name="medusa-secret-checks"))
        workers.append(asyncio.create_task(self.events.run(), name="medusa-events"))
        try:
            await stopped.wait()
            while self.busy:
                await asyncio.sleep(0.02)
            if not await self.events.drain(EVENT_DRAIN_SECONDS):
                log.warning("stopping with events not posted", extra={"waiting": self.events.pending.qsize()})
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.queue.close()

    async def until_synced(self, stopped: asyncio.Event) -> bool:
        """Wait for every cache's first list (a pass on a half-filled cache would miss children
        and make them again); False if stopped first."""
        synced = asyncio.create_task(self.cache.wait_synced())
        stopping = asyncio.create_task(stopped.wait())
        try:
            while True:
                done, _ = await asyncio.wait({synced, stopping}, timeout=SYNC_WARNING_SECONDS,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    return False
                if synced in done:
                    return True
                log.warning("waiting for the watch caches to fill", extra={"waiting_for": self.cache.unsynced()})
        finally:
            for task in (synced, stopping):
                task.cancel()
            await asyncio.gather(synced, stopping, return_exceptions=True)

    async def work(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            key = await self.queue.get()
            if stopped.is_set():
                self.queue.done(key)
                return
            self.busy += 1
            try:
                await self.reconcile(key)
            finally:
                self.busy -= 1
                self.queue.done(key)

    async def reconcile(self, key: Key) -> None:
        started = time.monotonic()
        try:
            revisit = await self.reconcile_once(key)
        except NotLeader:
            log.warning("not the leader: this pass's writes are dropped", extra={"namespace": key[0], "model": key[1]})
            metrics.RECONCILES.labels("not-leader").inc()
            self.queue.add_after(key, self.config.reconcile_interval)
            return
        except StatusConflict:
            log.info("the model changed during the pass: reconciling it again once the change is seen",
                     extra={"namespace": key[0], "model": key[1]})
            self.queue.add_after(key, OWN_WRITE_WAIT_SECONDS)  # the watch event of that change queues it sooner
            return
        except Exception:  # noqa: BLE001 - one model's failure must not stop the others
            failures = self.failures.get(key, 0) + 1
            self.failures[key] = failures
            delay = min(self.config.reconcile_interval * 2 ** failures, MAX_BACKOFF_SECONDS)
            log.exception("reconcile failed", extra={"namespace": key[0], "model": key[1], "retry_in": delay})
            metrics.RECONCILES.labels("error").inc()
            self.queue.add_after(key, delay)
            return
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        metrics.RECONCILES.labels("ok").inc()
        self.failures.pop(key, None)
        if revisit is not None:
            # The resync is spread out so that thousands of models do not all come back at once.
            resync = self.config.resync_seconds * random.uniform(0.9, 1.1)
            self.queue.add_after(key, min(revisit, resync))

    async def reconcile_once(self, key: Key) -> float | None:
        """One pass; returns the seconds until the model should be looked at again without an
        event (the resync at most), or None when the model is gone."""
        namespace, name = key
        model = self.cache.model(key)
        if model is None or model["metadata"].get("deletionTimestamp"):
            return None
        written = self.own_writes.get(key)
        if written is not None:
            waited = time.monotonic() - written[1]
            if waited < OWN_WRITE_WAIT_SECONDS:
                log.debug("waiting for the watch to bring this replica's status write",
                          extra={"namespace": namespace, "model": name, "version": written[0]})
                return OWN_WRITE_WAIT_SECONDS - waited  # the watch event of our write queues it sooner
            del self.own_writes[key]
        meta = model["metadata"]
        generation = int(meta.get("generation") or 0)
        now = datetime.now(timezone.utc)
        raw_status = model.get("status") or {}
        try:
            old_status = MedusaModelStatus.model_validate(raw_status)
        except ValidationError:
            log.warning("status unreadable; starting afresh", extra={"namespace": namespace, "model": name})
            old_status = MedusaModelStatus()
        try:
            spec = MedusaModelSpec.model_validate(model.get("spec") or {})
        except ValidationError as exc:
            new_status = old_status.model_copy(deep=True)
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            st.set_condition(new_status, st.READY, False, "InvalidSpec", f"the spec is invalid: {problems}",
                             generation=generation, now=now)
            new_status.phase = "Failed" if new_status.revisions.current is None else "Degraded"
            new_status.message = f"the spec is invalid: {problems}"
            self.guard()
            await self.write_status(key, model, raw_status, old_status, new_status, now)
            return self.config.resync_seconds
        ctx = RenderContext(ModelRef(name, namespace, meta["uid"]), spec, self.config)
        observed = observe(name, self.cache.children_of(key), now)
        revisit: float = self.config.resync_seconds
        observed.missing_secrets = await self.secrets.missing(key, namespace,
                                                              secrets_to_check(observed, secret_names(ctx)))
        if observed.missing_secrets:
            revisit = self.config.reconcile_interval  # asked again soon: no watch tells when it is created
        observed.known_engines = dict(self.known_engines)
        observed.retry_token = (meta.get("annotations") or {}).get(names.RETRY_ANNOTATION)
        result = plan(ctx, generation, old_status, observed)
        engine = result.status.engine
        if engine.cache_key and engine.uri and st.is_true(result.status, st.ENGINE_BUILT):
            self.known_engines[known_engine_key(ctx, engine.cache_key)] = engine.model_copy()
        for gone in result.forget_engines:
            self.known_engines.pop(gone, None)
        to_apply = []
        for manifest in result.apply:
            live = self.cache.live(manifest["apiVersion"], manifest["kind"], namespace, manifest["metadata"]["name"])
            if applied.in_place(manifest, live):
                continue
            if self.applied_just_now(namespace, manifest):
                revisit = min(revisit, OWN_WRITE_WAIT_SECONDS)  # in case it went again meanwhile
                continue
            to_apply.append(manifest)
        if result.replicas or to_apply or result.delete:
            self.guard()  # a replica that may not act does not even begin (the log says what began)
            log.debug("write batch", extra={"namespace": namespace, "model": name, "apply": len(to_apply),
                                            "delete": len(result.delete), "replicas": len(result.replicas)})
        # The plan decided every write on what it observed, so they are independent and go out at
        # once (a pass costs two or three round trips, not one per object, which matters when the
        # API server is slow to answer), with two orderings: a Deployment's replica count is set
        # before the manifest that stops rendering it (see Plan.replicas), and the status goes
        # last, so it never tells of a write that failed.
        def counted(manifest: dict[str, Any]) -> bool:
            return manifest["kind"] == "Deployment" and manifest["metadata"]["name"] in result.replicas

        self.guard()
        await asyncio.gather(*(self.kube.set_replicas(namespace, deployment, replicas)
                               for deployment, replicas in result.replicas.items()),
                             *(self.apply(namespace, manifest) for manifest in to_apply if not counted(manifest)),
                             *(self.kube.delete(namespace, deletion) for deletion in result.delete))
        self.guard()
        await asyncio.gather(*(self.apply(namespace, manifest) for manifest in to_apply if counted(manifest)))
        writes = len(result.replicas) + len(to_apply) + len(result.delete)
        self.guard()
        await self.write_status(key, model, raw_status, old_status, result.status, now)
        self.record_metrics(key, old_status, result.status, now)
        if result.delete or result.status.phase != old_status.phase:
            log.info("reconciled", extra={"namespace": namespace, "model": name, "phase": result.status.phase,
                                          "writes": writes, "deleted": len(result.delete)})
        for later in (result.revisit_after, observed.look_again_at and (observed.look_again_at - now).total_seconds()):
            if later is not None:
                revisit = min(revisit, max(later, 0.0) + 0.05)
        log.debug("pass", extra={"namespace": namespace, "model": name, "phase": result.status.phase,
                                 "writes": writes, "revisit_in": round(revisit, 2)})
        return revisit

    async def apply(self, namespace: str, manifest: dict[str, Any]) -> None:
        stamped = applied.stamped(manifest)
        await self.kube.apply(stamped)
        self.applied_lately[(namespace, manifest["kind"], manifest["metadata"]["name"])] = (
            stamped["metadata"]["annotations"][names.APPLIED_ANNOTATION], time.monotonic())

    def applied_just_now(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """This very manifest was applied less than OWN_WRITE_WAIT_SECONDS ago (the cache may not
        show it yet)."""
        now = time.monotonic()
        if len(self.applied_lately) > 10_000:
            self.applied_lately = {k: v for k, v in self.applied_lately.items() if now - v[1] < OWN_WRITE_WAIT_SECONDS}
        lately = self.applied_lately.get((namespace, manifest["kind"], manifest["metadata"]["name"]))
        return lately is not None and now - lately[1] < OWN_WRITE_WAIT_SECONDS and lately[0] == applied.digest(manifest)

    def guard(self) -> None:
        """Before every write: a replica that lost its Lease (or cannot tell) must not write."""
        if not self.may_act():
            raise NotLeader()

    async def write_status(self, key: Key, model: dict[str, Any], raw_old: dict[str, Any],
                           old: MedusaModelStatus, new: MedusaModelStatus, now: datetime) -> None:
        """Write the status only onto the version of the model this pass read (resourceVersion)."""
        namespace, name = key
        new_raw = new.model_dump(by_alias=True, mode="json", exclude_none=True)
        patch = merge_patch(raw_old, new_raw)
        if patch:
            self.guard()
            log.debug("write batch", extra={"namespace": namespace, "model": name, "status": sorted(patch)})
            try:
                version = await self.kube.patch_status(namespace, name, patch,
                                                       model["metadata"].get("resourceVersion"))
            except ApiError as exc:
                if exc.status.code == 409:
                    raise StatusConflict() from exc
                raise
            if version and not self.seen(key, version):
                self.own_writes[key] = (version, time.monotonic())
        self.events.post(namespace, model, st.transition_events(old, new), st.rfc3339(now))

    def record_metrics(self, key: Key, old: MedusaModelStatus, new: MedusaModelStatus, now: datetime) -> None:
        namespace, name = key
        metrics.set_phase(namespace, name, new.phase)
        clock = time.monotonic()
        previous_phase, since = self.last_phase.get(key, (new.phase, clock))
        if previous_phase:
            metrics.PHASE_SECONDS.labels(namespace, name, previous_phase).inc(clock - since)
        self.last_phase[key] = (new.phase, clock)
        if not st.is_true(old, st.ENGINE_BUILT) and st.is_true(new, st.ENGINE_BUILT):
            metrics.ENGINE_CACHE.labels("hit" if new.engine.reused else "miss").inc()
            if not new.engine.reused and new.engine.build_seconds:
                metrics.BUILD_SECONDS.observe(new.engine.build_seconds)
        verdict_changed = (new.validation.revision, new.validation.passed) != (old.validation.revision,
                                                                               old.validation.passed)
        if verdict_changed and new.validation.passed is not None:
            metrics.VALIDATIONS.labels("passed" if new.validation.passed else "failed").inc()
            started = old.revisions.candidate_since
            if started:
                begun = datetime.fromisoformat(started.replace("Z", "+00:00"))
                metrics.VALIDATION_SECONDS.observe((now - begun).total_seconds())
        if new.validation.speedup is not None and new.validation.passed:
            metrics.SPEEDUP.labels(namespace, name).set(new.validation.speedup)
