"""Rollout safety (issue 21), decided by ``plan()`` on hand-made observations.

Each test names the bullet of the issue it covers.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from medusa_common.contract import StepResult, parse_message
from medusa_operator.api.v1alpha1 import EngineStatus, MedusaModelStatus, ServingSpec
from medusa_operator.controller.observed import (DeploymentObs, JobObs, Observed, Unschedulable, observe_deployment,
                                                 observe_job)
from medusa_operator.controller.plan import known_engine_key, plan
from medusa_operator.controller.status import rfc3339
from medusa_operator.render import jobs, names, recorded
from medusa_operator.render.context import ModelRef, RenderContext
from medusa_operator.revision import IN_PLACE_SERVING_FIELDS, engine_cache_key

from plan_helpers import NOW, built_and_packaged, cond, ctx, manifest, rev, served, serving_status, validated

OLD = "0ld0ld0ld0"
AUTOSCALED = {"autoscaling": {"minReplicas": 1, "maxReplicas": 6, "targetTokensPerSecondPerReplica": 100}}


def dep(revision: str, ready: int, replicas: int | None = None, unschedulable: Unschedulable | None = None):
    return names.deployment_name("m", revision), served(revision, ready, replicas=replicas,
                                                        unschedulable=unschedulable)


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


# -- Bullet: makeRoom with a candidate that never becomes Ready; a serving pod whose init container
# cannot fetch the repository; a missing image shows the pod's reason (Job pods and serving pods).

BACKOFF_FETCH = {
    "metadata": {"name": "m-cand-7d9-x2", "labels": {}},
    "spec": {"restartPolicy": "Always"},
    "status": {
        "phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False"}],
        "initContainerStatuses": [{
            "name": "fetch-model-repository",
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": "back-off 40s restarting failed container=fetch-model-repository"}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": json.dumps(
                {"schemaVersion": 1, "step": "fetch", "ok": False,
                 "error": {"kind": "infrastructure", "message": "cannot read s3://engines/repositories: AccessDenied"}})}},
        }],
        "containerStatuses": [{"name": "triton", "state": {"waiting": {"reason": "PodInitializing"}}}],
    },
}


def _candidate_deployment(r: str, pods: list[dict]) -> DeploymentObs:
    labels = names.revision_selector("m", r)
    for pod in pods:
        pod["metadata"]["labels"] = dict(labels)
    return observe_deployment({"metadata": {"name": names.deployment_name("m", r),
                                            "labels": {names.LABEL_REVISION: r, names.LABEL_VARIANT: "medusa"}},
                               "spec": {"replicas": 1, "selector": {"matchLabels": labels}},
                               "status": {"readyReplicas": 0}}, pods)


def test_a_candidate_that_never_gets_ready_shows_the_pods_reason_and_fails_at_the_deadline() -> None:
    c = ctx(rollout={"deployTimeoutSeconds": 600})
    r = rev(c)
    cand = _candidate_deployment(r, [json.loads(json.dumps(BACKOFF_FETCH))])
    observed = Observed(now=NOW, jobs=built_and_packaged(r), deployments={cand.name: cand})
    status = MedusaModelStatus.model_validate({"revisions": {"candidate": r, "deployingSince": rfc3339(NOW)}})

    p = plan(c, 1, status, observed)
    ready = cond(p.status, "CandidateReady")
    assert ready.status == "False" and ready.reason == "CrashLoopBackOff"
    assert "init container 'fetch-model-repository'" in ready.message
    assert "exit code 3: cannot read s3://engines/repositories: AccessDenied" in ready.message
    assert p.status.phase == "Deploying"

    observed.now = NOW + timedelta(seconds=600)
    p = plan(c, 1, p.status, observed)
    failed = cond(p.status, "CandidateReady")
    assert failed.reason == "DeployTimeout" and "AccessDenied" in failed.message
    assert p.status.phase == "Failed" and p.status.revisions.failed == r
    assert ("Deployment", cand.name) in [(d.kind, d.name) for d in p.delete]


def test_make_room_is_undone_when_the_candidate_misses_its_deadline() -> None:
    c = ctx(serving=AUTOSCALED, rollout={"makeRoom": True, "deployTimeoutSeconds": 600})
    r = rev(c)
    status = serving_status(OLD, candidate=r, servingScaledDown=True, restoreReplicas=3,
                            deployingSince=rfc3339(NOW))
    crashing = {"metadata": {"name": "m-cand-x", "labels": {}}, "status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "triton", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                               "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}
    cand = _candidate_deployment(r, [crashing])
    deployments = {cand.name: cand, **dict([dep(OLD, 0, replicas=0)])}
    observed = Observed(now=NOW + timedelta(seconds=599), jobs=built_and_packaged(r), deployments=deployments)
    p = plan(c, 2, status, observed)
    assert manifest(p, "Deployment", names.deployment_name("m", OLD))["spec"]["replicas"] == 0
    assert cond(p.status, "CandidateReady").reason == "CrashLoopBackOff"

    observed.now = NOW + timedelta(seconds=600)
    p = plan(c, 2, p.status, observed)
    assert p.status.revisions.failed == r and p.status.phase == "Degraded"
    assert ("Deployment", cand.name) in [(d.kind, d.name) for d in p.delete]
    serving_dep = manifest(p, "Deployment", names.deployment_name("m", OLD))
    assert "replicas" not in serving_dep["spec"] and manifest(p, "HorizontalPodAutoscaler", "m") is not None
    assert p.replicas == {names.deployment_name("m", OLD): 3}, "scaled back to its 3 replicas, in this pass"
    assert not p.status.revisions.serving_scaled_down


def test_a_promotion_that_cannot_reach_the_serving_count_fails_at_the_deadline_and_keeps_the_old_revision() -> None:
    c = ctx(serving=AUTOSCALED, rollout={"deployTimeoutSeconds": 600})
    r = rev(c)
    status = serving_status(OLD, candidate=r, promotionReplicas=4, promotionSince=rfc3339(NOW),
                            candidateRepositoryUri="s3://e/repo")
    deployments = dict([dep(OLD, 4), dep(r, 2, replicas=4)])
    observed = Observed(now=NOW + timedelta(seconds=600), jobs=validated(r), deployments=deployments,
                        autoscalers={"HorizontalPodAutoscaler": "m"})
    p = plan(c, 2, status, observed)
    failed = cond(p.status, "CandidateReady")
    assert failed.reason == "PromotionTimeout" and "4 Ready replica(s)" in failed.message and "2 were Ready" in failed.message
    assert p.status.revisions.current == OLD and stable_revision(p) == OLD
    assert ("Deployment", names.deployment_name("m", r)) in [(d.kind, d.name) for d in p.delete]
    assert ("Deployment", names.deployment_name("m", OLD)) not in [(d.kind, d.name) for d in p.delete]


def test_a_job_pod_that_cannot_pull_its_image_shows_the_reason_in_the_step_condition() -> None:
    c = ctx()
    r = rev(c)
    job = {"metadata": {"name": names.job_name("m", r, "lookup"), "labels": {names.LABEL_REVISION: r}}, "status": {}}
    pod = {"metadata": {"name": "m-lookup-abcde", "labels": {"job-name": job["metadata"]["name"]},
                        "creationTimestamp": "2026-11-27T12:00:00Z"},
           "spec": {"restartPolicy": "Never"},
           "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                      "containerStatuses": [{"name": "builder", "state": {"waiting": {
                          "reason": "ImagePullBackOff",
                          "message": 'Back-off pulling image "example.invalid/medusa-builder:test"'}}}]}}
    seen = observe_job(job, [pod])
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs={seen.name: seen}))
    built = cond(p.status, "EngineBuilt")
    assert built.reason == "ImagePullBackOff"
    assert "container 'builder' is waiting: ImagePullBackOff" in built.message
    assert 'example.invalid/medusa-builder:test' in built.message


def test_a_serving_revision_without_ready_pods_says_why() -> None:
    c = ctx()
    r = rev(c)
    pull = {"metadata": {"name": "m-x", "labels": {}}, "status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "triton", "state": {"waiting": {"reason": "ErrImagePull",
                                                                         "message": "not found"}}}]}}
    served = _candidate_deployment(r, [pull])
    p = plan(c, 2, serving_status(r), Observed(now=NOW, deployments={served.name: served}))
    available = cond(p.status, "Available")
    assert available.status == "False" and available.reason == "ErrImagePull" and "not found" in available.message
    assert p.status.phase == "Degraded" and "ErrImagePull" in p.status.message


# -- Bullet: the live revision runs only what was validated.

def test_the_served_revision_renders_from_what_was_validated_while_a_candidate_builds() -> None:
    validated_with = ctx(artifacts={"uri": "s3://engines/", "credentialsSecretRef": {"name": "store-a"}})
    changed = ctx(engine__gpu={"count": 1, "product": "NVIDIA-H200"}, engine__builderImage="b:2",
                  artifacts={"uri": "s3://engines/", "credentialsSecretRef": {"name": "store-b"}},
                  serving__resources={"requests": {"cpu": "4"}},
                  serving__tolerations=[{"key": "dedicated", "operator": "Exists"}])
    served_dep = served(OLD, 1, validated_with=validated_with)
    p = plan(changed, 2, serving_status(OLD), Observed(now=NOW, deployments={served_dep.name: served_dep}))
    assert p.status.revisions.candidate == rev(changed) != OLD
    live = manifest(p, "Deployment", served_dep.name)
    pod = live["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "GPU product changed in place"
    # A reference model builds and serves with one image: the one it was validated with.
    assert pod["initContainers"][0]["image"] == "b:1" and pod["containers"][0]["image"] == "b:1"
    assert [s["secret"]["name"] for v in pod["volumes"] if "projected" in v for s in v["projected"]["sources"]] \
        == ["store-a"]
    # ... while the fields meant to change in place do.
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "4"}
    assert {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
    assert recorded.decode(live["metadata"]["annotations"]).spec == served_dep.record.spec


def test_a_promoted_revision_records_what_it_was_validated_with() -> None:
    c = ctx(serving=AUTOSCALED)
    r = rev(c)
    status = serving_status(OLD, candidate=r, candidateRepositoryUri="s3://e/repo")
    deployments = dict([dep(OLD, 1), dep(r, 1)])
    p = plan(c, 2, status, Observed(now=NOW, jobs=validated(r), deployments=deployments))
    assert p.status.revisions.current == r
    record = recorded.decode(manifest(p, "Deployment", names.deployment_name("m", r))["metadata"]["annotations"])
    assert record.repository_uri == "s3://e/repo"
    assert record.spec.engine.builder_image == "b:1" and record.spec.serving.image == "b:1"


def test_only_the_in_place_serving_fields_leave_the_revision_unchanged() -> None:
    """Every spec.serving field either changes a served revision in place or makes a new revision."""
    base = ctx()
    changes = {"image": "t:2", "autoscaling": {"minReplicas": 2, "maxReplicas": 3}, "resources": {"limits": {"cpu": "2"}},
               "nodeSelector": {"pool": "llm"}, "tolerations": [{"key": "x", "operator": "Exists"}]}
    fields = {ServingSpec.model_fields[name].alias or name: name for name in ServingSpec.model_fields}
    assert set(changes) == set(fields), "a new serving field: decide whether it applies in place"
    for alias, value in changes.items():
        in_place = fields[alias] in IN_PLACE_SERVING_FIELDS
        assert (rev(ctx(**{f"serving__{alias}": value})) == rev(base)) == in_place, alias


# -- Bullet: empty or unreadable status deletes what serves.

def test_a_lost_status_finds_the_served_revision_again_and_deletes_nothing() -> None:
    c = ctx(serving=AUTOSCALED)
    r = rev(c)
    deployments = dict([dep(r, 3)])
    observed = Observed(now=NOW, deployments=deployments, services={names.deployment_name("m", r): r, "m": ""},
                        stable_revision=r, autoscalers={"HorizontalPodAutoscaler": "m"})
    p = plan(c, 4, MedusaModelStatus(), observed)
    assert p.delete == [] and p.status.revisions.current == r and p.status.phase == "Serving"
    assert not [m for m in p.apply if m["kind"] == "Job"], "nothing is built or validated again"
    assert "replicas" not in manifest(p, "Deployment", names.deployment_name("m", r))["spec"]


def test_a_lost_status_with_a_changed_spec_keeps_the_served_revision_while_the_candidate_builds() -> None:
    """A GitOps tool replaced the object: status gone, spec changed. Two promoted revisions are
    found (one still draining); the one the stable Service selects serves, the other drains."""
    c = ctx(engine__maxBatchSize=16)
    draining = "dra1n1ng00"
    deployments = dict([dep(OLD, 2), dep(draining, 1)])
    observed = Observed(now=NOW, deployments=deployments, stable_revision=OLD,
                        services={names.deployment_name("m", OLD): OLD, names.deployment_name("m", draining): draining})
    p = plan(c, 5, MedusaModelStatus(), observed)
    assert p.status.revisions.current == OLD and p.status.revisions.candidate == rev(c)
    assert p.status.revisions.retiring == draining
    assert p.delete == [] and stable_revision(p) == OLD
    assert cond(p.status, "Ready").status == "True"
    observed.now = NOW + timedelta(seconds=30)
    p = plan(c, 5, p.status, observed)
    assert [(d.kind, d.name) for d in p.delete if d.kind == "Deployment"] == \
        [("Deployment", names.deployment_name("m", draining))]


# -- Bullets: the revision hash covers numHeads, numLayers, artifacts.uri and credential refs;
# numLayers reaches the build; reused engines carry the full engine description; known engines
# are keyed by store location; Triton repositories of two models cannot collide.

@pytest.mark.parametrize("change", [
    {"medusa__numHeads": 3}, {"medusa__numLayers": 1}, {"artifacts__uri": "s3://other-store/"},
    {"baseModel__credentialsSecretRef": {"name": "hf"}}, {"medusa__credentialsSecretRef": {"name": "s3-heads"}},
    {"artifacts__credentialsSecretRef": {"name": "s3-store"}},
])
def test_the_revision_covers_what_the_build_checks_and_where_it_is_kept(change) -> None:
    assert rev(ctx(**change)) != rev(ctx())


def test_fixing_a_wrong_num_heads_after_a_failed_build_starts_a_new_revision() -> None:
    wrong = ctx(medusa__numHeads=4)
    r = rev(wrong)
    failed = JobObs(names.job_name("m", r, "build"), r, "failed", result=StepResult(
        "build", False, error_kind="user", error_message="the spec declares 4 heads but the checkpoint holds 3 heads."))
    p = plan(wrong, 1, MedusaModelStatus(), Observed(now=NOW, jobs={failed.name: failed}))
    assert p.status.phase == "Failed"
    fixed = ctx(medusa__numHeads=3)
    p = plan(fixed, 2, p.status, Observed(now=NOW, jobs={failed.name: failed}))
    assert p.status.revisions.candidate == rev(fixed) != r and p.status.phase == "Building"
    lookup = next(m for m in p.apply if m["kind"] == "Job")
    assert lookup["metadata"]["name"] == names.job_name("m", rev(fixed), "lookup")


def test_num_layers_reaches_the_build() -> None:
    c = ctx(medusa__numLayers=2, medusa__numHeads=3)
    args = jobs.build_job(c, rev(c), "k")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--num-layers") + 1] == "2" and args[args.index("--num-heads") + 1] == "3"


def test_an_engine_reused_from_another_model_carries_its_full_description() -> None:
    c = ctx()
    key = engine_cache_key(c.spec, c.builder_image)
    known = EngineStatus(cache_key=key, uri=f"s3://engines/engines/{key}", num_heads=3, num_layers=1, tree_size=5,
                         reused=False, build_seconds=1834.0)
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, known_engines={known_engine_key(c, key): known}))
    engine = p.status.engine
    assert (engine.uri, engine.num_heads, engine.num_layers, engine.tree_size) == (known.uri, 3, 1, 5)
    assert engine.reused is True and engine.build_seconds is None


@pytest.mark.parametrize("where", [("other-namespace", "s3://engines"), ("ns", "s3://other-store")])
def test_an_engine_known_in_another_namespace_or_store_is_not_handed_over(where) -> None:
    c = ctx()
    key = engine_cache_key(c.spec, c.builder_image)
    elsewhere = {(*where, key): EngineStatus(cache_key=key, uri=f"{where[1]}/engines/{key}", num_heads=3)}
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, known_engines=elsewhere))
    assert [m["metadata"]["name"] for m in p.apply] == [names.job_name("m", rev(c), "lookup")]
    assert p.status.engine.uri is None


def test_a_known_engine_the_store_no_longer_has_is_forgotten_and_looked_up_again() -> None:
    c = ctx()
    r = rev(c)
    key = engine_cache_key(c.spec, c.builder_image)
    known = {known_engine_key(c, key): EngineStatus(cache_key=key, uri=f"s3://engines/engines/{key}", num_heads=3)}
    package = names.job_name("m", r, "package")
    gone = JobObs(package, r, "failed", result=StepResult(
        "package", False, error_kind="user", error_message=f"no engine at s3://engines/engines/{key}"))
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs={package: gone}, known_engines=known))
    assert p.forget_engines == [known_engine_key(c, key)]
    assert [(d.kind, d.name) for d in p.delete] == [("Job", package)]
    assert p.status.revisions.failed is None and cond(p.status, "Packaged").reason == "EngineLookedUpAgain"
    p = plan(c, 1, p.status, Observed(now=NOW))
    assert [m["metadata"]["name"] for m in p.apply] == [names.job_name("m", r, "lookup")]


def test_two_models_with_the_same_inputs_package_into_different_repositories() -> None:
    a = ctx()
    b = RenderContext(ModelRef("twin", "ns", "uid-2"), a.spec, a.config)
    other_ns = RenderContext(ModelRef("m", "other", "uid-3"), a.spec, a.config)
    r = rev(a)
    outputs = set()
    for c in (a, b, other_ns):
        args = jobs.package_job(c, r, "s3://engines/engines/k")["spec"]["template"]["spec"]["containers"][0]["args"]
        outputs.add(args[args.index("--output-uri") + 1])
    assert len(outputs) == 3


# -- Bullets: Job results validated against typed models; step name checked; termination message
# capped by bytes; disruptions ignored by the pod failure policy; a documented retry annotation.

def _finished_job(r: str, step: str, message: str, exit_code: int = 0) -> JobObs:
    name = names.job_name("m", r, step)
    job = {"metadata": {"name": name, "labels": {names.LABEL_REVISION: r, names.LABEL_STEP: step}},
           "status": {"conditions": [{"type": "Complete" if exit_code == 0 else "Failed", "status": "True"}]}}
    pod = {"metadata": {"name": f"{name}-x", "labels": {"job-name": name}, "creationTimestamp": "2026-11-27T12:00:00Z"},
           "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": exit_code, "message": message}}}]}}
    return observe_job(job, [pod])


@pytest.mark.parametrize("result, field", [
    ({"cacheKey": "k", "engineUri": 123}, "result.engineUri must be a string, not 123"),
    ({"cacheKey": "k", "engineUri": "s3://e/k", "treeSize": "big"}, 'result.treeSize must be an integer, not "big"'),
    ({"cacheKey": "k", "engineUri": "s3://e/k", "tree": [[0], ["x"]]}, 'result.tree[1][0] must be an integer'),
    ({"cacheKey": "k", "engineUri": "s3://e/k", "numHeads": True}, "result.numHeads must be an integer, not true"),
])
def test_a_result_of_the_wrong_type_is_a_failed_step_with_a_clear_message(result, field) -> None:
    c = ctx()
    r = rev(c)
    seen = _finished_job(r, "build", StepResult("build", True, result=result).to_message())
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs={seen.name: seen}))
    built = cond(p.status, "EngineBuilt")
    assert p.status.phase == "Failed" and built.reason == "BuildingFailed"
    assert f"the build step's result cannot be used: {field}" in built.message


def test_a_validation_verdict_of_the_wrong_type_fails_validation_clearly() -> None:
    c = ctx()
    r = rev(c)
    seen = _finished_job(r, "validate", StepResult("validate", True, result={
        "passed": True, "perTopic": [{"topic": "coding", "speedup": "fast"}]}).to_message())
    jobs_seen = {**built_and_packaged(r), seen.name: seen}
    deployments = {names.deployment_name("m", r): DeploymentObs(names.deployment_name("m", r), r, "medusa", 1)}
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs=jobs_seen, deployments=deployments))
    assert p.status.phase == "Failed" and p.status.revisions.current is None
    assert 'result.perTopic[0].speedup must be a number, not "fast"' in cond(p.status, "Validated").message


def test_a_result_of_another_step_is_refused() -> None:
    c = ctx()
    r = rev(c)
    seen = _finished_job(r, "lookup-base", StepResult("package", True, result={"repositoryUri": "s3://x"}).to_message())
    assert seen.state == "failed" and seen.result is None
    assert "a result of step 'package' but its Job runs 'build'" in seen.problem


@pytest.mark.parametrize("text", ["é" * 3000, "模型" * 2000, "🙂" * 1500, "x" * 10_000])
def test_the_termination_message_fits_the_kubelets_4096_bytes_whatever_the_text(text) -> None:
    message = StepResult("build", False, error_kind="infrastructure", error_message=text,
                         result={"cacheKey": "k"}).to_message()
    assert len(message.encode()) <= 4096
    parsed = parse_message(message)
    assert parsed.error_kind == "infrastructure" and text.startswith(parsed.error_message.removesuffix("..."))
    assert len(parsed.error_message) > 100


def test_job_disruptions_do_not_use_up_the_jobs_retries() -> None:
    rules = jobs.build_job(ctx(), "0123456789", "k")["spec"]["podFailurePolicy"]["rules"]
    ignore = next(i for i, rule in enumerate(rules) if rule["action"] == "Ignore")
    assert rules[ignore]["onPodConditions"] == [{"type": "DisruptionTarget"}]
    assert ignore < next(i for i, rule in enumerate(rules) if rule["action"] == "FailJob"), "first match wins"


def test_a_failed_revision_is_retried_when_the_retry_annotation_changes() -> None:
    c = ctx()
    r = rev(c)
    failed = JobObs(names.job_name("m", r, "build"), r, "failed",
                    result=StepResult("build", False, error_kind="user", error_message="heads unreadable"))
    observed = Observed(now=NOW, jobs={failed.name: failed}, retry_token="before")
    p = plan(c, 1, MedusaModelStatus(), observed)
    assert p.status.phase == "Failed" and p.status.revisions.retry_token == "before"
    assert plan(c, 1, p.status, observed).status.phase == "Failed", "the same value retries nothing"

    observed.retry_token = "2026-11-27T12:05"
    p = plan(c, 1, p.status, observed)
    assert ("Job", failed.name) in [(d.kind, d.name) for d in p.delete]
    assert p.status.revisions.failed is None and p.status.phase == "Pending"
    p = plan(c, 1, p.status, Observed(now=NOW, retry_token="2026-11-27T12:05"))
    assert [m["metadata"]["name"] for m in p.apply] == [names.job_name("m", r, "lookup")]
    assert p.status.revisions.candidate == r and p.status.phase == "Building"


# -- Bullet: a Secret deleted after the model is Serving.

def test_a_secret_deleted_while_serving_holds_the_revision_and_says_so_then_recovers() -> None:
    c = ctx(serving=AUTOSCALED, artifacts={"uri": "s3://engines/", "credentialsSecretRef": {"name": "store"}})
    r = rev(c)
    served_dep = served(r, 2, replicas=2, validated_with=c)
    observed = Observed(now=NOW, deployments={served_dep.name: served_dep}, missing_secrets=["store"],
                        autoscalers={"HorizontalPodAutoscaler": "m"})
    p = plan(c, 3, serving_status(r), observed)
    found = cond(p.status, "CredentialsFound")
    assert found.status == "False" and "'store' not found" in found.message
    assert "new pods could not mount 'store'" in found.message
    assert p.status.phase == "Degraded" and "no new pod can start" in p.status.message
    assert cond(p.status, "Ready").status == "True", "its running pods still serve"
    assert manifest(p, "Deployment", served_dep.name) is None, "no template change may start pods"
    hpa = manifest(p, "HorizontalPodAutoscaler", "m")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 2), "scale-up is held at the 2 replicas it has"
    assert cond(p.status, "AutoscalerReady").reason == "CredentialsMissing"

    observed.missing_secrets = []
    p = plan(c, 3, p.status, observed)
    assert cond(p.status, "CredentialsFound").status == "True" and p.status.phase == "Serving"
    assert manifest(p, "HorizontalPodAutoscaler", "m")["spec"]["maxReplicas"] == 6
    assert manifest(p, "Deployment", served_dep.name) is not None


def test_a_new_revision_can_replace_the_secret_the_served_revision_lost() -> None:
    old_spec = ctx(artifacts={"uri": "s3://engines/", "credentialsSecretRef": {"name": "store-old"}})
    served_dep = served(OLD, 1, validated_with=old_spec)
    c = ctx(artifacts={"uri": "s3://engines/", "credentialsSecretRef": {"name": "store-new"}})
    p = plan(c, 4, serving_status(OLD), Observed(now=NOW, deployments={served_dep.name: served_dep},
                                                 missing_secrets=["store-old"]))
    assert p.status.revisions.candidate == rev(c) and p.status.phase == "Building"
    assert "'store-old' not found" in cond(p.status, "CredentialsFound").message
    assert manifest(p, "Deployment", served_dep.name) is None
