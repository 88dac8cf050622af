"""Rollout safety (issue 21), decided by ``plan()`` on hand-made observations.

Each test names the bullet of the issue it covers.
"""

from __future__ import annotations

from datetime import timedelta

from medusa_operator.controller.observed import DeploymentObs, Observed, Unschedulable
from medusa_operator.controller.plan import plan
from medusa_operator.render import names

from plan_helpers import NOW, cond, ctx, manifest, rev, serving_status, validated

OLD = "0ld0ld0ld0"
AUTOSCALED = {"autoscaling": {"minReplicas": 1, "maxReplicas": 6, "targetTokensPerSecondPerReplica": 100}}


def dep(revision: str, ready: int, replicas: int | None = None, unschedulable: Unschedulable | None = None):
    name = names.deployment_name("m", revision)
    return name, DeploymentObs(name, revision, "medusa", ready, unschedulable=unschedulable,
                               replicas=ready if replicas is None else replicas)


def stable_revision(p) -> str | None:
    """The revision the stable Service selects in this plan (None: every validated pod of the model)."""
    return manifest(p, "Service", "m")["spec"]["selector"].get(names.LABEL_REVISION)


def ready_behind_stable(p, deployments: dict[str, DeploymentObs]) -> int:
    selected = stable_revision(p)
    return sum(d.ready_replicas for d in deployments.values() if selected in (None, d.revision))


def test_promotion_scales_the_candidate_to_the_serving_count_before_the_stable_service_moves() -> None:
    """Bullet: promotion deletes the old revision while the new one has 1 replica."""
    c = ctx(serving=AUTOSCALED)
    r = rev(c)
    status = serving_status(OLD, candidate=r)
    deployments = dict([dep(OLD, 4), dep(r, 1)])
    observed = Observed(now=NOW, jobs=validated(r), deployments=deployments,
                        autoscalers={"HorizontalPodAutoscaler": "m"}, autoscaler_desired=4)

    for ready in (1, 3):
        deployments.update([dep(r, ready, replicas=4 if ready > 1 else 1)])
        p = plan(c, 2, status, observed)
        assert manifest(p, "Deployment", names.deployment_name("m", r))["spec"]["replicas"] == 4
        assert stable_revision(p) == OLD and ready_behind_stable(p, deployments) == 4
        hpa = manifest(p, "HorizontalPodAutoscaler", "m")
        assert hpa["spec"]["scaleTargetRef"]["name"] == names.deployment_name("m", OLD)
        assert p.delete == [] and p.status.revisions.current == OLD
        assert p.status.phase == "Promoting" and f"scaling it to 4 ready replica(s) ({ready} ready)" in p.status.message
        status = p.status

    deployments.update([dep(r, 4)])
    p = plan(c, 2, status, observed)
    assert p.status.revisions.current == r and stable_revision(p) == r and ready_behind_stable(p, deployments) == 4
    assert manifest(p, "HorizontalPodAutoscaler", "m")["spec"]["scaleTargetRef"]["name"] == \
        names.deployment_name("m", r)
    assert "replicas" not in manifest(p, "Deployment", names.deployment_name("m", r))["spec"]
    assert p.replicas == {names.deployment_name("m", r): 4}, "the autoscaler must start from 4, not from 1"
    assert p.delete == [] and p.status.revisions.retiring == OLD
    assert manifest(p, "Deployment", names.deployment_name("m", OLD)) is None, "the draining revision is left as is"

    observed.now = NOW + timedelta(seconds=29)
    p = plan(c, 2, p.status, observed)
    assert [d for d in p.delete if d.kind != "Job"] == [] and p.status.phase == "Serving"
    observed.now = NOW + timedelta(seconds=30)
    p = plan(c, 2, p.status, observed)
    assert ("Deployment", names.deployment_name("m", OLD)) in [(d.kind, d.name) for d in p.delete]


def test_promotion_rolls_one_replica_at_a_time_when_both_revisions_cannot_fit() -> None:
    """Bullet: promotion and capacity; the documented rolling hand-over when both cannot fit."""
    c = ctx(serving=AUTOSCALED, rollout={"unschedulableTimeoutSeconds": 60})
    r = rev(c)
    no_room = Unschedulable(since=NOW - timedelta(seconds=61), message="0/3 nodes: Insufficient nvidia.com/gpu")
    status = serving_status(OLD, candidate=r, promotionReplicas=4)
    deployments = dict([dep(OLD, 4), dep(r, 1, replicas=4, unschedulable=no_room)])
    observed = Observed(now=NOW, jobs=validated(r), deployments=deployments,
                        autoscalers={"HorizontalPodAutoscaler": "m"})

    p = plan(c, 2, status, observed)
    handover = cond(p.status, "CandidateSchedulable")
    assert handover.status == "False" and handover.reason == "RollingHandover"
    assert "cannot fit 4 replica(s) of both revisions" in handover.message
    assert stable_revision(p) is None, "the stable Service selects both revisions during the hand-over"
    assert ("HorizontalPodAutoscaler", "m") in [(d.kind, d.name) for d in p.delete]
    steps = []
    for _ in range(4):
        cand = manifest(p, "Deployment", names.deployment_name("m", r))["spec"]["replicas"]
        old = manifest(p, "Deployment", names.deployment_name("m", OLD))["spec"]["replicas"]
        steps.append((cand, old))
        assert p.status.revisions.current == OLD and p.status.phase == "Promoting"
        # The controllers act: the old revision's pods go at once, the candidate's new pod starts.
        deployments.update([dep(OLD, min(old, deployments[names.deployment_name("m", OLD)].ready_replicas)),
                            dep(r, deployments[names.deployment_name("m", r)].ready_replicas, replicas=cand)])
        assert ready_behind_stable(p, deployments) >= 3, "at most one replica short"
        deployments.update([dep(r, cand)])  # ... and becomes Ready
        p = plan(c, 2, p.status, observed)
        if p.status.revisions.current == r:
            break
    assert steps == [(2, 2), (3, 1), (4, 0)]
    assert p.status.revisions.current == r and stable_revision(p) == r
    assert p.replicas == {names.deployment_name("m", r): 4}
    assert cond(p.status, "CandidateSchedulable").status == "True"
    assert manifest(p, "HorizontalPodAutoscaler", "m")["spec"]["scaleTargetRef"]["name"] == \
        names.deployment_name("m", r)
