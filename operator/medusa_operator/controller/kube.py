"""The operator's writes to the Kubernetes API: apply, delete, write status, post events.

Reads come from the watch caches (cache.py); the one read made here is whether a Secret exists
(the operator does not watch Secrets). Children are applied with server-side apply under one
field manager; deletions propagate in the background so a Job's pods go with it.
"""

from __future__ import annotations

import logging
import secrets as random
from typing import Any

from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Event, Secret, Service
from lightkube.types import CascadeType, PatchType

from ..api.v1alpha1 import GROUP, KIND, PLURAL, VERSION
from ..config import FIELD_MANAGER, REPLICAS_FIELD_MANAGER
from ..render import names
from .plan import Deletion
from .status import Event as StatusEvent

log = logging.getLogger(__name__)

MedusaModelResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")

_KINDS = {
    ("batch/v1", "Job"): Job,
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HorizontalPodAutoscaler,
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
}


def _not_found(exc: Exception) -> bool:
    """A 404, from the API (ApiError) or for an API group the cluster does not serve (plain HTTP)."""
    if isinstance(exc, ApiError):
        return exc.status.code == 404
    return getattr(getattr(exc, "response", None), "status_code", None) == 404


class Kube:
    def __init__(self, client: AsyncClient | None = None) -> None:
        self.client = client or AsyncClient(field_manager=FIELD_MANAGER)

    async def secret_exists(self, namespace: str, name: str) -> bool:
        try:
            await self.client.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            if not _not_found(exc):
                raise
            return False
        return True

    async def apply(self, manifest: dict[str, Any]) -> None:
        await self.client.apply(from_dict(manifest), field_manager=FIELD_MANAGER, force=True)

    async def set_replicas(self, namespace: str, deployment: str, replicas: int) -> None:
        """Apply only ``spec.replicas``, under a field manager of its own (see REPLICAS_FIELD_MANAGER)."""
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": deployment, "namespace": namespace}, "spec": {"replicas": replicas}}
        try:
            await self.client.patch(Deployment, deployment, body, namespace=namespace, patch_type=PatchType.APPLY,
                                    field_manager=REPLICAS_FIELD_MANAGER, force=True)
        except ApiError as exc:
            if not _not_found(exc):  # not created yet: its first apply sets the count
                raise

    async def delete(self, namespace: str, deletion: Deletion) -> None:
        resource = _KINDS[(deletion.api_version, deletion.kind)]
        try:
            await self.client.delete(resource, deletion.name, namespace=namespace,
                                     cascade=CascadeType.BACKGROUND)
        except Exception as exc:  # noqa: BLE001 - already gone (or its API not served) is fine
            if not _not_found(exc):
                raise

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                           resource_version: str | None = None) -> str | None:
        """Merge ``status`` in; with ``resource_version`` the API server refuses (409) a model
        that changed since it was read, so no writer overwrites a status it has not seen."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        written = await self.client.patch(MedusaModelResource.Status, name, body, namespace=namespace,
                                          patch_type=PatchType.MERGE)
        return written.metadata.resourceVersion if written is not None and written.metadata else None

    async def emit(self, namespace: str, model: dict[str, Any], event: StatusEvent, now: str) -> None:
        meta = model["metadata"]
        await self.client.create(Event(
            metadata=ObjectMeta(name=f"{names.fit(meta['name'], 200)}.{random.token_hex(8)}", namespace=namespace),
            involvedObject=ObjectReference(apiVersion=f"{GROUP}/{VERSION}", kind=KIND, name=meta["name"],
                                           namespace=namespace, uid=meta.get("uid")),
            type=event.type, reason=event.reason, message=event.message[:1024],
            source=EventSource(component=FIELD_MANAGER), reportingComponent=FIELD_MANAGER,
            firstTimestamp=now, lastTimestamp=now, count=1,
        ))
