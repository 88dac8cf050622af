"""Watch caches: one list-and-watch per kind, kept in memory, read by every reconcile pass.

An ``Informer`` lists its kind once (in pages), then follows a watch from the list's
resourceVersion, with bookmarks so that a quiet kind can resume after the server ends the watch
without listing again. Only a ``410 Gone`` (the version fell out of the server's window) or a
broken stream that cannot resume makes it list again; a re-list reports the objects that went
away meanwhile as deletions. Children are selected on the server by the operator's
managed-by label, so nothing else in the cluster is sent or held.

Objects are held trimmed to the fields the operator reads (see ``TRIMS``): a Job keeps its
conditions, not its pod template; a pod keeps its containers' states, not its spec. That keeps
the memory of thousands of models to what the plan needs.

The caches run from the start on every replica, leader or not, so a standby that takes over
acts at once on a warm picture of the cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig

from ..api.v1alpha1 import GROUP, PLURAL, VERSION
from ..render import names
from .observed import Children

log = logging.getLogger(__name__)

# The HTTP library lightkube is built on: the caches stream watches through a client made from
# lightkube's own configuration (kubeconfig or in-cluster), so both authenticate alike.
httpx = client_adapter.httpx

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
Listener = Callable[[Obj | None, Obj | None], None]  # (before, after); None: absent

PAGE_SIZE = 500
# The server ends each watch after this long (randomised per watch, so the kinds do not all
# reconnect at once); with bookmarks the next watch resumes where this one ended.
WATCH_SECONDS = (240, 360)
RETRY_SECONDS = (0.5, 30.0)  # backoff between failed list or watch attempts: first, most
ABSENT_RECHECK_SECONDS = 300.0  # a kind the cluster does not serve (KEDA not installed) is listed again after this


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


@dataclass(frozen=True)
class Kind:
    """A resource the operator caches: its API path, plural, and the fields it keeps."""

    api: str  # "api/v1" or "apis/<group>/<version>"
    plural: str
    trim: Callable[[Obj], Obj]
    optional: bool = False  # an API the cluster may not serve (CRDs of an add-on)

    def path(self, namespace: str | None) -> str:
        return f"/{self.api}/namespaces/{namespace}/{self.plural}" if namespace else f"/{self.api}/{self.plural}"


def _meta(obj: Obj, *extra: str) -> Obj:
    meta = obj.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "generation", "labels",
                                 "annotations", "creationTimestamp", "deletionTimestamp", *extra) if k in meta}
    return kept


def _pick(source: Obj | None, *fields: str) -> Obj:
    return {k: source[k] for k in fields if source and k in source}


def trim_model(obj: Obj) -> Obj:
    meta = _meta(obj)
    # kubectl's last-applied copy of the whole spec is not needed and can be large.
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    meta["annotations"] = annotations
    return {"metadata": meta, "spec": obj.get("spec") or {}, "status": obj.get("status") or {}}


def _container_status(cs: Obj) -> Obj:
    return _pick(cs, "name", "state", "lastState", "ready", "restartCount")


def _meta_read_only(obj: Obj) -> Obj:
    """Metadata of a kind the operator only reads (pods; Jobs, never applied again once they
    exist): annotations are nobody's business here, and an update of one wakes no model."""
    meta = _meta(obj)
    meta.pop("annotations", None)
    return meta


def trim_pod(obj: Obj) -> Obj:
    status = obj.get("status") or {}
    kept = _pick(status, "phase", "conditions")
    for field in ("containerStatuses", "initContainerStatuses"):
        if status.get(field):
            kept[field] = [_container_status(cs) for cs in status[field]]
    return {"metadata": _meta_read_only(obj), "spec": _pick(obj.get("spec"), "restartPolicy", "nodeName"),
            "status": kept}


def trim_job(obj: Obj) -> Obj:
    # A Job's spec cannot change after creation and the plan never re-applies one that exists.
    return {"metadata": _meta_read_only(obj),
            "status": _pick(obj.get("status"), "conditions", "succeeded", "failed", "active")}


def same_apart_from_version(before: Obj, after: Obj) -> bool:
    """Two trimmed versions of an object that differ in nothing the operator reads."""
    def content(obj: Obj) -> Obj:
        return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}
    return content(before) == content(after)


def trim_applied(obj: Obj) -> Obj:
    """What the operator applies in full (Deployments, Services, autoscalers): the spec, for the
    check that a desired manifest is already in place, and the status it reads."""
    status = _pick(obj.get("status"), "readyReplicas", "replicas", "desiredReplicas", "currentReplicas")
    return {"metadata": _meta(obj), "spec": obj.get("spec") or {}, "status": status}


