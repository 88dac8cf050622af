"""The revision state machine as a pure function: observed facts in, actions and status out."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from medusa_common.contract import StepResult
from medusa_operator.api.v1alpha1 import EngineStatus, MedusaModelStatus
from medusa_operator.controller.observed import (DeploymentObs, JobObs, Observed, Unschedulable, observe_job,
                                                 pod_result)
from medusa_operator.controller.plan import known_engine_key, plan
from medusa_operator.controller.reconciler import merge_patch
from medusa_operator.render import names
from medusa_operator.render.context import RenderContext
from medusa_operator.revision import engine_cache_key

from plan_helpers import (NOW, built_and_packaged, cond, container, ctx, kinds, ok, rev, served,
                          validated)


def test_new_model_looks_its_engine_up_without_a_gpu_then_builds_on_a_miss() -> None:
    c = ctx()
    r = rev(c)
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW))
    assert kinds(p) == [("Job", names.job_name("m", r, "lookup"))]
    lookup = container(p.apply[0])
    assert lookup["args"][0] == "build" and "--lookup-only" in lookup["args"]
    assert "limits" not in lookup["resources"], "the lookup must not wait for a GPU"
    assert lookup["resources"]["requests"] == {"cpu": "100m", "memory": "512Mi"}
    assert "nodeSelector" not in p.apply[0]["spec"]["template"]["spec"]
    assert p.status.phase == "Building" and p.status.revisions.candidate == r
    assert cond(p.status, "Ready").status == "False"
    assert p.status.observed_generation == 1

    key = engine_cache_key(c.spec, c.builder_image)
    missed = JobObs(names.job_name("m", r, "lookup"), r, "succeeded", result=ok("build", cacheKey=key, cacheHit=False))
    p = plan(c, 1, p.status, Observed(now=NOW, jobs={missed.name: missed}))
    assert kinds(p) == [("Job", names.job_name("m", r, "build"))]
    build = container(p.apply[0])
    assert build["resources"]["limits"] == {"nvidia.com/gpu": "1"} and "--lookup-only" not in build["args"]
    assert p.status.phase == "Building"


def test_an_engine_found_in_the_store_needs_no_gpu_job() -> None:
    c = ctx()
    r = rev(c)
    key = engine_cache_key(c.spec, c.builder_image)
    found = JobObs(names.job_name("m", r, "lookup"), r, "succeeded",
                   result=ok("build", cacheKey=key, cacheHit=True, engineUri=f"s3://engines/engines/{key}",
                             numHeads=2, tree=[[0], [1], [0, 0]]))
    status = MedusaModelStatus.model_validate({"revisions": {"candidate": r}})
    p = plan(c, 1, status, Observed(now=NOW, jobs={found.name: found}))
    assert kinds(p) == [("Job", names.job_name("m", r, "package"))]
    assert p.status.engine.reused is True and p.status.engine.tree_size == 3 and p.status.engine.num_heads == 2
    assert cond(p.status, "EngineBuilt").reason == "CacheHit"


def test_finished_build_leads_to_packaging_with_the_engine_uri() -> None:
    c = ctx()
    r = rev(c)
    built = JobObs(names.job_name("m", r, "build"), r, "succeeded",
                   result=ok("build", cacheKey="k", cacheHit=False, engineUri="s3://engines/engines/k",
                             buildSeconds=12.0, numHeads=2, tree=[[0], [1]]))
    status = MedusaModelStatus.model_validate({"revisions": {"candidate": r}})
    p = plan(c, 1, status, Observed(now=NOW, jobs={built.name: built}))
    (package,) = p.apply
    assert package["metadata"]["name"] == names.job_name("m", r, "package")
    args = package["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--engine-uri") + 1] == "s3://engines/engines/k"
    assert p.status.phase == "Packaging"
    assert p.status.engine.reused is False and p.status.engine.tree_size == 2
    assert cond(p.status, "EngineBuilt").reason == "Built"


def test_an_engine_built_before_needs_no_build_job() -> None:
    c = ctx()
    key = engine_cache_key(c.spec, c.builder_image)
    known = {known_engine_key(c, key): EngineStatus(cache_key=key, uri="s3://engines/engines/" + key)}
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, known_engines=known))
    assert [k for k, _ in kinds(p)] == ["Job"] and kinds(p)[0][1].endswith("-package")
    assert p.status.engine.reused is True and cond(p.status, "EngineBuilt").reason == "CacheHit"


def test_missing_secret_blocks_jobs_with_an_actionable_condition() -> None:
    c = ctx(baseModel__credentialsSecretRef={"name": "hf-token"})
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, missing_secrets=["hf-token"]))
    assert p.apply == [] and p.status.phase == "Pending"
    found = cond(p.status, "CredentialsFound")
    assert found.status == "False" and "'hf-token' not found in namespace 'ns'" in found.message


def test_user_error_fails_the_revision_and_keeps_failed_jobs_for_inspection() -> None:
    c = ctx()
    r = rev(c)
    failed = JobObs(names.job_name("m", r, "build"), r, "failed",
                    result=StepResult("build", False, error_kind="user", error_message="vocab 32000 vs 49152"))
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs={failed.name: failed}))
    assert p.status.phase == "Failed" and p.status.revisions.failed == r
    assert "vocab 32000 vs 49152" in cond(p.status, "EngineBuilt").message
    assert p.delete == []
    again = plan(c, 1, p.status, Observed(now=NOW, jobs={failed.name: failed}))
    assert again.apply == [] and again.status.phase == "Failed"


def test_infrastructure_failure_reruns_the_job_after_the_retry_delay() -> None:
    c = ctx()
    r = rev(c)
    name = names.job_name("m", r, "build")
    res = StepResult("build", False, error_kind="infrastructure", error_message="store unreachable")
    early = JobObs(name, r, "failed", result=res, finished_at=NOW - timedelta(seconds=10))
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs={name: early}))
    assert p.delete == [] and p.status.phase == "Building"
    assert cond(p.status, "EngineBuilt").reason == "RetryingAfterInfrastructureError"
    late = JobObs(name, r, "failed", result=res, finished_at=NOW - timedelta(seconds=61))
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs={name: late}))
    assert [(d.kind, d.name) for d in p.delete] == [("Job", name)]
    assert p.status.revisions.infra_retries == 1


def test_infrastructure_retries_back_off_exponentially_up_to_a_cap() -> None:
    c = ctx()
    r = rev(c)
    name = names.job_name("m", r, "build")
    res = StepResult("build", False, error_kind="infrastructure", error_message="store unreachable")

    def after(retries: int, seconds: float):
        status = MedusaModelStatus.model_validate({"revisions": {"candidate": r, "infraRetries": retries}})
        job = JobObs(name, r, "failed", result=res, finished_at=NOW - timedelta(seconds=seconds))
        return plan(c, 1, status, Observed(now=NOW, jobs={name: job}))

    # Third retry: 60 s doubled twice.
    retry_at = (NOW + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert after(2, 239).delete == [] and f"at {retry_at}" in cond(after(2, 239).status, "EngineBuilt").message
    retried = after(2, 240)
    assert [d.name for d in retried.delete] == [name] and retried.status.revisions.infra_retries == 3
    # The wait stops growing at 32 x 60 s.
    assert after(9, 32 * 60 - 1).delete == [] and [d.name for d in after(9, 32 * 60).delete] == [name]
    # A new revision starts counting again.
    changed = ctx(engine__maxBatchSize=16)
    fresh = plan(changed, 2, after(9, 0).status, Observed(now=NOW))
    assert fresh.status.revisions.candidate != r and fresh.status.revisions.infra_retries is None


def _serving_status(r: str) -> MedusaModelStatus:
    return MedusaModelStatus.model_validate({
        "phase": "Serving", "revisions": {"current": r, "currentRepositoryUri": "s3://r", "currentImage": "t:1"}})


def test_serving_only_change_keeps_the_revision_and_updates_in_place() -> None:
    c = ctx()
    changed = ctx(serving__autoscaling={"minReplicas": 2, "maxReplicas": 5},
                  serving__tolerations=[{"key": "x", "operator": "Exists"}])
    assert rev(changed) == rev(c)
    r = rev(c)
    dep = DeploymentObs(names.deployment_name("m", r), r, "medusa", ready_replicas=2)
    p = plan(changed, 2, _serving_status(r), Observed(now=NOW, deployments={dep.name: dep}))
    assert ("Job" not in [k for k, _ in kinds(p)]) and p.status.phase == "Serving"
    deployment = next(m for m in p.apply if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert {"key": "x", "operator": "Exists"} in deployment["spec"]["template"]["spec"]["tolerations"]
    assert cond(p.status, "Ready").status == "True" and p.status.replicas == 2


def test_engine_change_makes_a_new_revision_while_the_current_one_serves() -> None:
    c = ctx()
    r = rev(c)
    newer = ctx(engine__maxBatchSize=32)
    assert rev(newer) != r and engine_cache_key(newer.spec, "b:1") != engine_cache_key(c.spec, "b:1")
    dep = DeploymentObs(names.deployment_name("m", r), r, "medusa", ready_replicas=1)
    p = plan(newer, 2, _serving_status(r), Observed(now=NOW, deployments={dep.name: dep}))
    assert p.status.revisions.current == r and p.status.revisions.candidate == rev(newer)
    assert p.status.phase == "Building"
    stable = next(m for m in p.apply if m["metadata"]["name"] == "m" and m["kind"] == "Service")
    assert stable["spec"]["selector"][names.LABEL_REVISION] == r


def test_validation_verdict_promotes_and_retires_the_previous_revision_after_its_drain() -> None:
    old, c = "0ld0ld0ld0", ctx()
    r = rev(c)
    status = _serving_status(old)
    status.revisions.candidate = r
    jobs = validated(r, speedup=2.1)
    deps = {names.deployment_name("m", x): DeploymentObs(names.deployment_name("m", x), x, "medusa", 1)
            for x in (old, r)}
    p = plan(c, 3, status, Observed(now=NOW, jobs=jobs, deployments=deps))
    assert p.status.revisions.current == r and p.status.revisions.previous == old
    assert p.status.validation.speedup == 2.1 and p.status.phase == "Serving"
    stable = next(m for m in p.apply if m["metadata"]["name"] == "m" and m["kind"] == "Service")
    assert stable["spec"]["selector"][names.LABEL_REVISION] == r
    assert p.delete == [] and p.status.revisions.retiring == old, "requests in flight drain first"
    assert ("Deployment", names.deployment_name("m", old)) not in kinds(p)

    drained = plan(c, 3, p.status, Observed(now=NOW + timedelta(seconds=30), deployments=deps))
    assert ("Deployment", names.deployment_name("m", old)) in [(d.kind, d.name) for d in drained.delete]
    assert drained.status.revisions.retiring is None and drained.status.phase == "Serving"


def test_candidate_waiting_too_long_for_gpus_gets_a_condition() -> None:
    c = ctx(rollout={"unschedulableTimeoutSeconds": 60})
    r = rev(c)
    jobs = built_and_packaged(r)
    waiting = Unschedulable(since=NOW - timedelta(seconds=90), message="0/3 nodes: Insufficient nvidia.com/gpu")
    dep = DeploymentObs(names.deployment_name("m", r), r, "medusa", 0, unschedulable=waiting)
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs=jobs, deployments={dep.name: dep}))
    found = cond(p.status, "CandidateSchedulable")
    assert found.status == "False" and "Insufficient nvidia.com/gpu" in found.message
    assert p.status.phase == "Deploying"


def _pod(message: str | None, exit_code: int = 0, job: str = "j") -> dict:
    term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
    if message is not None:
        term["message"] = message
    return {"metadata": {"labels": {"job-name": job}, "creationTimestamp": "2026-11-27T12:00:00Z"},
            "status": {"containerStatuses": [{"state": {"terminated": term}}]}}


@pytest.mark.parametrize("message,expected", [
    (None, "the step left no result (empty termination message)"),
    ("Traceback (most recent call last):", "the step's result is not JSON"),
    ('{"schemaVersion": 9, "step": "x", "ok": true}', "schemaVersion 9"),
    ('["not", "an", "object"]', "not a JSON object"),
])
def test_malformed_termination_messages_become_readable_problems(message, expected) -> None:
    seen = pod_result(_pod(message, exit_code=1))
    assert seen.result is None and expected in seen.problem and "exit code 1" in seen.problem


def test_a_completed_job_without_a_result_is_an_infrastructure_failure_to_retry() -> None:
    """Issue 21, bullet: exit 0 without a result is retried, not a permanent failure."""
    job = {"metadata": {"name": "j", "labels": {names.LABEL_REVISION: "r", names.LABEL_STEP: "package"}},
           "status": {"conditions": [{"type": "Complete", "status": "True",
                                      "lastTransitionTime": "2026-11-27T12:00:00Z"}]}}
    seen = observe_job(job, [_pod("")])
    assert seen.state == "failed" and seen.result.error_kind == "infrastructure"
    assert "left no usable result: the step left no result (empty termination message)" in seen.result.error_message
    c = ctx()
    r = rev(c)
    name = names.job_name("m", r, "build")
    observed = Observed(now=NOW, jobs={name: JobObs(name, r, "failed", result=seen.result, finished_at=NOW)})
    p = plan(c, 1, MedusaModelStatus(), observed)
    assert p.status.revisions.failed is None
    assert cond(p.status, "EngineBuilt").reason == "RetryingAfterInfrastructureError"


_COMPLETE_JOB = {"metadata": {"name": "j", "labels": {names.LABEL_REVISION: "r", names.LABEL_STEP: "package"}},
                 "status": {"conditions": [{"type": "Complete", "status": "True",
                                            "lastTransitionTime": "2026-11-27T12:00:00Z"}]}}


@pytest.mark.parametrize("pods,expected", [
    ([], "no pod found"),
    ([_pod(None)], "the step left no result (empty termination message)"),
    ([{"metadata": {"name": "j-x", "labels": {"job-name": "j"}}, "status": {"phase": "Succeeded"}}],
     "its pod j-x shows no finished container"),
    ([{"metadata": {"name": "j-x", "labels": {"job-name": "j"}},
       "status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}}],
     "its pod j-x shows no finished container"),
], ids=["pod-gone", "message-dropped", "status-lost", "status-not-yet-seen"])
def test_a_completed_job_whose_result_was_lost_is_retried(pods, expected) -> None:
    """Issue 25, bullet: a Job that completed with exit 0 but whose result was lost (pod
    garbage-collected, message dropped) is an infrastructure failure to retry, not a permanent one."""
    seen = observe_job(_COMPLETE_JOB, pods)
    assert seen.state == "failed" and seen.result is not None and seen.result.error_kind == "infrastructure"
    assert expected in seen.result.error_message
    c = ctx()
    r = rev(c)
    name = names.job_name("m", r, "build")
    lost = JobObs(name, r, "failed", result=seen.result, finished_at=seen.finished_at)
    first = plan(c, 1, MedusaModelStatus(), Observed(now=seen.finished_at, jobs={name: lost}))
    assert first.status.revisions.failed is None and first.status.phase != "Failed"
    retrying = cond(first.status, "EngineBuilt")
    assert retrying.reason == "RetryingAfterInfrastructureError" and expected in retrying.message
    assert not any(d.name == name for d in first.delete)  # it waits out the retry delay first
    later = seen.finished_at + timedelta(seconds=c.config.infra_retry_seconds)
    again = plan(c, 1, first.status, Observed(now=later, jobs={name: lost}))
    assert any(d.name == name for d in again.delete)  # then runs the step again
    assert again.status.revisions.infra_retries == 1


def test_a_user_error_settles_the_job_before_its_retries() -> None:
    job = {"metadata": {"name": "j", "labels": {}}, "status": {}}
    message = json.dumps({"schemaVersion": 1, "step": "build", "ok": False,
                          "error": {"kind": "user", "message": "bad heads"}})
    seen = observe_job(job, [_pod(message, exit_code=2)])
    assert seen.state == "failed" and seen.result.error_message == "bad heads"


def test_merge_patch_removes_dropped_keys_and_keeps_unchanged_ones_out() -> None:
    old = {"phase": "Building", "engine": {"cacheKey": "a", "uri": "u"}, "message": "x"}
    new = {"phase": "Serving", "engine": {"cacheKey": "a"}}
    assert merge_patch(old, new) == {"phase": "Serving", "engine": {"uri": None}, "message": None}


def test_a_failed_build_is_not_hidden_by_the_baseline_build_still_running() -> None:
    c = ctx(validation={"baseline": "base-engine"})
    r = rev(c)
    failed = JobObs(names.job_name("m", r, "build"), r, "failed",
                    result=StepResult("build", False, error_kind="user", error_message="hidden 5120 vs 4096"))
    running = JobObs(names.job_name("m", r, "build-base"), r, "running")
    observed = Observed(now=NOW, jobs={failed.name: failed, running.name: running})
    p = plan(c, 1, MedusaModelStatus(), observed)
    assert p.status.phase == "Failed"
    assert "hidden 5120 vs 4096" in cond(p.status, "EngineBuilt").message
    assert [(d.kind, d.name) for d in p.delete] == [("Job", running.name)]
    again = plan(c, 1, p.status, observed)
    assert again.status.phase == "Failed" and again.apply == []


def test_the_baseline_engine_is_looked_up_beside_the_candidate() -> None:
    c = ctx(validation={"baseline": "base-engine"})
    r = rev(c)
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW))
    assert sorted(kinds(p)) == [("Job", names.job_name("m", r, "lookup")),
                                ("Job", names.job_name("m", r, "lookup-base"))]
    base = next(container(m) for m in p.apply if m["metadata"]["name"].endswith("-lookup-base"))
    assert base["args"][0] == "build" and {"--base-only", "--lookup-only"} <= set(base["args"])


def _waiting_candidate(c: RenderContext, serving: str) -> tuple[MedusaModelStatus, Observed]:
    """Revision ``serving`` serves (autoscaled); the candidate's pods wait for GPUs past the limit."""
    r = rev(c)
    status = MedusaModelStatus.model_validate({"phase": "Deploying", "revisions": {
        "current": serving, "currentRepositoryUri": "s3://r", "currentImage": "t:1", "candidate": r}})
    jobs = built_and_packaged(r)
    waiting = Unschedulable(since=NOW - timedelta(seconds=90), message="0/3 nodes: Insufficient nvidia.com/gpu")
    deps = {names.deployment_name("m", r): DeploymentObs(names.deployment_name("m", r), r, "medusa", 0,
                                                         unschedulable=waiting),
            names.deployment_name("m", serving): served(serving, 2)}
    return status, Observed(now=NOW, jobs=jobs, deployments=deps,
                            autoscalers={"HorizontalPodAutoscaler": "m"})


