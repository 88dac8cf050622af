"""The API names the tree presets the builder knows (issue 24: "the API's description (and so
`kubectl explain`) lists tree presets heads2..heads5, but the builder knows medusa2_16..medusa5_64").

The names are read from the places users and the build meet them: the CRD the API server
serves (its schema is what `kubectl explain` prints), the API type's validation, and the build
step's tree resolution.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from medusa_common.tree import AUTO_PRESET, PRESETS, TreeError, resolve_tree
from medusa_operator.api.v1alpha1 import TreeSpec

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "medusamodels.inference.medusa.dev.yaml"


def _preset_schema() -> dict:
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    tree = schema["properties"]["spec"]["properties"]["medusa"]["properties"]["tree"]
    return tree["properties"]["preset"]


def _builder_accepts(name: str) -> bool:
    """Whether the build step resolves the name (the calibrated tree is resolved by calibration)."""
    if name == AUTO_PRESET:
        return True
    try:
        resolve_tree(name, None, num_heads=5)
    except TreeError:
        return False
    return True


def test_the_served_crd_accepts_exactly_the_builders_presets() -> None:
    served = _preset_schema()["enum"]
    assert served and all(_builder_accepts(name) for name in served)
    assert set(served) == {AUTO_PRESET, *PRESETS}


def test_kubectl_explain_names_the_real_presets() -> None:
    description = " ".join(_preset_schema()["description"].split())
    for name in PRESETS:
        assert f"'{name}'" in description
    assert "heads2" not in description and "heads5" not in description


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_api_type_takes_every_builder_preset(name: str) -> None:
    assert TreeSpec(preset=name).preset == name


@pytest.mark.parametrize("name", ["heads2", "heads5", "medusa6_80"])
def test_a_preset_the_builder_does_not_know_is_refused_by_the_api(name: str) -> None:
    assert not _builder_accepts(name)
    with pytest.raises(ValidationError, match="medusa2_16"):
        TreeSpec(preset=name)
