"""Conditions, phases and events: the one place that decides how state is reported.

Condition types:
- ``EngineBuilt``, ``Packaged``, ``Validated``: the steps of the candidate revision.
- ``Available``: the served revision has ready pods behind the stable Service.
- ``Ready``: the stable Service points at a validated revision whose pods are ready.
- ``CredentialsFound``: every referenced credentials Secret exists.
- ``CandidateSchedulable``: the candidate's pods found room (False when they waited too long).
- ``ImageAllowed``: the builder and serving images pass the operator's image policy (present only
  when the operator has one).
- ``CandidateReady``: the candidate's pods are Ready; False names the reason a pod gives
  (ImagePullBackOff, CrashLoopBackOff, an init container that failed) and the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ..api.v1alpha1 import Condition, MedusaModelStatus

ENGINE_BUILT = "EngineBuilt"
PACKAGED = "Packaged"
VALIDATED = "Validated"
AVAILABLE = "Available"
READY = "Ready"
CREDENTIALS_FOUND = "CredentialsFound"
CANDIDATE_SCHEDULABLE = "CandidateSchedulable"
IMAGE_ALLOWED = "ImageAllowed"
CANDIDATE_READY = "CandidateReady"
STEP_CONDITIONS = (ENGINE_BUILT, PACKAGED, VALIDATED)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def rfc3339(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def get_condition(status: MedusaModelStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def set_condition(status: MedusaModelStatus, type_: str, value: bool | None, reason: str, message: str,
                  *, generation: int | None, now: datetime, before: MedusaModelStatus | None = None) -> bool:
    """Set a condition; keep lastTransitionTime unless the status flips. Returns True on a flip.

    ``before``: the status as the pass found it, when a pass may set one condition more than once
    (the candidate's step, then the baseline's): a flip is judged against where the pass began,
    so that True-then-False within one pass keeps the time the condition last became False."""
    text = {True: "True", False: "False", None: "Unknown"}[value]
    old = get_condition(before if before is not None else status, type_)
    flipped = old is None or old.status != text
    new = Condition(
        type=type_, status=text, reason=reason, message=message, observed_generation=generation,
        last_transition_time=rfc3339(now) if flipped else old.last_transition_time,
    )
    status.conditions = [c for c in status.conditions if c.type != type_] + [new]
    status.conditions.sort(key=lambda c: c.type)
    return flipped


def remove_condition(status: MedusaModelStatus, type_: str) -> None:
    status.conditions = [c for c in status.conditions if c.type != type_]


def is_true(status: MedusaModelStatus, type_: str) -> bool:
    cond = get_condition(status, type_)
    return cond is not None and cond.status == "True"


def transition_events(old: MedusaModelStatus, new: MedusaModelStatus) -> list[Event]:
    """One event per phase change, per condition that became True or changed its reason while
    True, and a warning per condition that became False for a reason other than progress.

    Progress (a step that starts, pods that start) is told by the phase events alone, and a
    condition that is True from the start (credentials found, images allowed) tells nothing:
    every Event is a write to the API server, thousands at once when many models roll out."""
    events: list[Event] = []
    if old.phase != new.phase and new.phase is not None:
        kind = "Warning" if new.phase in ("Failed", "Degraded") else "Normal"
        events.append(Event(kind, f"Phase{new.phase}", new.message or f"phase is now {new.phase}"))
    for cond in new.conditions:
        before = get_condition(old, cond.type)
        if before is not None and before.status == cond.status and before.reason == cond.reason:
            continue
        if cond.status == "Unknown" or (cond.status == "False" and cond.reason in _QUIET_REASONS):
            continue
        if cond.status == "True" and before is None:
            continue
        kind = "Warning" if cond.status == "False" else "Normal"
        events.append(Event(kind, cond.reason, f"{cond.type}={cond.status}: {cond.message}"))
    return events


# Reasons for a False condition that describe progress rather than trouble.
_QUIET_REASONS = {"Building", "Packaging", "Waiting", "Validating", "Deploying", "NotServing", "Superseded",
                  "CandidatePending", "PodsStarting"}
