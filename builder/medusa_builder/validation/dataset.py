"""Multiple-choice sets and throughput prompts, read from local folders.

Two layouts of a multiple-choice set are understood:

- the original MMLU release: ``[data/]dev/<subject>_dev.csv`` and ``[data/]test/<subject>_test.csv``
  (no header; columns question, choices..., answer letter); a header row is tolerated;
- the Hugging Face parquet layout: ``<subject>/dev-*.parquet`` and ``<subject>/test-*.parquet``
  (columns ``question``, ``choices`` (list) and ``answer`` (index or letter)), or combined files
  such as ``all/test-*.parquet`` whose ``subject`` column says which subject a row belongs to.

The dev split provides the few-shot examples and the test split the scored questions. Anything
empty or malformed is a ``UserError`` naming the file and row.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medusa_common.contract import UserError

LETTERS = "ABCDEFGHIJ"
DEV_SPLIT = "dev"
TEST_SPLIT = "test"
_SPLIT_ALIASES = {"dev": DEV_SPLIT, "test": TEST_SPLIT, "val": "validation", "validation": "validation",
                  "train": "train", "auxiliary_train": "auxiliary_train"}
_CONTAINER_DIRS = {"all", "data"}
_CSV_NAME = re.compile(r"^(?P<subject>.+)_(?P<split>dev|test|val)\.csv$")


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: str  # the letter of the right choice

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]


@dataclass
class SubjectSet:
    subject: str
    dev: list[Question] = field(default_factory=list)
    test: list[Question] = field(default_factory=list)


def make_question(subject: str, question: str, choices: list, answer, where: str) -> Question:
    """Validate one row; ``answer`` is a letter or a 0-based index. ``where`` names the row in errors."""
    question = str(question or "").strip()
    texts = tuple(str(c).strip() for c in choices)
    if not question:
        raise UserError(f"{where}: the question is empty; fix or remove the row")
    if not 2 <= len(texts) <= len(LETTERS):
        raise UserError(f"{where}: a question needs 2 to {len(LETTERS)} choices, found {len(texts)}")
    if any(not t for t in texts):
        raise UserError(f"{where}: a choice is empty; fix or remove the row")
    letters = LETTERS[: len(texts)]
    if isinstance(answer, str) and answer.strip().upper() in letters and answer.strip():
        letter = answer.strip().upper()
    elif isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(texts):
        letter = letters[answer]
    elif isinstance(answer, str) and answer.strip().isdigit() and int(answer) < len(texts):
        letter = letters[int(answer)]
    else:
        raise UserError(f"{where}: the answer {answer!r} is not one of {', '.join(letters)} "
                        f"(or an index 0-{len(texts) - 1})")
    return Question(subject=subject, question=question, choices=texts, answer=letter)


# --- the MMLU CSV release layout -------------------------------------------------------------


def _looks_like_header(row: list[str]) -> bool:
    return bool(row) and row[-1].strip().lower() in ("answer", "target", "label")


def read_csv_questions(path: Path, subject: str) -> list[Question]:
    questions = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise UserError(f"{path} is not a valid CSV file ({exc})") from None
    for number, row in enumerate(rows, start=1):
        if not any(cell.strip() for cell in row):
            continue
        if number == 1 and _looks_like_header(row):
            continue
        where = f"{path.name} row {number}"
        if len(row) < 4:
            raise UserError(f"{where}: expected question, at least two choices and an answer letter, "
                            f"found {len(row)} columns")
        questions.append(make_question(subject, row[0], row[1:-1], row[-1], where))
    return questions


def _csv_files(root: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for path in sorted(root.rglob("*.csv")):
        match = _CSV_NAME.match(path.name)
        if match:
            split = _SPLIT_ALIASES[match["split"]]
            found.setdefault((match["subject"], split), path)
    return found


# --- the Hugging Face parquet layout ---------------------------------------------------------


def _split_of(path: Path) -> str | None:
    stem = path.name.removesuffix(".parquet")
    head = re.split(r"[-.]", stem, maxsplit=1)[0]
    if head in _SPLIT_ALIASES:
        return _SPLIT_ALIASES[head]
    if path.parent.name in _SPLIT_ALIASES:
        return _SPLIT_ALIASES[path.parent.name]
    return None


def _subject_dir_of(path: Path, root: Path) -> str | None:
    for part in reversed(path.relative_to(root).parts[:-1]):
        if part not in _SPLIT_ALIASES and part not in _CONTAINER_DIRS:
            return part
    return None


def read_parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several error types for bad files
        raise UserError(f"{path} is not a readable parquet file ({exc})") from None


def _parquet_questions(path: Path, root: Path) -> list[Question]:
    subject_dir = _subject_dir_of(path, root)
    questions = []
    for number, row in enumerate(read_parquet_rows(path)):
        where = f"{path.relative_to(root)} row {number}"
        missing = [c for c in ("question", "choices", "answer") if c not in row]
        if missing:
            raise UserError(f"{where}: missing column(s) {', '.join(missing)}; the parquet layout needs "
                            "question, choices and answer")
        subject = subject_dir or row.get("subject")
        if not subject:
            raise UserError(f"{where}: no subject (neither a subject folder nor a subject column)")
        if not isinstance(row["choices"], (list, tuple)):
            raise UserError(f"{where}: 'choices' must be a list of strings")
        questions.append(make_question(str(subject), row["question"], list(row["choices"]), row["answer"], where))
    return questions


# --- both layouts ----------------------------------------------------------------------------


def _collect(root: Path) -> dict[str, dict[str, list[Question]]]:
    """subject -> split -> questions, from whichever layout the folder holds."""
    by_subject: dict[str, dict[str, list[Question]]] = {}
    csv_files = _csv_files(root)
    if csv_files:
        for (subject, split), path in csv_files.items():
            by_subject.setdefault(subject, {})[split] = read_csv_questions(path, subject)
        return by_subject
    parquet_files = sorted(root.rglob("*.parquet"))
    if not parquet_files:
        raise UserError(f"{root} holds no multiple-choice set: expected <subject>_test.csv files (MMLU release "
                        "layout) or <subject>/test-*.parquet files (Hugging Face layout)")
    for path in parquet_files:
        split = _split_of(path)
        if split is None:
            continue
        for question in _parquet_questions(path, root):
            by_subject.setdefault(question.subject, {}).setdefault(split, []).append(question)
    return by_subject


def load_subjects(root: str | Path, subjects: list[str] | None, *, shots: int,
                  max_examples: int | None) -> list[SubjectSet]:
    """Load the requested subjects (all with a test split when ``subjects`` is empty)."""
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"the dataset folder {folder} does not exist")
    collected = _collect(folder)
    available = sorted(s for s, splits in collected.items() if splits.get(TEST_SPLIT) and s != "all")
    wanted = list(dict.fromkeys(subjects)) if subjects else available
    if not wanted:
        raise UserError(f"{folder} holds no subject with test questions")
    unknown = [s for s in wanted if s not in available]
    if unknown:
        shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
        raise UserError(f"subject(s) {', '.join(unknown)} not found in the dataset (or without test questions); "
                        f"available: {shown or 'none'}")
    sets = []
    for subject in wanted:
        dev = collected[subject].get(DEV_SPLIT, [])
        if len(dev) < shots:
            raise UserError(f"subject {subject} has {len(dev)} dev example(s) but {shots} shots were asked; "
                            "lower --shots or add dev examples")
        test = collected[subject][TEST_SPLIT]
        if max_examples:
            test = test[:max_examples]
        sets.append(SubjectSet(subject=subject, dev=dev[:shots], test=test))
    return sets


# --- throughput prompts ----------------------------------------------------------------------


def _add_prompt(topics: dict[str, list[str]], topic, prompt, where: str) -> None:
    if not isinstance(topic, str) or not topic.strip():
        raise UserError(f"{where}: 'topic' must be a non-empty string")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"{where}: 'prompt' must be a non-empty string")
    topics.setdefault(topic.strip(), []).append(prompt)


def _prompts_from_json(doc, where: str) -> dict[str, list[str]]:
    topics: dict[str, list[str]] = {}
    if isinstance(doc, dict):
        for topic, prompts in doc.items():
            if not isinstance(prompts, list):
                raise UserError(f"{where}: topic {topic!r} must map to a list of prompts")
            for index, prompt in enumerate(prompts):
                _add_prompt(topics, topic, prompt, f"{where} {topic}[{index}]")
    elif isinstance(doc, list):
        for index, item in enumerate(doc):
            if not isinstance(item, dict):
                raise UserError(f"{where} item {index}: expected an object with 'topic' and 'prompt'")
            _add_prompt(topics, item.get("topic"), item.get("prompt"), f"{where} item {index}")
    else:
        raise UserError(f"{where}: expected {{topic: [prompts]}} or a list of {{topic, prompt}} objects")
    return topics


def _read_prompt_file(path: Path) -> dict[str, list[str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        topics: dict[str, list[str]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise UserError(f"{path.name} line {number} is not JSON") from None
            if not isinstance(item, dict):
                raise UserError(f"{path.name} line {number}: expected an object with 'topic' and 'prompt'")
            _add_prompt(topics, item.get("topic"), item.get("prompt"), f"{path.name} line {number}")
        return topics
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UserError(f"{path.name} is not valid JSON ({exc})") from None
        return _prompts_from_json(doc, path.name)
    if path.suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        return {path.stem: prompts} if prompts else {}
    return {}


BUILTIN_PROMPTS = Path(__file__).with_name("topic_prompts.json")


def load_topic_prompts(location: str | Path | None, topics: list[str] | None = None) -> dict[str, list[str]]:
    """Prompts grouped by topic from a .json/.jsonl file or a folder of such files or <topic>.txt files;
    without a location, the built-in set (six topics, three prompts each)."""
    path = Path(location) if location else BUILTIN_PROMPTS
    if not path.exists():
        raise UserError(f"the prompts location {path} does not exist")
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    merged: dict[str, list[str]] = {}
    for file in files:
        try:
            found = _read_prompt_file(file)
        except UnicodeDecodeError:
            raise UserError(f"{file} is not UTF-8 text") from None
        for topic, prompts in found.items():
            merged.setdefault(topic, []).extend(prompts)
    merged = {t: p for t, p in merged.items() if p}
    if not merged:
        raise UserError(f"{path} holds no throughput prompts: give {{topic: [prompts]}} JSON, "
                        "{topic, prompt} JSON lines or <topic>.txt files with one prompt per line")
    if topics:
        unknown = [t for t in topics if t not in merged]
        if unknown:
            raise UserError(f"topic(s) {', '.join(unknown)} have no prompts; available: {', '.join(sorted(merged))}")
        merged = {t: merged[t] for t in topics}
    return merged
