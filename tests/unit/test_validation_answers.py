"""Prompt building and answer-letter parsing."""

import pytest

from medusa_builder.validation.answers import parse_answer
from medusa_builder.validation.dataset import Question
from medusa_builder.validation.prompts import build_prompt

CHOICES = ("4", "a force", "Paris", "blue sky")


@pytest.mark.parametrize("generated, expected", [
    (" B", "B"),
    (" B\n\nQuestion: next", "B"),
    (" (c)", "C"),
    (" d.", "D"),
    ("B. a force", "B"),
    ("**C**", "C"),
    (" The answer is C.", "C"),
    ("answer: (D)", "D"),
    ("I think option A", "A"),
    (" Paris", "C"),
    (" a force that pulls", "B"),
    (" 4", "A"),
    ("A is the answer to the", "A"),
    ("C is the only answer to", "C"),
    ("(D) is correct.", "D"),
    ("\n\n  A\nAnswer: D", "A"),
])
def test_letters_are_found_in_many_shapes(generated, expected):
    assert parse_answer(generated, CHOICES, "ABCD") == expected


@pytest.mark.parametrize("generated", [
    "",
    "   \n ",
    " E",
    " A cat sat on the mat",
    " an answer is a thing",
    " A is a letter",
    " I do not know\nAnswer: B",
])
def test_no_letter_means_no_answer(generated):
    assert parse_answer(generated, CHOICES, "ABCD") is None


def test_fewer_choices_limit_the_letters():
    assert parse_answer(" C", ("yes", "no"), "AB") is None
    assert parse_answer(" b", ("yes", "no"), "AB") == "B"


def test_k_shot_prompt_layout():
    example = Question("high_school_physics", "What is g?", ("9.8", "1", "0", "3"), "A")
    question = Question("high_school_physics", "Unit of force?", ("newton", "joule", "watt", "volt"), "A")
    prompt = build_prompt(question, [example])
    assert prompt == (
        "The following are multiple choice questions (with answers) about high school physics.\n\n"
        "What is g?\nA. 9.8\nB. 1\nC. 0\nD. 3\nAnswer: A\n\n"
        "Unit of force?\nA. newton\nB. joule\nC. watt\nD. volt\nAnswer:")
    assert build_prompt(question, []).endswith("about high school physics.\n\nUnit of force?\n"
                                               "A. newton\nB. joule\nC. watt\nD. volt\nAnswer:")
