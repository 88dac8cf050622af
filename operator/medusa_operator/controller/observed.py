"""What the operator sees in the cluster, reduced to the facts the plan needs.

The functions here turn Kubernetes objects (plain dicts) into small records. They are pure, so
the plan can be tested with hand-made observations, and they read Job results defensively: a
missing or malformed termination message becomes a readable failure, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from medusa_builder.result import ResultParseError, StepResult, parse_message

from ..api.v1alpha1 import EngineStatus
from ..render import names, recorded

JobState = Literal["running", "succeeded", "failed"]


@dataclass(frozen=True)
class Unschedulable:
    since: datetime
    message: str


@dataclass(frozen=True)
class PodProblem:
    """Why a pod does not run: a container's waiting reason or failed termination."""
    reason: str  # the kubelet's reason: ImagePullBackOff, CrashLoopBackOff, Error, ...
    message: str  # a sentence naming the pod and the container


@dataclass(frozen=True)
class JobObs:
    name: str
    revision: str
    state: JobState
    result: StepResult | None = None
    problem: str | None = None  # why no usable result: a readable sentence
    unschedulable: Unschedulable | None = None
    finished_at: datetime | None = None
    pod_problem: PodProblem | None = None  # while running: why its pod does not start


@dataclass(frozen=True)
class DeploymentObs:
    name: str
    revision: str
    variant: str
    ready_replicas: int
    unschedulable: Unschedulable | None = None
    replicas: int | None = None  # spec.replicas: what the operator or the autoscaler asked for
    pod_problem: PodProblem | None = None  # why a pod that is not Ready does not run
    record: recorded.Record | None = None  # what a served revision was validated with


@dataclass
class Observed:
    now: datetime
    jobs: dict[str, JobObs] = field(default_factory=dict)
    deployments: dict[str, DeploymentObs] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)  # name -> revision label ("" if none)
    stable_revision: str | None = None  # the revision the stable Service selects (None: none or several)
    autoscalers: dict[str, str] = field(default_factory=dict)  # kind -> name
    autoscaler_desired: int | None = None  # the HPA's desired replicas, when it has decided
    missing_secrets: list[str] = field(default_factory=list)
    keda_available: bool = True
    # Engines built or found before, by known_engine_key (plan.py): (namespace, store, cache key).
    known_engines: dict[tuple[str, str, str], EngineStatus] = field(default_factory=dict)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pod_unschedulable(pod: dict[str, Any]) -> Unschedulable | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            since = _parse_time(cond.get("lastTransitionTime")) or _parse_time(pod["metadata"].get("creationTimestamp"))
            return Unschedulable(since=since, message=cond.get("message") or "no node fits the pod")
    return None


# Waiting reasons of a container that is on its way: anything else is a problem to surface.
_STARTING = {"ContainerCreating", "PodInitializing"}


def _failure_detail(term: dict[str, Any]) -> str:
    """Exit code and, when the container wrote one, what its termination message says."""
    detail = f"exit code {term.get('exitCode')}"
    message = (term.get("message") or "").strip()
    if message:
        try:
            parsed = parse_message(message)
            message = parsed.error_message or message
        except ResultParseError:
            pass
        detail += f": {message[:300]}"
    return detail


def pod_problem(pod: dict[str, Any]) -> PodProblem | None:
    """Why a pod that is not Ready does not run, from its containers' states; None if nothing is wrong."""
    status = pod.get("status") or {}
    if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
        return None
    name = pod["metadata"].get("name", "?")
    for kind, statuses in (("init container", status.get("initContainerStatuses")),
                           ("container", status.get("containerStatuses"))):
        for cs in statuses or []:
            state = cs.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            last = (cs.get("lastState") or {}).get("terminated")
            where = f"pod {name}: {kind} '{cs.get('name')}'"
            if waiting and waiting.get("reason") not in _STARTING | {None}:
                text = f"{where} is waiting: {waiting['reason']}"
                if waiting.get("message"):
                    text += f" ({waiting['message'].strip()[:300]})"
                if last and last.get("exitCode"):
                    text += f"; it last ended with {_failure_detail(last)}"
                return PodProblem(waiting["reason"], text)
            if term and term.get("exitCode") and (kind == "init container" or pod.get("spec", {}).get(
                    "restartPolicy", "Always") == "Always"):
                return PodProblem(term.get("reason") or "Error", f"{where} ended with {_failure_detail(term)}")
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        term = (status.get("state") or {}).get("terminated")
        if term is not None:
            return term
    return None


def pod_result(pod: dict[str, Any]) -> tuple[StepResult | None, str | None]:
    """The step result a finished pod left, or a sentence saying why there is none."""
    term = _terminated(pod)
    if term is None:
        return None, None
    try:
        return parse_message(term.get("message")), None
    except ResultParseError as exc:
        code = term.get("exitCode")
        reason = term.get("reason") or "unknown reason"
        return None, f"{exc} (exit code {code}, {reason})"


def observe_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobObs:
    """Decide a Job's state from its conditions and its pods' results.

    A pod that ended with a definitive result (success, or a user or validation error that a
    retry cannot change) settles the Job at once, without waiting for the Job controller's retries.
    """
    name = job["metadata"]["name"]
    revision = job["metadata"].get("labels", {}).get(names.LABEL_REVISION, "")
    own = sorted((p for p in pods if p["metadata"].get("labels", {}).get("job-name") == name),
                 key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    results = [(pod_result(p), p) for p in own]
    for (result, _problem), _pod in results:
        if result is not None and result.ok:
            return JobObs(name, revision, "succeeded", result=result)
    latest_result, latest_problem = results[0][0] if results else (None, None)
    if latest_result is not None and latest_result.error_kind in ("user", "validation"):
        return JobObs(name, revision, "failed", result=latest_result)
    conditions = {c.get("type"): c for c in job.get("status", {}).get("conditions") or []
                  if c.get("status") == "True"}
    if "Failed" in conditions or "FailureTarget" in conditions:
        cond = conditions.get("Failed") or conditions["FailureTarget"]
        finished = _parse_time(cond.get("lastTransitionTime"))
        if latest_result is not None:
            return JobObs(name, revision, "failed", result=latest_result, finished_at=finished)
        why = latest_problem or f"the Job failed ({cond.get('reason')}: {cond.get('message', '').strip()})"
        return JobObs(name, revision, "failed", problem=why, finished_at=finished)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return JobObs(name, revision, "failed",
                      problem=f"the Job succeeded but left no usable result: {latest_problem or 'no pod found'}")
    unschedulable = next((u for u in (pod_unschedulable(p) for p in own) if u is not None), None)
    problem = next((q for q in (pod_problem(p) for p in own[:1]) if q is not None), None)
    return JobObs(name, revision, "running", unschedulable=unschedulable, pod_problem=problem)


def observe_deployment(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> DeploymentObs:
    labels = deployment["metadata"].get("labels", {})
    selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
    own = [p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
    unschedulable = next((u for u in (pod_unschedulable(p) for p in own) if u is not None), None)
    return DeploymentObs(
        name=deployment["metadata"]["name"],
        revision=labels.get(names.LABEL_REVISION, ""),
        variant=labels.get(names.LABEL_VARIANT, "medusa"),
        ready_replicas=int(deployment.get("status", {}).get("readyReplicas") or 0),
        unschedulable=unschedulable,
        replicas=deployment.get("spec", {}).get("replicas"),
        pod_problem=next((q for q in (pod_problem(p) for p in own) if q is not None), None),
        record=recorded.decode(deployment["metadata"].get("annotations")),
    )
