"""What the operator sees in the cluster, reduced to the facts the plan needs.

The functions here turn Kubernetes objects (plain dicts) into small records. They are pure, so
the plan can be tested with hand-made observations, and they read Job results defensively: a
missing or malformed termination message becomes a readable failure, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from medusa_common.contract import ErrorKind, ResultParseError, ResultTypeError, StepResult, check_result, parse_message

from ..api.v1alpha1 import EngineStatus
from ..render import names, recorded

JobState = Literal["running", "succeeded", "failed"]

# The Job and its pods are watched apart, so a Job can be seen complete before its pod's finished
# container is: for this long a complete Job whose pod shows no result waits for the pod's news.
POD_STATUS_GRACE = timedelta(seconds=20)


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
    awaiting_pod_until: datetime | None = None  # complete, but its pod's result is not seen yet


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
    retry_token: str | None = None  # the model's medusa.dev/retry annotation
    # Engines built or found before, by known_engine_key (plan.py): (namespace, store, cache key).
    known_engines: dict[tuple[str, str, str], EngineStatus] = field(default_factory=dict)
    # When a fact seen now changes by itself (a complete Job's pod news is overdue): look again then.
    look_again_at: datetime | None = None


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


@dataclass(frozen=True)
class PodResult:
    result: StepResult | None = None
    problem: str | None = None  # why there is no usable result: a readable sentence
    missing: bool = False  # no result at all (nothing, or not a step result): the step may not have run


def pod_result(pod: dict[str, Any], command: str | None = None) -> PodResult:
    """The step result a finished pod left, checked against the types the operator reads and,
    when ``command`` is given, against the command its Job runs."""
    term = _terminated(pod)
    if term is None:
        return PodResult()
    where = f"(exit code {term.get('exitCode')}, {term.get('reason') or 'unknown reason'})"
    try:
        result = parse_message(term.get("message"))
    except ResultParseError as exc:
        return PodResult(problem=f"{exc} {where}", missing=True)
    if command is not None and result.step != command:
        return PodResult(problem=f"the pod reported a result of step '{result.step}' but its Job runs "
                                 f"'{command}' {where}")
    try:
        check_result(result)
    except ResultTypeError as exc:
        return PodResult(problem=f"{exc} {where}")
    return PodResult(result=result)


def observe_job(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime | None = None) -> JobObs:
    """Decide a Job's state from its conditions and its pods' results.

    A pod that ended with a definitive result (success, or a user or validation error that a
    retry cannot change) settles the Job at once, without waiting for the Job controller's retries.
    A Job that completed without leaving any result failed for a reason outside the spec (the
    container never wrote one, or its pod or the pod's status is gone): that is an
    infrastructure failure, retried like one. With ``now``, a Job that ended while its pod shows no
    finished container is judged only once POD_STATUS_GRACE has passed: the pod's own update may
    be on its way.
    """
    name = job["metadata"]["name"]
    labels = job["metadata"].get("labels", {})
    revision = labels.get(names.LABEL_REVISION, "")
    step = labels.get(names.LABEL_STEP)
    command = names.builder_command(step) if step in names.STEPS else None
    own = sorted((p for p in pods if p["metadata"].get("labels", {}).get("job-name") == name),
                 key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    results = [pod_result(p, command) for p in own]
    for seen in results:
        if seen.result is not None and seen.result.ok:
            return JobObs(name, revision, "succeeded", result=seen.result)
    latest = results[0] if results else PodResult(problem="no pod found", missing=True)
    if latest.result is not None and latest.result.final:
        return JobObs(name, revision, "failed", result=latest.result)
    conditions = {c.get("type"): c for c in job.get("status", {}).get("conditions") or []
                  if c.get("status") == "True"}
    ended = next((conditions[t] for t in ("Failed", "FailureTarget", "Complete", "SuccessCriteriaMet")
                  if t in conditions), None)
    ended_at = _parse_time(ended.get("lastTransitionTime")) if ended else None
    if latest.result is None and latest.problem is None and now is not None and ended_at is not None \
            and now < ended_at + POD_STATUS_GRACE:
        return JobObs(name, revision, "running", awaiting_pod_until=ended_at + POD_STATUS_GRACE)
    if "Failed" in conditions or "FailureTarget" in conditions:
        cond = conditions.get("Failed") or conditions["FailureTarget"]
        finished = _parse_time(cond.get("lastTransitionTime"))
        if latest.result is not None:
            return JobObs(name, revision, "failed", result=latest.result, finished_at=finished)
        why = latest.problem or f"the Job failed ({cond.get('reason')}: {cond.get('message', '').strip()})"
        return JobObs(name, revision, "failed", problem=why, finished_at=finished)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        cond = conditions.get("Complete") or conditions["SuccessCriteriaMet"]
        if latest.result is None and latest.problem is None:
            # The Job saw its pod succeed, but the pod as read shows no finished container: its
            # status was lost or is not yet seen. Either way nothing says the spec is at fault.
            latest = PodResult(problem=f"its pod {own[0]['metadata'].get('name', '?')} shows no finished "
                                       "container (its status was lost)", missing=True)
        why = f"the Job succeeded but left no usable result: {latest.problem}"
        if latest.missing:
            return JobObs(name, revision, "failed", finished_at=_parse_time(cond.get("lastTransitionTime")),
                          result=StepResult(command or "unknown", False, error_kind=ErrorKind.INFRASTRUCTURE,
                                            error_message=why))
        return JobObs(name, revision, "failed", problem=why)
    unschedulable = next((u for u in (pod_unschedulable(p) for p in own) if u is not None), None)
    problem = next((q for q in (pod_problem(p) for p in own[:1]) if q is not None), None)
    return JobObs(name, revision, "running", unschedulable=unschedulable, pod_problem=problem)


@dataclass(frozen=True)
class Children:
    """A model's children as the caches hold them (trimmed objects, see cache.py)."""
    jobs: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    autoscalers: list[dict[str, Any]] = field(default_factory=list)  # HorizontalPodAutoscalers
    scaled_objects: list[dict[str, Any]] = field(default_factory=list)
    keda_available: bool = True


def observe(model: str, children: Children, now: datetime) -> Observed:
    """What the plan needs to know about one model's children."""
    observed = Observed(now=now, keda_available=children.keda_available)
    for job in children.jobs:
        seen = observe_job(job, children.pods, now)
        observed.jobs[seen.name] = seen
        if seen.awaiting_pod_until is not None:
            observed.look_again_at = min(filter(None, (observed.look_again_at, seen.awaiting_pod_until)))
    for dep in children.deployments:
        seen = observe_deployment(dep, children.pods)
        observed.deployments[seen.name] = seen
    for svc in children.services:
        observed.services[svc["metadata"]["name"]] = svc["metadata"].get("labels", {}).get(names.LABEL_REVISION, "")
        if svc["metadata"]["name"] == names.stable_service_name(model):
            observed.stable_revision = (svc.get("spec", {}).get("selector") or {}).get(names.LABEL_REVISION)
    for hpa in children.autoscalers:
        observed.autoscalers["HorizontalPodAutoscaler"] = hpa["metadata"]["name"]
        observed.autoscaler_desired = (hpa.get("status") or {}).get("desiredReplicas")
    for scaled in children.scaled_objects:
        observed.autoscalers["ScaledObject"] = scaled["metadata"]["name"]
    return observed


def secrets_to_check(observed: Observed, spec_secrets: list[str]) -> list[str]:
    """The Secrets the spec names and those the served revision mounts (it was validated with them,
    and today's spec may no longer name them)."""
    recorded_secrets = {n for d in observed.deployments.values() if d.record for n in d.record.secret_names()}
    return sorted(set(spec_secrets) | recorded_secrets)


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
