"""The operator's timing and concurrency flags refuse values that would spin or stall it: a
resync of 0 s would requeue every model at once forever, 0 workers would never reconcile."""

from __future__ import annotations

import pytest

from medusa_operator.cli import build_parser


@pytest.mark.parametrize("flag,value", [("--resync-seconds", "0"), ("--reconcile-interval", "-1"),
                                        ("--secret-check-seconds", "soon"), ("--workers", "0")])
def test_a_flag_that_would_spin_or_stall_the_operator_is_refused(flag, value, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", flag, value])
    assert flag in capsys.readouterr().err


def test_sensible_values_are_taken() -> None:
    args = build_parser().parse_args(["run", "--resync-seconds", "30", "--workers", "8"])
    assert (args.resync_seconds, args.workers) == (30.0, 8)
