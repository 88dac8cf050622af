"""kopf wiring, kept thin: watch events only wake the reconcile loop.

Only watch-event handlers are registered: kopf then writes nothing to the watched objects (no
finalizers, no progress or last-handled-configuration annotations). That keeps objects exactly as
users applied them, so GitOps tools see no drift, and a MedusaModel can be deleted at any time
without a finalizer to get stuck on; its children go with it through owner references.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..api.v1alpha1 import GROUP, PLURAL, VERSION
from ..config import OperatorConfig
from ..render import names
from .kube import Kube
from .reconciler import Reconciler

log = logging.getLogger(__name__)
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True  # leadership comes from our Lease (leader.py), not kopf peering
    settings.posting.enabled = False  # events are ours, one per transition (controller/status.py)
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    config: OperatorConfig = memo.config
    memo.reconciler = Reconciler(Kube(), config, may_act=getattr(memo, "may_act", None))
    memo.stopped = asyncio.Event()
    memo.loop_task = asyncio.create_task(memo.reconciler.run(memo.stopped), name="medusa-reconcile-loop")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.stopped.set()
    memo.reconciler.wakeup.set()
    await asyncio.wait_for(memo.loop_task, timeout=30)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_event(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") == "DELETED":
        memo.reconciler.forget((namespace, name))
    else:
        memo.reconciler.wake((namespace, name))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("v1", "pods", labels=MANAGED)
async def child_event(labels: dict[str, str], namespace: str, memo: kopf.Memo, **_: Any) -> None:
    model = labels.get(names.LABEL_MODEL)
    if model:
        memo.reconciler.wake((namespace, model))
