"""What a pass observes from the watch caches (issue 25).

Jobs and pods come through separate watches, so a Job can be seen complete before its pod's
finished container is. That must neither fail the step nor be waited out forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from medusa_common.contract import StepResult
from medusa_operator.controller.observed import POD_STATUS_GRACE, Children, observe, observe_job
from medusa_operator.render import names

ENDED = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
JOB = {"metadata": {"name": "m-r-package", "labels": {names.LABEL_REVISION: "r", names.LABEL_STEP: "package"}},
       "status": {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-12-06T12:00:00Z"}]}}
POD_RUNNING = {"metadata": {"name": "m-r-package-x", "labels": {"job-name": "m-r-package"},
                            "creationTimestamp": "2026-12-06T11:59:00Z"},
               "status": {"containerStatuses": [{"name": "step", "state": {"running": {}}}]}}


def finished(pod: dict) -> dict:
    message = StepResult("package", True, result={"repositoryUri": "s3://r"}).to_message()
    return {**pod, "status": {"containerStatuses": [{"name": "step", "state": {
        "terminated": {"exitCode": 0, "message": message}}}]}}


def test_a_complete_job_whose_pod_news_is_late_waits_and_names_when_to_look_again() -> None:
    now = ENDED + timedelta(seconds=1)
    observed = observe("m", Children(jobs=[JOB], pods=[POD_RUNNING]), now)
    job = observed.jobs["m-r-package"]
    assert job.state == "running" and job.result is None
    assert observed.look_again_at == ENDED + POD_STATUS_GRACE


def test_the_pod_news_settles_the_job() -> None:
    seen = observe_job(JOB, [finished(POD_RUNNING)], ENDED + timedelta(seconds=1))
    assert seen.state == "succeeded" and seen.result.result == {"repositoryUri": "s3://r"}


def test_past_the_grace_a_lost_result_is_an_infrastructure_failure_to_retry() -> None:
    seen = observe_job(JOB, [POD_RUNNING], ENDED + POD_STATUS_GRACE + timedelta(seconds=1))
    assert seen.state == "failed" and seen.result.error_kind == "infrastructure"
    assert "shows no finished container" in seen.result.error_message


def test_a_failed_job_whose_pod_news_is_late_waits_too() -> None:
    """Its pod's result says whether the failure is retried (infrastructure) or final (user)."""
    failed = {**JOB, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                "lastTransitionTime": "2026-12-06T12:00:00Z"}]}}
    assert observe_job(failed, [POD_RUNNING], ENDED + timedelta(seconds=2)).state == "running"
