"""The reconcile loop: a work queue of models, each passed through read -> plan -> apply -> status.

Events (on models and on their Jobs, Deployments and pods) wake a model at once; every model is
also revisited every ``reconcile_interval`` seconds, so a missed event changes nothing. A pass
that raises is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from lightkube.core.exceptions import ApiError
from pydantic import ValidationError

from ..api.v1alpha1 import EngineStatus, MedusaModelSpec, MedusaModelStatus
from ..config import OperatorConfig
from ..render.context import ModelRef, RenderContext
from ..render import names
from ..render.jobs import secret_names
from .. import metrics
from . import status as st
from .kube import Kube
from .plan import known_engine_key, plan

log = logging.getLogger(__name__)

Key = tuple[str, str]
MAX_BACKOFF_SECONDS = 300.0


class NotLeader(Exception):
    """This replica may no longer act: the writes of the pass are dropped."""


class StatusConflict(Exception):
    """The model changed between this pass's read and its status write (another writer)."""


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
    def __init__(self, kube: Kube, config: OperatorConfig, may_act: Callable[[], bool] | None = None) -> None:
        self.kube = kube
        self.config = config
        self.may_act = may_act or (lambda: True)  # the leader elector's is_leader, asked before every write
        self.due: dict[Key, float] = {}
        self.failures: dict[Key, int] = {}
        self.last_phase: dict[Key, tuple[str | None, float]] = {}
        # Engines any model here has built or found, by plan.known_engine_key; full descriptions.
        self.known_engines: dict[tuple[str, str, str], EngineStatus] = {}
        self.wakeup = asyncio.Event()

    def wake(self, key: Key) -> None:
        self.due[key] = 0.0
        self.wakeup.set()

    def forget(self, key: Key) -> None:
        self.due.pop(key, None)
        self.failures.pop(key, None)
        self.last_phase.pop(key, None)
        metrics.forget_model(*key)

    async def run(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            now = time.monotonic()
            ready = [k for k, t in self.due.items() if t <= now]
            for key in ready:
                await self.reconcile(key)
            upcoming = [t for t in self.due.values()]
            timeout = max(min(upcoming) - time.monotonic(), 0.05) if upcoming else self.config.reconcile_interval
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=min(timeout, self.config.reconcile_interval))
            except asyncio.TimeoutError:
                pass

    async def reconcile(self, key: Key) -> None:
        started = time.monotonic()
        try:
            found = await self.reconcile_once(key)
        except NotLeader:
            log.warning("not the leader: this pass's writes are dropped", extra={"namespace": key[0], "model": key[1]})
            metrics.RECONCILES.labels("not-leader").inc()
            self.due[key] = time.monotonic() + self.config.reconcile_interval
            return
        except StatusConflict:
            log.info("the model changed during the pass: reconciling it again",
                     extra={"namespace": key[0], "model": key[1]})
            self.due[key] = time.monotonic()
            return
        except Exception:  # noqa: BLE001 - one model's failure must not stop the others
            failures = self.failures.get(key, 0) + 1
            self.failures[key] = failures
            delay = min(self.config.reconcile_interval * 2 ** failures, MAX_BACKOFF_SECONDS)
            log.exception("reconcile failed", extra={"namespace": key[0], "model": key[1], "retry_in": delay})
            metrics.RECONCILES.labels("error").inc()
            self.due[key] = time.monotonic() + delay
            return
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        metrics.RECONCILES.labels("ok").inc()
        self.failures.pop(key, None)
        if found:
            self.due[key] = time.monotonic() + self.config.reconcile_interval
        else:
            self.forget(key)

    async def reconcile_once(self, key: Key) -> bool:
        namespace, name = key
        model = await self.kube.get_model(namespace, name)
        if model is None or model["metadata"].get("deletionTimestamp"):
            return False
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
            await self.write_status(model, raw_status, old_status, new_status, now)
            return True
        ctx = RenderContext(ModelRef(name, namespace, meta["uid"]), spec, self.config)
        observed = await self.kube.observe(namespace, name, secret_names(ctx), now)
        observed.known_engines = dict(self.known_engines)
        observed.retry_token = (meta.get("annotations") or {}).get(names.RETRY_ANNOTATION)
        result = plan(ctx, generation, old_status, observed)
        engine = result.status.engine
        if engine.cache_key and engine.uri and st.is_true(result.status, st.ENGINE_BUILT):
            self.known_engines[known_engine_key(ctx, engine.cache_key)] = engine.model_copy()
        for gone in result.forget_engines:
            self.known_engines.pop(gone, None)
        self.guard()
        log.debug("write batch", extra={"namespace": namespace, "model": name, "apply": len(result.apply),
                                        "delete": len(result.delete), "replicas": len(result.replicas)})
        for deployment, replicas in result.replicas.items():  # before apply: see Plan.replicas
            self.guard()
            await self.kube.set_replicas(namespace, deployment, replicas)
        for manifest in result.apply:
            self.guard()
            await self.kube.apply(manifest)
        for deletion in result.delete:
            self.guard()
            await self.kube.delete(namespace, deletion)
        self.guard()
        await self.write_status(model, raw_status, old_status, result.status, now)
        self.record_metrics(key, old_status, result.status, now)
        if result.delete or result.status.phase != old_status.phase:
            log.info("reconciled", extra={"namespace": namespace, "model": name, "phase": result.status.phase,
                                          "applied": len(result.apply), "deleted": len(result.delete)})
        return True

    def guard(self) -> None:
        """Before every write: a replica that lost its Lease (or cannot tell) must not write."""
        if not self.may_act():
            raise NotLeader()

    async def write_status(self, model: dict[str, Any], raw_old: dict[str, Any], old: MedusaModelStatus,
                           new: MedusaModelStatus, now: datetime) -> None:
        """Write the status only onto the version of the model this pass read (resourceVersion)."""
        namespace, name = model["metadata"]["namespace"], model["metadata"]["name"]
        new_raw = new.model_dump(by_alias=True, mode="json", exclude_none=True)
        patch = merge_patch(raw_old, new_raw)
        if patch:
            try:
                await self.kube.patch_status(namespace, name, patch, model["metadata"].get("resourceVersion"))
            except ApiError as exc:
                if exc.status.code == 409:
                    raise StatusConflict() from exc
                raise
        for event in st.transition_events(old, new):
            self.guard()
            await self.kube.emit(namespace, model, event, st.rfc3339(now))

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
