"""Stand-ins for the watch caches and the API client, for reconciler tests that must stage what
a real API server cannot be made to do on cue (hang, lose a Lease mid-batch)."""

from __future__ import annotations

from medusa_operator.controller.observed import Children

from plan_helpers import SPEC


class OneModelCache:
    """The watch caches, holding one model (any name asked for) and no children."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []

    async def wait_synced(self):
        return None

    def unsynced(self):
        return []

    def model(self, key):
        namespace, name = key
        return {"metadata": {"name": name, "namespace": namespace, "uid": "u", "generation": 1,
                             "resourceVersion": "7"}, "spec": SPEC}

    def model_keys(self):
        return list(self.keys)

    def children_of(self, key):
        return Children()

    def live(self, *args):
        return None


class RecordingKube:
    """Records every write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    async def secret_exists(self, namespace, name):
        return True

    async def set_replicas(self, *args):
        self.writes.append("replicas")

    async def apply(self, manifest):
        self.writes.append(f"apply {manifest['kind']}")

    async def delete(self, *args):
        self.writes.append("delete")

    async def patch_status(self, namespace, name, status, resource_version=None):
        self.writes.append(f"status@{resource_version}")
        return "8"

    async def emit(self, *args):
        self.writes.append("event")
