"""Finding the answer letter in what a model generated after ``Answer:``.

Models answer in many shapes: ``" B"``, ``"(b)"``, ``"B. 42"``, ``"The answer is B."``,
``"B is the correct answer"``, or the text of the choice itself. Only the first non-empty line is
read, so an invented follow-up question with its own ``Answer: C`` is never taken for the answer.
No letter found means a wrong answer.
"""

from __future__ import annotations

import re

_LEADING = re.compile(r"^[*_\"'`]*[(\[]?(?P<letter>[A-Ja-j])(?P<rest>.*)$")
_PHRASES = (
    re.compile(r"^[(\[]?(?P<letter>[A-J])[)\]]?\s+(?i:is)\s+(?:(?i:the)\s+)?(?:\w+\s+)?"
               r"(?i:correct|right|best|answer)\b"),
    re.compile(r"\b(?i:answer)(?:\s+(?i:is))?\s*[:\-]?\s*\(?(?P<letter>[A-J])\b"),
    re.compile(r"\b(?i:option|choice)\s*\(?(?P<letter>[A-J])\b"),
)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".").lower()


def _is_label(letter: str, rest: str) -> bool:
    """Whether a leading letter is a choice label rather than the first word of a sentence.

    "B", "B.", "(b)", "C: 42" and "D The ..." are labels; "A force ..." and "a lot" are words.
    """
    if not rest or rest[0] in ".:)],;*_\"'`":
        return True
    if not rest[0].isspace():
        return False
    following = rest.lstrip()
    return letter.isupper() and (not following or not following[0].islower())


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_answer(generated: str, choices: tuple[str, ...] | list[str], letters: str) -> str | None:
    """The letter the model chose among ``letters``, or None when it names none of them."""
    line = first_line(generated)
    if not line:
        return None
    match = _LEADING.match(line)
    if match and match["letter"].upper() in letters and _is_label(match["letter"], match["rest"]):
        return match["letter"].upper()
    for pattern in _PHRASES:
        match = pattern.search(line)
        if match and match["letter"].upper() in letters:
            return match["letter"].upper()
    said = _normalise(line)
    matches = [letter for letter, choice in zip(letters, choices)
               if said == _normalise(choice) or said.startswith(_normalise(choice) + " ")]
    if len(matches) == 1:
        return matches[0]
    return None
