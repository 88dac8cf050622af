"""The contract between the operator and its Jobs has one home (issue 24: "the step result ...
written again by hand in hack/jobscript.py, with exit codes in three places and error kinds as
bare strings in the operator; plan.py reads results as untyped dicts").

The scripted results, the builder's exit codes and the operator's Job policy meet here through
the real code on each side: the contract's codec, ``run_step``, the rendered Job and ``plan()``.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from medusa_common.contract import (BuildResult, ErrorKind, InfraError, StepResult, UserError, ValidateResult,
                                    ValidationFailed, check_result, parse_message, run_step)
from medusa_operator.api.v1alpha1 import MedusaModelStatus
from medusa_operator.controller.observed import JobObs, Observed
from medusa_operator.controller.plan import plan
from medusa_operator.render import jobs, names

from jobscript import Outcome, default_outcome
from plan_helpers import NOW, ctx, rev


def _pod(*args: str) -> SimpleNamespace:
    return SimpleNamespace(spec=SimpleNamespace(containers=[SimpleNamespace(args=list(args))]))


@pytest.mark.parametrize("step, command", [("lookup", "build"), ("build", "build"), ("package", "package"),
                                           ("validate", "validate")])
def test_scripted_results_pass_the_operators_own_check(step: str, command: str) -> None:
    """hack/jobscript.py builds its results with the typed contract, so they parse and type-check
    exactly as a real step's result does."""
    pod = _pod("--cache-key", "k" * 24, "--artifacts-uri", "s3://engines", "--output-uri", "s3://engines/r/x")
    parsed = parse_message(default_outcome(step, pod).message(command))
    check_result(parsed)
    assert parsed.ok and parsed.step == command


def test_scripted_failure_exits_with_its_kinds_code() -> None:
    outcome = Outcome(error=(ErrorKind.VALIDATION, "2 thresholds failed"))
    parsed = parse_message(outcome.message("validate"))
    assert (parsed.error_kind, parsed.final) == ("validation", True)
    assert outcome.code in jobs.FINAL_EXIT_CODES


def _exit_code(error: Exception, tmp_path) -> tuple[int, StepResult]:
    def fail(_args):
        raise error

    out = tmp_path / "result.json"
    code = run_step("validate", fail, argparse.Namespace(result=str(out)))
    return code, parse_message(out.read_text())


@pytest.mark.parametrize("error, final", [(UserError("bad input"), True),
                                          (ValidationFailed("missed", {"passed": False}), True),
                                          (InfraError("store down"), False)])
def test_the_jobs_failure_policy_stops_exactly_on_final_errors(error, final, tmp_path) -> None:
    """The exit code run_step gives an error kind is one the rendered Job fails at once on exactly
    when the operator treats that kind as final."""
    code, result = _exit_code(error, tmp_path)
    c = ctx()
    job = jobs.validate_job(c, rev(c), baseline=False)
    fail_rule = next(r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    assert (code in fail_rule["onExitCodes"]["values"]) is final
    assert result.final is final


def test_plan_reads_a_typed_build_result() -> None:
    """plan() takes the build's fields from the typed result: the tree's size counts its paths."""
    c = ctx()
    r = rev(c)
    build = BuildResult(cache_key="k" * 24, cache_hit=False, engine_uri="s3://engines/engines/x", build_seconds=12.5,
                        num_heads=3, num_layers=1, tree=[[0], [1], [0, 0]], tensorrt_llm_version="1.1.0")
    name = names.job_name("m", r, "build")
    observed = Observed(now=NOW, jobs={name: JobObs(name, r, "succeeded",
                                                   result=StepResult("build", True, build.to_dict()))})
    status = plan(c, 1, MedusaModelStatus(), observed).status
    assert (status.engine.num_heads, status.engine.tree_size, status.engine.build_seconds) == (3, 3, 12.5)


def test_a_nested_field_of_the_wrong_type_is_named() -> None:
    doc = ValidateResult(passed=True).to_dict() | {"perTopic": [{"topic": "coding", "speedup": "fast"}]}
    with pytest.raises(ValueError, match=r"result\.perTopic\[0\]\.speedup must be a number"):
        check_result(StepResult("validate", True, doc))


def test_typed_results_round_trip_through_the_termination_message() -> None:
    verdict = ValidateResult.from_dict(json.loads(json.dumps(default_outcome("validate", _pod()).result.to_dict())))
    message = StepResult("validate", True, verdict.to_dict()).to_message()
    assert parse_message(message).typed(ValidateResult) == verdict
