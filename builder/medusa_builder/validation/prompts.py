"""k-shot prompts in the format of the original MMLU evaluation."""

from __future__ import annotations

from .dataset import Question


def subject_title(subject: str) -> str:
    return subject.replace("_", " ").strip()


def format_question(question: Question, *, with_answer: bool) -> str:
    lines = [question.question]
    lines += [f"{letter}. {choice}" for letter, choice in zip(question.letters, question.choices)]
    lines.append(f"Answer: {question.answer}" if with_answer else "Answer:")
    return "\n".join(lines)


def build_prompt(question: Question, examples: list[Question]) -> str:
    """The header, each dev example with its answer, then the question ending in ``Answer:``."""
    header = f"The following are multiple choice questions (with answers) about {subject_title(question.subject)}."
    blocks = [header]
    blocks += [format_question(example, with_answer=True) for example in examples]
    blocks.append(format_question(question, with_answer=False))
    return "\n\n".join(blocks)
