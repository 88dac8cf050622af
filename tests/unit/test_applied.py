"""Writes only where something differs (issue 25): when a child's manifest is already in place."""

from __future__ import annotations

import copy

from medusa_operator.controller import applied
from medusa_operator.render import names

MANIFEST = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "m", "namespace": "ns", "labels": {"app": "m"}},
    "spec": {"selector": {"app": "m"}, "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]},
}


def served(manifest: dict) -> dict:
    """What the API server hands back after applying the stamped manifest: defaults added."""
    live = copy.deepcopy(applied.stamped(manifest))
    live["metadata"].update(uid="u", resourceVersion="12")
    live["spec"]["clusterIP"] = "10.0.0.7"
    live["spec"]["ports"][0]["protocol"] = "TCP"
    return live


def test_an_applied_manifest_with_server_defaults_is_in_place() -> None:
    assert applied.in_place(MANIFEST, served(MANIFEST))


def test_a_changed_manifest_is_not_in_place() -> None:
    changed = copy.deepcopy(MANIFEST)
    changed["spec"]["ports"][0]["port"] = 9000
    assert not applied.in_place(changed, served(MANIFEST))


def test_a_field_removed_from_the_manifest_is_applied_again() -> None:
    """The manifest still fits inside the object, but the object has a field the operator no
    longer sets: only the digest tells."""
    smaller = copy.deepcopy(MANIFEST)
    del smaller["metadata"]["labels"]
    assert not applied.in_place(smaller, served(MANIFEST))


def test_a_field_edited_by_hand_is_applied_again() -> None:
    live = served(MANIFEST)
    live["spec"]["selector"] = {"app": "other"}
    assert not applied.in_place(MANIFEST, live)
    live = served(MANIFEST)
    live["spec"]["ports"].append({"name": "extra", "port": 1})
    assert not applied.in_place(MANIFEST, live)


def test_a_missing_object_or_one_never_stamped_is_not_in_place() -> None:
    assert not applied.in_place(MANIFEST, None)
    unstamped = served(MANIFEST)
    del unstamped["metadata"]["annotations"][names.APPLIED_ANNOTATION]
    assert not applied.in_place(MANIFEST, unstamped)


def test_the_stamp_does_not_change_the_manifest_it_describes() -> None:
    before = copy.deepcopy(MANIFEST)
    stamped = applied.stamped(MANIFEST)
    assert MANIFEST == before
    assert applied.digest(MANIFEST) == stamped["metadata"]["annotations"][names.APPLIED_ANNOTATION]
