"""`Kube.observe` against a stand-in API client.

The race this guards against, a Job's pod finishing between two list calls, cannot be staged
reliably on the real API server of the integration tests, so a stand-in client serves each list
as of the moment it is called.
"""

from __future__ import annotations

from datetime import datetime, timezone

from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from medusa_common.contract import StepResult
from medusa_operator.controller.kube import Kube
from medusa_operator.render import names

JOB = "m-29b718deab-package"


class Listed(dict):
    def to_dict(self) -> dict:
        return dict(self)


class RacingClient:
    """The package Job's pod finishes, and the Job completes, right after the first list call."""

    def __init__(self) -> None:
        self.listed: list[str] = []

    def _objects(self, resource: type) -> list[Listed]:
        finished = len(self.listed) > 1
        if resource is Job:
            conditions = [{"type": "Complete", "status": "True"}] if finished else []
            return [Listed(metadata={"name": JOB, "labels": {names.LABEL_REVISION: "29b718deab"}},
                           status={"conditions": conditions})]
        if resource is Pod:
            message = StepResult("package", True, result={"repositoryUri": "s3://r"}).to_message()
            state = {"terminated": {"exitCode": 0, "message": message}} if finished else {"running": {}}
            return [Listed(metadata={"name": f"{JOB}-x", "labels": {"job-name": JOB}},
                           status={"containerStatuses": [{"state": state}]})]
        return []

    async def list(self, resource: type, namespace: str, labels: dict):
        self.listed.append(resource.__name__)
        for obj in self._objects(resource):
            yield obj


async def test_a_job_seen_complete_is_judged_by_its_finished_pod() -> None:
    client = RacingClient()
    observed = await Kube(client).observe("ns", "m", [], datetime.now(timezone.utc))
    job = observed.jobs[JOB]
    assert job.state == "succeeded", job.problem
    assert job.result.result == {"repositoryUri": "s3://r"}
    assert client.listed.index("Job") < client.listed.index("Pod")
