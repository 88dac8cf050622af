"""Derived names (issue 21, bullet: a model named llama-3.1-8b gives Service names with dots).

The same names are checked against the real API server in tests/e2e/test_rollout_safety.py.
"""

from __future__ import annotations

import pytest

from medusa_operator.render import names

REVISION = "0123456789"
TRICKY = ["llama-3.1-8b", "llama-3-1-8b", "3b-instruct", "a" * 253, "a" * 252 + "b", "x.y" * 84, "m", "0"]


def derived(model: str) -> list[str]:
    out = [names.stable_service_name(model), names.autoscaler_name(model)]
    for variant in names.VARIANTS:
        out += [names.deployment_name(model, REVISION, variant), names.revision_service_name(model, REVISION, variant)]
    out += [names.job_name(model, REVISION, step) for step in names.STEPS]
    return out


@pytest.mark.parametrize("model", TRICKY)
def test_every_derived_name_is_a_dns_label(model: str) -> None:
    for name in derived(model):
        assert len(name) <= 63 and names.DNS_LABEL.fullmatch(name), name


def test_names_are_stable_and_unique_per_model() -> None:
    assert derived("llama-3.1-8b") == derived("llama-3.1-8b")
    seen: dict[str, str] = {}
    for model in TRICKY:
        for name in derived(model):
            assert seen.setdefault(name, model) == model, f"{model} and {seen[name]} both derive {name}"


def test_a_valid_name_is_kept_as_it_is() -> None:
    assert names.stable_service_name("smollm2-medusa") == "smollm2-medusa"
    assert names.deployment_name("smol", REVISION) == "smol-01234567"
