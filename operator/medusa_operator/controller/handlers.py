"""kopf wiring, kept thin: it starts the reconcile workers once this replica leads and stops them.

The operator registers no resource handlers with kopf: its own watch caches (cache.py) follow
MedusaModels and their children, so kopf writes nothing to the watched objects (no finalizers,
no progress or last-handled-configuration annotations). That keeps objects exactly as users
applied them, so GitOps tools see no drift, and a MedusaModel can be deleted at any time
without a finalizer to get stuck on; its children go with it through owner references.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 2.0  # how long a shutdown waits for the reconcile passes in flight


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True  # leadership comes from our Lease (leader.py), not kopf peering
    settings.posting.enabled = False  # events are ours, one per transition (controller/status.py)
    # kopf serves no resource here, so it need not follow CRDs and namespaces (nor be granted to).
    settings.scanning.disabled = True
    memo.stopped = asyncio.Event()
    memo.loop_task = asyncio.create_task(memo.reconciler.run(memo.stopped), name="medusa-reconcile-loop")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Let the passes in flight finish, for a short while: a pass cut short is only redone (every
    write is idempotent), but a replica that is slow to stop holds up its successor."""
    stop_flag = getattr(memo, "stop_flag", None)
    if stop_flag is not None:
        # Stopped by a signal, kopf leaves its own waiter on the stop flag pending and then waits
        # 5 s for it before it returns: raising the flag now ends that waiter at once.
        stop_flag.set()
    memo.stopped.set()
    try:
        await asyncio.wait_for(memo.loop_task, timeout=STOP_GRACE_SECONDS)
    except asyncio.TimeoutError:
        log.warning("stopped the reconcile passes in flight", extra={"grace_seconds": STOP_GRACE_SECONDS})
