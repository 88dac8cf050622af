"""What each image's pinned requirements (hack/images.py's recipes and their locks) hold.

Issue 24: "the operator image has no ML stack, the serving image no boto3/matplotlib/kopf". The
locks are what the Dockerfiles install (with ``--no-deps``, from them alone), so what a lock lacks
an image lacks; tests/integration/test_images.py asks the built images themselves.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import images

REPO = Path(__file__).resolve().parents[2]
RECIPES = {recipe.name: recipe for recipe in images.RECIPES}
# Distributions only the builder's steps or the operator bring (tritonclient, Jinja2 and pydantic
# are not among them: nvidia-pytriton and torch need them in the serving image too).
BUILDER_STACK = {"boto3", "botocore", "s3transfer", "matplotlib", "pyarrow"}
OPERATOR_STACK = {"kopf", "lightkube", "lightkube-models", "prometheus-client"}
ML_STACK = {"torch", "transformers", "numpy", "triton", "safetensors", "nvidia-pytriton"}
PROJECT_DISTRIBUTIONS = {"medusa-common", "medusa-operator", "medusa-builder", "medusa-runtime"}


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(name: str) -> dict[str, str]:
    """What the image installs from PyPI, its parents' pins included: name -> version."""
    recipe = RECIPES[name]
    pins = dict(_pinned(recipe.parent)) if recipe.parent else {}
    pins.update({_normalised(n): v for n, v in images._pins(REPO / recipe.lock)})
    return pins


def _local_distributions(name: str) -> dict[Path, set[str]]:
    """The project's folders the image installs (its parents' included) -> the extras it asks for."""
    recipe = RECIPES[name]
    found = _local_distributions(recipe.parent) if recipe.parent else {}
    for requirement in recipe.requirements:
        if requirement.startswith("."):
            path, _, extras = requirement.partition("[")
            found[(REPO / path).resolve()] = {e for e in extras.rstrip("]").split(",") if e}
    return found


def _declared(folder: Path, extras: set[str]) -> set[str]:
    """The distributions the folder's pyproject.toml requires here (markers evaluated), with ``extras``."""
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project.get("dependencies", [])]
    requirements += [Requirement(r) for extra in extras for r in project.get("optional-dependencies", {})[extra]]
    return {_normalised(r.name) for r in requirements if r.marker is None or r.marker.evaluate()}


def test_the_reference_serving_image_pins_no_builder_or_operator_distribution() -> None:
    pins = _pinned("reference-serving")
    assert not pins.keys() & (BUILDER_STACK | OPERATOR_STACK), sorted(pins.keys() & (BUILDER_STACK | OPERATOR_STACK))
    assert ML_STACK <= pins.keys()


def test_the_operator_image_pins_no_ml_or_builder_distribution() -> None:
    pins = _pinned("operator")
    assert not pins.keys() & (ML_STACK | BUILDER_STACK), sorted(pins.keys() & (ML_STACK | BUILDER_STACK))
    assert OPERATOR_STACK <= pins.keys()


def test_the_reference_builder_image_adds_the_builder_to_the_serving_image() -> None:
    builder = RECIPES["reference-builder"]
    assert builder.parent == "reference-serving"
    own = {_normalised(n) for n, _ in images._pins(REPO / builder.lock)}
    # Its lock holds only what it adds; what both need keeps the serving image's version.
    assert not own & _pinned("reference-serving").keys()
    assert BUILDER_STACK <= own


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_lock_pins_every_dependency_its_distributions_declare(name: str) -> None:
    """A dependency added to a pyproject.toml without `python hack/images.py --lock` fails here,
    before an image build fails on it."""
    pins = _pinned(name)
    missing = {}
    for folder, extras in _local_distributions(name).items():
        lacking = _declared(folder, extras) - PROJECT_DISTRIBUTIONS - pins.keys()
        if lacking:
            missing[str(folder.relative_to(REPO)) or "."] = sorted(lacking)
    assert not missing, f"{RECIPES[name].lock} lacks {missing}: run python hack/images.py --lock"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_lock_was_resolved_from_its_recipes_current_requirements(name: str) -> None:
    recipe = RECIPES[name]
    header = (REPO / recipe.lock).read_text().splitlines()[0]
    assert header.startswith(f"# Pinned closure of {' '.join(images.lock_requirements(recipe))} for "), (
        f"{recipe.lock} was pinned for other requirements: run python hack/images.py --lock")


def test_a_child_image_is_keyed_by_its_parent() -> None:
    """The reference builder image is built FROM the serving image's reference: a new serving image
    gives a new builder image, and asking for the builder plans the serving image too."""
    planned = images.plan(["reference-builder"])
    assert set(planned) == {"reference-serving", "reference-builder"}
    builder = RECIPES["reference-builder"]
    assert images._build_args(builder, planned) == {"BASE_IMAGE": planned["reference-serving"].reference}