def _serving_deployment(p, serving: str) -> dict:
    name = names.deployment_name("m", serving)
    return next(m for m in p.apply if m["kind"] == "Deployment" and m["metadata"]["name"] == name)


AUTOSCALED = {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetTokensPerSecondPerReplica": 100}}


def test_the_serving_revision_is_not_touched_to_make_room_unless_asked() -> None:
    c = ctx(rollout={"unschedulableTimeoutSeconds": 60}, serving=AUTOSCALED)
    status, observed = _waiting_candidate(c, "oldrev0001")
    p = plan(c, 2, status, observed)
    assert "replicas" not in _serving_deployment(p, "oldrev0001")["spec"], "the autoscaler owns the replicas"
    assert p.delete == [] and p.status.revisions.serving_scaled_down is None
    assert "not touched to make room unless rollout.makeRoom" in cond(p.status, "CandidateSchedulable").message


def test_make_room_scales_the_serving_revision_to_zero_and_back_if_the_candidate_fails() -> None:
    c = ctx(rollout={"unschedulableTimeoutSeconds": 60, "makeRoom": True}, serving=AUTOSCALED)
    r = rev(c)
    status, observed = _waiting_candidate(c, "oldrev0001")
    first = plan(c, 2, status, observed)
    assert first.status.revisions.serving_scaled_down is True
    assert "scaled to zero to make room" in cond(first.status, "CandidateSchedulable").message

    second = plan(c, 2, first.status, observed)
    assert _serving_deployment(second, "oldrev0001")["spec"]["replicas"] == 0
    assert ("HorizontalPodAutoscaler", "m") in [(d.kind, d.name) for d in second.delete]
    assert not any(m["kind"] == "HorizontalPodAutoscaler" for m in second.apply)
    assert cond(second.status, "AutoscalerReady").reason == "MakingRoom"

    observed.jobs[names.job_name("m", r, "validate")] = JobObs(
        names.job_name("m", r, "validate"), r, "failed",
        result=StepResult("validate", False, error_kind="validation", error_message="speedup 1.1 < 1.5",
                          result={"passed": False, "failures": []}))
    observed.deployments[names.deployment_name("m", r)] = DeploymentObs(names.deployment_name("m", r), r, "medusa", 1)
    failed = plan(c, 2, second.status, observed)
    assert failed.status.revisions.failed == r and failed.status.revisions.serving_scaled_down is None
    restored = plan(c, 2, failed.status, observed)
    assert "replicas" not in _serving_deployment(restored, "oldrev0001")["spec"]
    assert any(m["kind"] == "HorizontalPodAutoscaler" for m in restored.apply)
    assert restored.status.phase == "Degraded"


def test_the_served_revisions_finished_jobs_stay_until_it_retires() -> None:
    """`kubectl get pods` keeps showing how the serving revision was built and validated (the Jobs'
    pods, Completed); they go with the revision when a newer one has replaced it."""
    old, c = "0ld0ld0ld0", ctx()
    r = rev(c)
    status = _serving_status(old)
    status.revisions.candidate = r
    jobs = validated(r, speedup=2.1)
    deps = {names.deployment_name("m", x, v): DeploymentObs(names.deployment_name("m", x, v), x, v, 1)
            for x, v in ((old, "medusa"), (r, "medusa"), (r, "base"))}
    promoted = plan(c, 3, status, Observed(now=NOW, jobs=jobs, deployments=deps))
    assert promoted.status.revisions.current == r
    settled = plan(c, 3, promoted.status, Observed(now=NOW + timedelta(seconds=31), jobs=jobs, deployments=deps))
    deleted = [(d.kind, d.name) for d in settled.delete]
    assert not [name for kind, name in deleted if kind == "Job"], deleted
    assert ("Deployment", names.deployment_name("m", old)) in deleted, "the previous revision retires"
    assert ("Deployment", names.deployment_name("m", r, "base")) in deleted, \
        "the served revision no longer needs its baseline"

    # A newer revision is promoted; once r has drained, its Jobs go with it.
    newer = ctx(engine__maxBatchSize=32)
    r2 = rev(newer)
    serving_r = settled.status.model_copy(deep=True)
    serving_r.revisions.candidate = r2
    deps2 = {names.deployment_name("m", x): DeploymentObs(names.deployment_name("m", x), x, "medusa", 1)
             for x in (r, r2)}
    jobs2 = {**jobs, **validated(r2, speedup=2.0)}
    handed = plan(newer, 4, serving_r, Observed(now=NOW + timedelta(seconds=60), jobs=jobs2, deployments=deps2))
    assert handed.status.revisions.current == r2 and handed.status.revisions.retiring == r
    retired = plan(newer, 4, handed.status, Observed(now=NOW + timedelta(seconds=91), jobs=jobs2, deployments=deps2))
    gone = {d.name for d in retired.delete if d.kind == "Job"}
    assert {j.name for j in jobs.values()} <= gone
    assert not gone & {j.name for j in validated(r2, speedup=2.0).values()}


def test_a_wait_that_ends_by_itself_names_when_to_look_again() -> None:
    """Issue 25: passes come from watch events and a slow resync, so a deadline no event
    announces (here the infrastructure retry delay) must bring the model back on time."""
    c = ctx()
    r = rev(c)
    name = names.job_name("m", r, "build")
    finished_at = NOW - timedelta(seconds=5)
    lost = JobObs(name, r, "failed", finished_at=finished_at,
                  result=StepResult("build", False, error_kind="infrastructure", error_message="store down"))
    p = plan(c, 1, MedusaModelStatus(), Observed(now=NOW, jobs={name: lost}))
    assert p.revisit_after == c.config.infra_retry_seconds - 5
    quiet = plan(c, 1, MedusaModelStatus(), Observed(now=NOW))
    assert quiet.revisit_after is None


def _unchanged_world_cases() -> dict[str, tuple[RenderContext, Observed]]:
    c = ctx(validation={"baseline": "base-engine"})
    r = rev(c)
    key = engine_cache_key(c.spec, c.builder_image)
    hit = JobObs(names.job_name("m", r, "lookup"), r, "succeeded",
                 result=ok("build", cacheKey=key, cacheHit=True, engineUri=f"s3://engines/engines/{key}"))
    base_running = JobObs(names.job_name("m", r, "lookup-base"), r, "running")
    plain = ctx()
    p = rev(plain)
    starting = {names.deployment_name("m", p): DeploymentObs(names.deployment_name("m", p), p, "medusa", 0)}
    stuck = Unschedulable(since=NOW - timedelta(seconds=30), message="0/3 nodes: Insufficient nvidia.com/gpu")
    pending = {names.deployment_name("m", p): DeploymentObs(names.deployment_name("m", p), p, "medusa", 0,
                                                            unschedulable=stuck)}
    stuck_long = Unschedulable(since=NOW - timedelta(hours=2), message="0/3 nodes: Insufficient nvidia.com/gpu")
    unschedulable = {names.deployment_name("m", p): DeploymentObs(names.deployment_name("m", p), p, "medusa", 0,
                                                                  unschedulable=stuck_long)}
    store_down = JobObs(names.job_name("m", p, "lookup"), p, "failed", finished_at=NOW - timedelta(seconds=10),
                        result=StepResult("build", False, error_kind="infrastructure", error_message="store down"))
    return {
        "a step waiting to be retried": (plain, Observed(now=NOW, jobs={store_down.name: store_down})),
        "candidate's engine found, the baseline's still looked up":
            (c, Observed(now=NOW, jobs={hit.name: hit, base_running.name: base_running})),
        "candidate pods starting": (plain, Observed(now=NOW, jobs=built_and_packaged(p), deployments=starting)),
        "candidate pods waiting for a node": (plain, Observed(now=NOW, jobs=built_and_packaged(p), deployments=pending)),
        "candidate pods unschedulable past the limit":
            (plain, Observed(now=NOW, jobs=built_and_packaged(p), deployments=unschedulable)),
    }


@pytest.mark.parametrize("case", list(_unchanged_world_cases()))
def test_a_later_pass_that_sees_nothing_new_changes_no_status(case: str) -> None:
    """A status that changed on every pass (a timestamp, a count of seconds in a message) is a
    write on every pass, and each write's watch event brings the next pass: a loop of writes for
    as long as the state lasts, on every model in it."""
    c, observed = _unchanged_world_cases()[case]
    first = plan(c, 1, MedusaModelStatus(), observed).status
    second = plan(c, 1, first, observed).status
    later = plan(c, 1, second, replace(observed, now=observed.now + timedelta(seconds=7))).status
    assert later.model_dump() == second.model_dump()
