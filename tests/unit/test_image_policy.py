"""The operator's image policy (issue 22, "restricts images to allowed prefixes or digests"):
the matching rule, and that a refused image stops a revision before anything is created."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from image_policy_cases import POLICY, VERDICTS
from medusa_operator.api.v1alpha1 import MedusaModelSpec, MedusaModelStatus
from medusa_operator.cli import build_parser, config_from_args
from medusa_operator.config import OperatorConfig, image_allowed
from medusa_operator.controller.observed import DeploymentObs, Observed
from medusa_operator.controller.plan import plan
from medusa_operator.render import names, recorded
from medusa_operator.render.context import ModelRef, RenderContext

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
SPEC = {"baseModel": {"uri": "s3://models/base/"}, "medusa": {"uri": "s3://models/heads/"},
        "engine": {"backend": "reference", "builderImage": "registry.example.com/ml/medusa-builder:1.0"},
        "artifacts": {"uri": "s3://engines/"}, "validation": {"baseline": "none"}}


@pytest.mark.parametrize(("image", "allowed"), VERDICTS)
def test_policy_verdicts(image: str, allowed: bool) -> None:
    assert image_allowed(image, POLICY) is allowed


def test_no_policy_allows_every_image() -> None:
    assert all(image_allowed(image, ()) for image, _ in VERDICTS)


def context(policy: tuple[str, ...], **spec_changes) -> RenderContext:
    spec = json.loads(json.dumps(SPEC))
    for section, values in spec_changes.items():
        spec[section] = {**spec.get(section, {}), **values}
    config = OperatorConfig(builder_image="registry.example.com/ml/medusa-builder:default",
                            reference_builder_image="registry.example.com/ml/medusa-reference-builder:default",
                            reference_serving_image="registry.example.com/ml/medusa-reference-serving:default",
                            serving_image="nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3",
                            allowed_images=policy)
    return RenderContext(ModelRef("m", "ns", "uid-1"), MedusaModelSpec.model_validate(spec), config)


def condition(status: MedusaModelStatus, type_: str):
    return next((c for c in status.conditions if c.type == type_), None)


def test_a_refused_image_creates_nothing_and_says_which_field_and_what_is_allowed() -> None:
    c = context(POLICY, serving={"image": "docker.io/someone/triton:latest"})
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW))
    assert p.apply == [] and p.delete == []
    found = condition(p.status, "ImageAllowed")
    assert found.status == "False" and found.reason == "ImageNotAllowed"
    assert "serving.image 'docker.io/someone/triton:latest'" in found.message
    assert "engine.builderImage" not in found.message
    assert "registry.example.com/ml" in found.message
    assert p.status.phase == "Failed" and p.status.message == found.message


def test_a_refused_image_leaves_the_served_revision_serving() -> None:
    allowed = context(POLICY)
    first = plan(allowed, 1, MedusaModelStatus(), Observed(now=NOW))
    served = MedusaModelStatus.model_validate({"revisions": {
        "current": "0123456789", "currentRepositoryUri": "s3://engines/repositories/0123456789/medusa",
        "currentImage": "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"}})
    c = context(POLICY, engine={"builderImage": "docker.io/someone/builder:1"})
    # The served revision's Deployment records what it was validated with (promotion writes it).
    deployment = DeploymentObs(names.deployment_name("m", "0123456789"), "0123456789", "medusa", 1, replicas=1,
                               record=recorded.record(allowed, "s3://engines/repositories/0123456789/medusa"))
    p = plan(c, 2, served, Observed(now=NOW, deployments={deployment.name: deployment}))
    assert {m["kind"] for m in p.apply} == {"Deployment", "Service"}  # the served revision, kept as it is
    assert not [m for m in p.apply if m["kind"] == "Job"]
    assert "engine.builderImage 'docker.io/someone/builder:1'" in condition(p.status, "ImageAllowed").message
    assert p.status.phase == "Degraded" and p.status.revisions.current == "0123456789"
    assert condition(first.status, "ImageAllowed").status == "True"


def test_the_operators_own_default_images_are_checked_too() -> None:
    c = context(("registry.example.com/ml",), engine={"builderImage": None, "backend": "tensorrt-llm"})
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW))
    message = condition(p.status, "ImageAllowed").message
    assert "the operator's --serving-image 'nvcr.io/nvidia/tritonserver" in message and p.apply == []


def test_the_reference_backends_two_images_are_each_named_by_their_flag() -> None:
    c = context(("registry.example.com/other",), engine={"builderImage": None})
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW))
    message = condition(p.status, "ImageAllowed").message
    assert ("the operator's --reference-builder-image 'registry.example.com/ml/medusa-reference-builder:default'"
            in message)
    assert ("the operator's --reference-serving-image 'registry.example.com/ml/medusa-reference-serving:default'"
            in message)
    assert p.apply == []


def test_without_a_policy_there_is_no_condition() -> None:
    p = plan(context(()), 1, MedusaModelStatus(), Observed(now=NOW))
    assert condition(p.status, "ImageAllowed") is None and p.apply


def test_the_command_line_takes_the_policy_and_refuses_a_malformed_digest(capsys) -> None:
    args = build_parser().parse_args(["run", *[f"--allowed-image={e}" for e in POLICY]])
    assert config_from_args(args).allowed_images == POLICY
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--allowed-image=sha256:abc"])
    assert "64 lowercase hex digits" in capsys.readouterr().err
