"""Thresholds and the verdict: every failed threshold is named with what was measured and required."""

from __future__ import annotations

from dataclasses import dataclass

# Scores come from integer counts; this only absorbs floating-point noise at equality.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Thresholds:
    min_score: float | None = None
    max_drop_vs_base: float | None = None
    min_speedup: float | None = None

    def to_dict(self) -> dict:
        return {"minScore": self.min_score, "maxDropVsBase": self.max_drop_vs_base, "minSpeedup": self.min_speedup}


def failure(threshold: str, measured: float | None, required: float, message: str) -> dict:
    rounded = None if measured is None else round(measured, 4)
    return {"threshold": threshold, "measured": rounded, "required": required, "message": message}


def evaluate(thresholds: Thresholds, *, accuracy: float | None, base_accuracy: float | None,
             speedup: float | None) -> list[dict]:
    """The failed thresholds; an empty list is a pass. A threshold that could not be measured fails."""
    failures = []
    if thresholds.min_score is not None:
        if accuracy is None:
            failures.append(failure("minScore", None, thresholds.min_score,
                                    "accuracy was not measured; give --dataset-uri"))
        elif accuracy + _TOLERANCE < thresholds.min_score:
            failures.append(failure(
                "minScore", accuracy, thresholds.min_score,
                f"accuracy {accuracy:.3f} is below the required minimum {thresholds.min_score:.3f}"))
    if thresholds.max_drop_vs_base is not None:
        if accuracy is None or base_accuracy is None:
            failures.append(failure("maxDropVsBase", None, thresholds.max_drop_vs_base,
                                    "the accuracy drop was not measured; give --dataset-uri and --baseline"))
        else:
            drop = base_accuracy - accuracy
            if drop > thresholds.max_drop_vs_base + _TOLERANCE:
                failures.append(failure(
                    "maxDropVsBase", drop, thresholds.max_drop_vs_base,
                    f"accuracy dropped {drop:.3f} below the baseline ({base_accuracy:.3f} -> {accuracy:.3f}); "
                    f"at most {thresholds.max_drop_vs_base:.3f} is allowed"))
    if thresholds.min_speedup is not None:
        if speedup is None:
            failures.append(failure("minSpeedup", None, thresholds.min_speedup,
                                    "the speedup was not measured; give --tokenizer and --baseline"))
        elif speedup + _TOLERANCE < thresholds.min_speedup:
            failures.append(failure("minSpeedup", speedup, thresholds.min_speedup,
                                    f"speedup {speedup:.2f}x is below the required {thresholds.min_speedup:.2f}x"))
    return failures