MODELS = Kind(f"apis/{GROUP}/{VERSION}", PLURAL, trim_model)
JOBS = Kind("apis/batch/v1", "jobs", trim_job)
PODS = Kind("api/v1", "pods", trim_pod)
DEPLOYMENTS = Kind("apis/apps/v1", "deployments", trim_applied)
SERVICES = Kind("api/v1", "services", trim_applied)
HPAS = Kind("apis/autoscaling/v2", "horizontalpodautoscalers", trim_applied)
SCALED_OBJECTS = Kind("apis/keda.sh/v1alpha1", "scaledobjects", trim_applied, optional=True)
CHILD_KINDS = (JOBS, PODS, DEPLOYMENTS, SERVICES, HPAS, SCALED_OBJECTS)
BY_TYPE = {("batch/v1", "Job"): JOBS, ("apps/v1", "Deployment"): DEPLOYMENTS, ("v1", "Service"): SERVICES,
           ("autoscaling/v2", "HorizontalPodAutoscaler"): HPAS, ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECTS}
MANAGED_SELECTOR = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"


def cache_http_client() -> httpx.AsyncClient:
    """An HTTP client for the API server, configured as lightkube's (kubeconfig or in-cluster)."""
    params = client_adapter.ConnectionParams(timeout=httpx.Timeout(30.0))
    return client_adapter.AsyncClient(KubeConfig.from_env().get(), params)


def object_key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def model_key(obj: Obj) -> Key | None:
    """The model a child belongs to, by its model label."""
    model = ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_MODEL)
    return (obj["metadata"].get("namespace", ""), model) if model else None


