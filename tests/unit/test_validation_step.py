"""`medusa-builder validate` input checks and exit codes (no server needed: inputs are refused first)."""

import json
import socket
from pathlib import Path

import pytest

from medusa_builder import cli

DATA = Path(__file__).resolve().parents[1] / "data"
PROMPTS = DATA / "prompts" / "prompts.json"


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_validate(tmp_path, *argv) -> tuple[int, dict]:
    result_file = tmp_path / "result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["validate", "--result", str(result_file), *argv])
    return stop.value.code, json.loads(result_file.read_text())


@pytest.mark.parametrize("argv, fragment", [
    ([], "nothing to measure"),
    (["--tokenizer", "nowhere/tokenizer"], "does not exist"),
    (["--dataset-uri", "DATA", "--min-score", "1.5"], "--min-score must be between 0 and 1"),
    (["--dataset-uri", "DATA", "--max-drop-vs-base", "0.01"], "--max-drop-vs-base needs --baseline"),
    (["--dataset-uri", "DATA", "--min-speedup", "1.5"], "--min-speedup needs --baseline and --tokenizer"),
    (["--dataset-uri", "DATA", "--prompts-uri", "PROMPTS"], "--prompts-uri needs --tokenizer"),
    (["--dataset-uri", "DATA", "--shots", "-1"], "--shots must be at least 0"),
    (["--dataset-uri", "DATA", "--subjects", "astronomy"], "astronomy not found"),
    (["--dataset-uri", "DATA", "--shots", "9"], "9 shots were asked"),
    (["--dataset-uri", "nowhere/at/all"], "does not exist"),
    (["--dataset-uri", "ftp://x/y"], "unsupported location scheme"),
])
def test_bad_input_is_refused_with_exit_2_before_any_endpoint_is_contacted(tmp_path, argv, fragment):
    argv = [a.replace("DATA", str(DATA / "mmlu")).replace("PROMPTS", str(PROMPTS)) for a in argv]
    code, doc = run_validate(tmp_path, "--candidate", _dead_url(), *argv)
    assert code == 2, doc
    assert doc["ok"] is False and doc["error"]["kind"] == "user"
    assert fragment in doc["error"]["message"]


def test_an_empty_dataset_is_a_user_error(tmp_path):
    empty = tmp_path / "empty"
    (empty / "test").mkdir(parents=True)
    (empty / "test" / "physics_test.csv").write_text("")
    code, doc = run_validate(tmp_path, "--candidate", _dead_url(), "--dataset-uri", str(empty))
    assert code == 2 and "no subject with test questions" in doc["error"]["message"]


def test_a_malformed_dataset_is_a_user_error(tmp_path):
    bad = tmp_path / "bad" / "test"
    bad.mkdir(parents=True)
    (bad / "physics_test.csv").write_text("What is g?,9.8,1,0,3,Z\n")
    code, doc = run_validate(tmp_path, "--candidate", _dead_url(), "--dataset-uri", str(bad.parent), "--shots", "0")
    assert code == 2 and "physics_test.csv row 1" in doc["error"]["message"]


def test_an_unreachable_candidate_is_exit_3_without_a_verdict(tmp_path):
    url = _dead_url()
    code, doc = run_validate(tmp_path, "--candidate", url, "--dataset-uri", str(DATA / "mmlu"), "--retries", "0",
                             "--min-score", "0.1")
    assert code == 3
    assert doc["error"]["kind"] == "infrastructure" and url in doc["error"]["message"]
    assert "result" not in doc


def test_bad_concurrency_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["validate", "--candidate", "h:1", "--dataset-uri", "x", "--concurrency", "0,2"])
    assert stop.value.code == 2
    assert "expected positive integers" in capsys.readouterr().err


@pytest.mark.parametrize("uri, fragment", [
    ("hf://org/name/report.json", "read-only"),
    ("s3://bucket", "must name a file"),
    ("s3://bucket/reports/", "must name a file"),
])
def test_report_locations_are_checked_up_front(tmp_path, uri, fragment):
    code, doc = run_validate(tmp_path, "--candidate", _dead_url(), "--dataset-uri", str(DATA / "mmlu"),
                             "--report-uri", uri)
    assert code == 2 and fragment in doc["error"]["message"]
