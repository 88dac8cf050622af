"""Which status transitions become Kubernetes Events (each one a write to the API server)."""

from __future__ import annotations

from medusa_operator.api.v1alpha1 import MedusaModelStatus
from medusa_operator.controller import status as st

from plan_helpers import NOW


def _status(phase: str, *conditions: tuple[str, bool | None, str]) -> MedusaModelStatus:
    status = MedusaModelStatus(phase=phase)
    for type_, value, reason in conditions:
        st.set_condition(status, type_, value, reason, f"{type_} is {reason}", generation=1, now=NOW)
    return status


def _events(*statuses: MedusaModelStatus) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for old, new in zip(statuses, statuses[1:]) for e in st.transition_events(old, new)]


def test_a_rollout_tells_its_phases_and_its_results_not_each_step_starting() -> None:
    found = (st.CREDENTIALS_FOUND, True, "Found")
    rollout = [
        MedusaModelStatus(),
        _status("Building", found, (st.ENGINE_BUILT, False, "Building"), (st.PACKAGED, False, "Waiting")),
        _status("Packaging", found, (st.ENGINE_BUILT, True, "Built"), (st.PACKAGED, False, "Packaging")),
        _status("Deploying", found, (st.ENGINE_BUILT, True, "Built"), (st.PACKAGED, True, "Packaged"),
                (st.CANDIDATE_READY, False, "PodsStarting"), (st.VALIDATED, False, "Deploying")),
        _status("Validating", found, (st.ENGINE_BUILT, True, "Built"), (st.PACKAGED, True, "Packaged"),
                (st.CANDIDATE_READY, True, "PodsReady"), (st.VALIDATED, False, "Validating")),
        _status("Serving", found, (st.ENGINE_BUILT, True, "Built"), (st.PACKAGED, True, "Packaged"),
                (st.CANDIDATE_READY, True, "PodsReady"), (st.VALIDATED, True, "Passed"),
                (st.AVAILABLE, True, "Serving"), (st.READY, True, "Serving")),
    ]
    assert _events(*rollout) == [
        ("Normal", "PhaseBuilding"),
        ("Normal", "PhasePackaging"), ("Normal", "Built"),
        ("Normal", "PhaseDeploying"), ("Normal", "Packaged"),
        ("Normal", "PhaseValidating"), ("Normal", "PodsReady"),
        ("Normal", "PhaseServing"), ("Normal", "Passed"),
    ]
    # Serving from the first pass it was seen (an operator restarted under a serving model):
    # the phase is news, conditions that were never anything but True are not.
    assert _events(MedusaModelStatus(), rollout[-1]) == [("Normal", "PhaseServing")]
    assert _events(rollout[-1], rollout[-1]) == []


def test_trouble_is_a_warning_and_its_end_is_told() -> None:
    building = _status("Building", (st.ENGINE_BUILT, False, "Building"))
    failed = _status("Failed", (st.ENGINE_BUILT, False, "BuildingFailed"))
    assert _events(building, failed) == [("Warning", "PhaseFailed"), ("Warning", "BuildingFailed")]

    pending = _status("Deploying", (st.CANDIDATE_SCHEDULABLE, None, "CandidatePending"))
    stuck = _status("Deploying", (st.CANDIDATE_SCHEDULABLE, False, "Unschedulable"))
    placed = _status("Deploying", (st.CANDIDATE_SCHEDULABLE, True, "Scheduled"))
    assert _events(MedusaModelStatus(phase="Deploying"), pending, stuck, placed) == [
        ("Warning", "Unschedulable"), ("Normal", "Scheduled")]

    retrying = _status("Building", (st.ENGINE_BUILT, False, "RetryingAfterInfrastructureError"))
    assert _events(building, retrying, building) == [("Warning", "RetryingAfterInfrastructureError")]
