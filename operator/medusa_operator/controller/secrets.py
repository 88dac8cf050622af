"""Whether the credentials Secrets that models name exist.

The operator may only get a Secret by name (it is not granted list or watch: it cannot read
Secrets no model points it at), so no watch reports a Secret that goes or comes back. Instead
each distinct Secret that some model names is asked for every ``interval`` seconds, however
many models name it, and the models that name one whose presence changed are queued. A pass
trusts what was last seen of a present Secret and asks again for a missing one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name): of a model, or of a Secret


class SecretPresence:
    def __init__(self, exists: Callable[[str, str], Awaitable[bool]], interval: float,
                 on_change: Callable[[Key], None]) -> None:
        self.exists, self.interval, self.on_change = exists, interval, on_change
        self.named_by: dict[Key, set[Key]] = {}  # Secret -> models that name it
        self.names: dict[Key, set[Key]] = {}  # model -> Secrets it names
        self.present: dict[Key, bool] = {}

    def track(self, model: Key, secrets: set[Key]) -> None:
        """Record which Secrets ``model`` names now (none: forget it)."""
        for secret in self.names.get(model, set()) - secrets:
            users = self.named_by.get(secret)
            if users is not None:
                users.discard(model)
                if not users:
                    del self.named_by[secret]
                    self.present.pop(secret, None)
        for secret in secrets:
            self.named_by.setdefault(secret, set()).add(model)
        if secrets:
            self.names[model] = set(secrets)
        else:
            self.names.pop(model, None)

    async def missing(self, model: Key, namespace: str, names: list[str]) -> list[str]:
        """The Secrets of ``names`` that do not exist: a missing or unknown one is asked for now."""
        self.track(model, {(namespace, n) for n in names})
        absent = []
        for name in names:
            if not self.present.get((namespace, name)):
                self.present[(namespace, name)] = await self.exists(namespace, name)
            if not self.present[(namespace, name)]:
                absent.append(name)
        return absent

    async def poll_once(self) -> None:
        for secret in list(self.named_by):
            found = await self.exists(*secret)
            if secret in self.named_by and self.present.get(secret) != found:
                log.info("credentials Secret %s", "found" if found else "gone",
                         extra={"namespace": secret[0], "secret": secret[1]})
                self.present[secret] = found
                for model in self.named_by.get(secret, ()):
                    self.on_change(model)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - tried again next round; passes still ask for missing ones
                log.warning("checking credentials Secrets failed", exc_info=True)
