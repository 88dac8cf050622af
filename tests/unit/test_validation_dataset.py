"""Multiple-choice sets in both layouts, and throughput prompts."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medusa_common.contract import UserError
from medusa_builder.validation.dataset import load_subjects, load_topic_prompts, make_question

DATA = Path(__file__).resolve().parents[1] / "data"
PROMPTS = DATA / "prompts" / "prompts.json"


def test_mmlu_release_layout_from_the_test_data():
    sets = load_subjects(DATA / "mmlu", None, shots=5, max_examples=None)
    assert [s.subject for s in sets] == ["basic_arithmetic", "everyday_science", "world_capitals"]
    capitals = {s.subject: s for s in sets}["world_capitals"]
    assert len(capitals.dev) == 5 and len(capitals.test) == 6
    us = capitals.test[1]
    assert us.choices == ("New York", "Chicago", "Washington, D.C.", "Boston")
    assert us.answer == "C"


def test_subject_selection_order_and_example_cap():
    sets = load_subjects(DATA / "mmlu", ["world_capitals", "basic_arithmetic"], shots=2, max_examples=3)
    assert [s.subject for s in sets] == ["world_capitals", "basic_arithmetic"]
    assert [len(s.dev) for s in sets] == [2, 2]
    assert [len(s.test) for s in sets] == [3, 3]


def _write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_hugging_face_parquet_layout_per_subject(tmp_path):
    row = {"question": "2 + 2 = ?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1}
    _write_parquet(tmp_path / "math" / "dev-00000-of-00001.parquet", [row] * 2)
    _write_parquet(tmp_path / "math" / "test-00000-of-00001.parquet", [row] * 3)
    _write_parquet(tmp_path / "math" / "validation-00000-of-00001.parquet", [row])
    (sets,) = load_subjects(tmp_path, ["math"], shots=2, max_examples=None)
    assert len(sets.dev) == 2 and len(sets.test) == 3
    assert sets.test[0].answer == "B"


def test_hugging_face_parquet_combined_file_uses_the_subject_column(tmp_path):
    rows = [{"question": f"q{i}", "subject": s, "choices": ["a", "b", "c", "d"], "answer": i % 4}
            for i, s in enumerate(["bio", "chem", "bio"])]
    _write_parquet(tmp_path / "all" / "test-00000-of-00001.parquet", rows)
    sets = load_subjects(tmp_path, None, shots=0, max_examples=None)
    assert {s.subject: len(s.test) for s in sets} == {"bio": 2, "chem": 1}
    assert sets[0].test[1].answer == "C"


@pytest.mark.parametrize("content, fragment", [
    ("What?,a,b,c,d,E\n", "answer 'E'"),
    ("What?,a\n", "columns"),
    (",a,b,c,d,A\n", "question is empty"),
])
def test_malformed_rows_name_the_file_and_row(tmp_path, content, fragment):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text(content)
    with pytest.raises(UserError, match=fragment) as info:
        load_subjects(tmp_path, None, shots=0, max_examples=None)
    assert "x_test.csv row 1" in str(info.value)


def test_header_rows_and_blank_lines_are_tolerated(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text("question,A,B,C,D,answer\n\nWhy?,a,b,c,d,d\n")
    (sets,) = load_subjects(tmp_path, None, shots=0, max_examples=None)
    assert [q.answer for q in sets.test] == ["D"]


def test_empty_and_missing_datasets_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="holds no multiple-choice set"):
        load_subjects(tmp_path, None, shots=0, max_examples=None)
    with pytest.raises(UserError, match="does not exist"):
        load_subjects(tmp_path / "nowhere", None, shots=0, max_examples=None)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text("\n")
    with pytest.raises(UserError, match="no subject with test questions"):
        load_subjects(tmp_path, None, shots=0, max_examples=None)


def test_unknown_subject_and_too_few_shots_are_user_errors():
    with pytest.raises(UserError, match="nuclear_physics not found.*available: basic_arithmetic"):
        load_subjects(DATA / "mmlu", ["nuclear_physics"], shots=0, max_examples=None)
    with pytest.raises(UserError, match="5 dev example.*6 shots"):
        load_subjects(DATA / "mmlu", ["world_capitals"], shots=6, max_examples=None)


def test_answers_given_as_letters_or_indexes():
    assert make_question("s", "q", ["a", "b", "c"], " c ", "here").answer == "C"
    assert make_question("s", "q", ["a", "b", "c"], 0, "here").answer == "A"
    assert make_question("s", "q", ["a", "b", "c"], "2", "here").answer == "C"
    with pytest.raises(UserError, match="here: the answer 3"):
        make_question("s", "q", ["a", "b", "c"], 3, "here")
    with pytest.raises(UserError, match="here: the answer ''"):
        make_question("s", "q", ["a", "b"], "", "here")


def test_topic_prompts_from_the_test_data_and_other_shapes(tmp_path):
    topics = load_topic_prompts(PROMPTS)
    assert sorted(topics) == ["coding", "math", "writing"]
    assert all(len(p) == 2 for p in topics.values())
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "chat.txt").write_text("Hello there\n\nHow are you?\n")
    (folder / "more.jsonl").write_text(json.dumps({"topic": "chat", "prompt": "Hi"}) + "\n")
    (folder / ".medusa-fetch.json").write_text('{"uri": "s3://x", "files": []}')
    assert load_topic_prompts(folder) == {"chat": ["Hello there", "How are you?", "Hi"]}
    assert load_topic_prompts(PROMPTS, ["math"]) == {"math": topics["math"]}


@pytest.mark.parametrize("name, content, fragment", [
    ("p.json", "{}", "holds no throughput prompts"),
    ("p.json", "{not json", "not valid JSON"),
    ("p.json", '{"math": "one prompt"}', "must map to a list"),
    ("p.jsonl", '{"topic": "math"}\n', "'prompt' must be a non-empty string"),
    ("p.json", '[{"topic": "", "prompt": "x"}]', "'topic' must be a non-empty string"),
])
def test_bad_prompt_files_are_user_errors(tmp_path, name, content, fragment):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=fragment):
        load_topic_prompts(tmp_path / name)


def test_the_built_in_prompt_set_covers_several_topics():
    topics = load_topic_prompts(None)
    assert len(topics) >= 5 and all(len(prompts) >= 3 for prompts in topics.values())
    assert load_topic_prompts(None, ["coding"]) == {"coding": topics["coding"]}


def test_unknown_topic_is_a_user_error():
    with pytest.raises(UserError, match="cooking have no prompts"):
        load_topic_prompts(PROMPTS, ["cooking"])
