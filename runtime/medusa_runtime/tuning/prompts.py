"""The packaged prompt set for self-distillation and calibration.

Every tenth prompt is held out for calibration, so a tree is never tuned on the very prompts
the heads were trained on, and another tenth for evaluation (benchmarks), which neither
training nor calibration sees.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from medusa_common.contract import UserError

CALIBRATION_EVERY = 10  # prompt i is for calibration when i % 10 == 0, for evaluation when it is 5
EVALUATION_OFFSET = 5
# Instructions put in front of every prompt to get differently shaped answers from the same set:
# more varied distillation text without more prompts.
ANSWER_STYLES = ("", "Answer in one or two sentences. ", "Answer in detail, with an example. ",
                 "Answer as a short numbered list. ")


def packaged_prompts() -> list[str]:
    text = resources.files("medusa_runtime.tuning").joinpath("data/prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def training_prompts() -> list[str]:
    return [p for i, p in enumerate(packaged_prompts()) if i % CALIBRATION_EVERY not in (0, EVALUATION_OFFSET)]


def calibration_prompts() -> list[str]:
    return [p for i, p in enumerate(packaged_prompts()) if i % CALIBRATION_EVERY == 0]


def evaluation_prompts() -> list[str]:
    return [p for i, p in enumerate(packaged_prompts()) if i % CALIBRATION_EVERY == EVALUATION_OFFSET]


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per line; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"prompt file {path} holds no prompts (one per line)")
    return prompts


def check_answer_styles(styles: int) -> None:
    if not 1 <= styles <= len(ANSWER_STYLES):
        raise UserError(f"answer styles must be between 1 and {len(ANSWER_STYLES)}, got {styles}")


def with_answer_styles(prompts: list[str], styles: int) -> list[str]:
    """Each prompt once per answer style (the first style is the prompt itself)."""
    check_answer_styles(styles)
    return [style + prompt for style in ANSWER_STYLES[:styles] for prompt in prompts]
