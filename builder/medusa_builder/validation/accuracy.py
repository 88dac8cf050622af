"""Multiple-choice accuracy: k-shot prompts in, parsed answer letters out, scored per subject."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .answers import parse_answer
from .dataset import SubjectSet
from .prompts import build_prompt


@dataclass
class SubjectScore:
    subject: str
    predictions: list[str | None] = field(default_factory=list)  # letter per test question, None if unparsed
    answers: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.answers)

    @property
    def correct(self) -> int:
        return sum(p == a for p, a in zip(self.predictions, self.answers))

    @property
    def unparsed(self) -> int:
        return sum(p is None for p in self.predictions)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class AccuracyResult:
    subjects: list[SubjectScore]

    @property
    def total(self) -> int:
        return sum(s.total for s in self.subjects)

    @property
    def correct(self) -> int:
        return sum(s.correct for s in self.subjects)

    @property
    def accuracy(self) -> float:
        """Over all questions (every question weighs the same, as in the MMLU paper)."""
        return self.correct / self.total if self.total else 0.0

    @property
    def macro_accuracy(self) -> float:
        """The mean of the subjects' accuracies."""
        return sum(s.accuracy for s in self.subjects) / len(self.subjects) if self.subjects else 0.0

    def by_subject(self) -> dict[str, SubjectScore]:
        return {s.subject: s for s in self.subjects}


def build_prompts(sets: list[SubjectSet]) -> list[tuple[str, str, tuple[str, ...], str]]:
    """(subject, prompt, choices, letters) for every test question, in dataset order."""
    return [(subject_set.subject, build_prompt(q, subject_set.dev), q.choices, q.letters)
            for subject_set in sets for q in subject_set.test]


def score(sets: list[SubjectSet], generated: list[str]) -> AccuracyResult:
    """Score generated texts, given in the order of ``build_prompts``."""
    scores, position = [], 0
    for subject_set in sets:
        subject_score = SubjectScore(subject=subject_set.subject)
        for question in subject_set.test:
            text = generated[position]
            position += 1
            subject_score.predictions.append(parse_answer(text, question.choices, question.letters))
            subject_score.answers.append(question.answer)
        scores.append(subject_score)
    return AccuracyResult(subjects=scores)


def evaluate(sets: list[SubjectSet], run_prompts: Callable[[list[str]], list[str]]) -> AccuracyResult:
    """Generate an answer for every question with ``run_prompts`` (order-preserving) and score them."""
    prompts = [prompt for _, prompt, _, _ in build_prompts(sets)]
    return score(sets, run_prompts(prompts))


def agreement(candidate: AccuracyResult, baseline: AccuracyResult) -> float | None:
    """The share of questions where both endpoints chose the same letter (greedy Medusa should give 1.0)."""
    pairs = [(c, b) for cs, bs in zip(candidate.subjects, baseline.subjects)
             for c, b in zip(cs.predictions, bs.predictions)]
    return sum(c == b for c, b in pairs) / len(pairs) if pairs else None
