"""Credentials Secrets without a watch (issue 25: quiet when nothing changes; the operator may
only get Secrets by name): each distinct Secret is asked for once per round, whatever the number
of models naming it, and a change queues exactly the models that name it."""

from __future__ import annotations

from medusa_operator.controller.secrets import SecretPresence


class Store:
    def __init__(self, *present: str) -> None:
        self.present = set(present)
        self.asked: list[str] = []

    async def exists(self, namespace: str, name: str) -> bool:
        self.asked.append(name)
        return name in self.present


async def test_a_present_secret_is_not_asked_for_again_by_each_pass() -> None:
    store = Store("creds")
    presence = SecretPresence(store.exists, 60, lambda key: None)
    for i in range(50):
        assert await presence.missing(("ns", f"m{i}"), "ns", ["creds"]) == []
    assert store.asked == ["creds"]


async def test_one_round_asks_once_per_secret_and_wakes_the_models_that_name_a_changed_one() -> None:
    store = Store("creds", "other")
    woken: list = []
    presence = SecretPresence(store.exists, 60, woken.append)
    for i in range(3):
        await presence.missing(("ns", f"m{i}"), "ns", ["creds"])
    await presence.missing(("ns", "x"), "ns", ["other"])
    store.asked.clear()
    store.present.discard("creds")
    await presence.poll_once()
    assert sorted(store.asked) == ["creds", "other"]
    assert sorted(woken) == [("ns", "m0"), ("ns", "m1"), ("ns", "m2")]
    assert await presence.missing(("ns", "m0"), "ns", ["creds"]) == ["creds"]


async def test_a_missing_secret_is_asked_for_on_every_pass_until_it_exists() -> None:
    store = Store()
    presence = SecretPresence(store.exists, 60, lambda key: None)
    assert await presence.missing(("ns", "m"), "ns", ["creds"]) == ["creds"]
    store.present.add("creds")
    assert await presence.missing(("ns", "m"), "ns", ["creds"]) == []


async def test_a_secret_no_model_names_any_more_is_not_asked_for() -> None:
    store = Store("creds")
    presence = SecretPresence(store.exists, 60, lambda key: None)
    await presence.missing(("ns", "m"), "ns", ["creds"])
    presence.track(("ns", "m"), set())
    store.asked.clear()
    await presence.poll_once()
    assert store.asked == []