class Informer:
    """One kind in one namespace (or all): a store of trimmed objects kept current by a watch."""

    def __init__(self, http: httpx.AsyncClient, kind: Kind, namespace: str | None, selector: str | None,
                 listener: Listener) -> None:
        self.http, self.kind, self.namespace, self.selector = http, kind, namespace, selector
        self.listener = listener
        self.objects: dict[Key, Obj] = {}
        self.synced = asyncio.Event()  # set after the first complete list
        self.served = True  # False while the cluster does not serve the kind (only for optional kinds)
        self.lists = 0  # complete lists so far: one, unless the watch could not resume
        self.where = f"{kind.plural}" + (f" in {namespace}" if namespace else "")

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                await self._watch(version)
            except Gone:
                log.info("watch too old: listing again", extra={"cache": self.where})
            except asyncio.CancelledError:
                raise
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404 and self.kind.optional:
                    self._absent()
                    await asyncio.sleep(ABSENT_RECHECK_SECONDS)
                    continue
                failures += 1
                await self._back_off(failures, exc)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                failures += 1
                await self._back_off(failures, exc)

    async def _back_off(self, failures: int, exc: Exception) -> None:
        first, most = RETRY_SECONDS
        delay = min(first * 2 ** (failures - 1), most)
        log.warning("cache list or watch failed; retrying", extra={"cache": self.where, "error": str(exc)[:300],
                                                                    "retry_in": delay})
        await asyncio.sleep(delay)

    def _absent(self) -> None:
        if self.served:
            log.info("the cluster does not serve this kind", extra={"cache": self.where})
        self.served = False
        self._replace({})
        self.synced.set()

    def _params(self) -> dict[str, str]:
        return {"labelSelector": self.selector} if self.selector else {}

    async def _list(self) -> str:
        found: dict[Key, Obj] = {}
        params = {**self._params(), "limit": str(PAGE_SIZE)}
        while True:
            resp = await self.http.get(self.kind.path(self.namespace), params=params)
            resp.raise_for_status()
            page = resp.json()
            for item in page.get("items") or []:
                trimmed = self.kind.trim(item)
                found[object_key(trimmed)] = trimmed
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params["continue"] = meta["continue"]
        self.served = True
        self._replace(found)
        self.lists += 1
        self.synced.set()
        return meta["resourceVersion"]

    def _replace(self, found: dict[Key, Obj]) -> None:
        before = self.objects
        self.objects = found
        for key, old in before.items():
            if key not in found:
                self.listener(old, None)
        for key, new in found.items():
            old = before.get(key)
            if old is None or old["metadata"].get("resourceVersion") != new["metadata"].get("resourceVersion"):
                self.listener(old, new)

    async def _watch(self, version: str) -> None:
        while True:
            params = {**self._params(), "watch": "true", "allowWatchBookmarks": "true",
                      "resourceVersion": version, "timeoutSeconds": str(random.randint(*WATCH_SECONDS))}
            # The server ends every watch by its timeout; a stream silent for longer is dead.
            async with self.http.stream("GET", self.kind.path(self.namespace), params=params,
                                        timeout=httpx.Timeout(10.0, read=WATCH_SECONDS[1] + 60)) as resp:
                if resp.status_code == 410:
                    raise Gone()
                resp.raise_for_status()
                async for line in resp.aiter_lines():
                    if line:
                        version = self._event(json.loads(line), version)

    def _event(self, event: Obj, version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ValueError(f"watch error: {obj.get('message') or obj}")
        version = obj.get("metadata", {}).get("resourceVersion") or version
        if kind == "BOOKMARK":
            return version
        trimmed = self.kind.trim(obj)
        key = object_key(trimmed)
        old = self.objects.get(key)
        if kind == "DELETED":
            if old is not None:
                del self.objects[key]
                self.listener(old, None)
        else:
            self.objects[key] = trimmed
            self.listener(old, trimmed)
        return version


class ClusterCache:
    """Every kind the operator reads, for the namespaces it watches, with children indexed by model.

    ``on_model`` hears every change of a MedusaModel; ``on_child`` the model key a changed child
    belongs to. The reconciler turns both into work.
    """

    def __init__(self, http: httpx.AsyncClient, namespaces: Iterable[str] | None,
                 on_model: Callable[[Key, Obj | None, Obj | None], None],
                 on_child: Callable[[Key], None]) -> None:
        self.on_model, self.on_child = on_model, on_child
        self.children: dict[Kind, dict[Key, dict[str, Obj]]] = {kind: {} for kind in CHILD_KINDS}
        scopes: list[str | None] = list(namespaces or []) or [None]
        self.informers: list[Informer] = []
        self.model_informers: list[Informer] = []
        self.child_informers: dict[Kind, list[Informer]] = {kind: [] for kind in CHILD_KINDS}
        for namespace in scopes:
            models = Informer(http, MODELS, namespace, None, self._model_changed)
            self.model_informers.append(models)
            self.informers.append(models)
            for kind in CHILD_KINDS:
                informer = Informer(http, kind, namespace, MANAGED_SELECTOR, self._child_changed(kind))
                self.child_informers[kind].append(informer)
                self.informers.append(informer)
        # Children carry the model's name fitted to a label value (63 characters): back to the name.
        self.model_by_label: dict[Key, str] = {}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(i.run(), name=f"cache-{i.where}") for i in self.informers]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    def unsynced(self) -> list[str]:
        return [i.where for i in self.informers if not i.synced.is_set()]

    def _model_changed(self, before: Obj | None, after: Obj | None) -> None:
        namespace, name = key = object_key(after or before)
        label = (namespace, names.fit(name, 63))
        if after is None:
            self.model_by_label.pop(label, None)
        else:
            self.model_by_label[label] = name
        self.on_model(key, before, after)

    def _child_changed(self, kind: Kind) -> Listener:
        index = self.children[kind]

        def changed(before: Obj | None, after: Obj | None) -> None:
            for obj, present in ((before, False), (after, True)):
                owner = model_key(obj) if obj is not None else None
                if owner is None:
                    continue
                name = obj["metadata"]["name"]
                if present:
                    index.setdefault(owner, {})[name] = obj
                else:
                    held = index.get(owner)
                    if held is not None and held.get(name) is obj:
                        del held[name]
                        if not held:
                            del index[owner]
            if before is not None and after is not None and same_apart_from_version(before, after):
                return  # an update of fields the cache drops: the plan would see nothing new
            owners = {model_key(obj) for obj in (before, after) if obj is not None}
            for owner in owners:
                if owner is not None and owner in self.model_by_label:
                    self.on_child((owner[0], self.model_by_label[owner]))

        return changed

    # -- reads -----------------------------------------------------------------------------

    def model(self, key: Key) -> Obj | None:
        for informer in self.model_informers:
            found = informer.objects.get(key)
            if found is not None:
                return found
        return None

    def model_keys(self) -> list[Key]:
        return [key for informer in self.model_informers for key in informer.objects]

    def owned(self, kind: Kind, key: Key) -> list[Obj]:
        """The children of one kind labelled with the model ``key``."""
        namespace, name = key
        return list(self.children[kind].get((namespace, names.fit(name, 63)), {}).values())

    def served(self, kind: Kind) -> bool:
        return all(i.served for i in self.child_informers[kind])

    def children_of(self, key: Key) -> Children:
        return Children(jobs=self.owned(JOBS, key), pods=self.owned(PODS, key),
                        deployments=self.owned(DEPLOYMENTS, key), services=self.owned(SERVICES, key),
                        autoscalers=self.owned(HPAS, key), scaled_objects=self.owned(SCALED_OBJECTS, key),
                        keda_available=self.served(SCALED_OBJECTS))

    def live(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The cached object a manifest describes, if the cache holds its kind and it exists."""
        cached = BY_TYPE.get((api_version, kind))
        if cached is None:
            return None
        for informer in self.child_informers[cached]:
            found = informer.objects.get((namespace, name))
            if found is not None:
                return found
        return None

    def object_count(self) -> int:
        return sum(len(i.objects) for i in self.informers)
