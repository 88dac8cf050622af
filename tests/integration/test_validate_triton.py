"""`medusa-builder validate` against the real tritonserver serving SmolLM2-135M.

The baseline is the reference runtime with the base model alone (``triton_base``); the candidate
serves the same model with trained Medusa heads and the calibrated tree (``triton_medusa``). The
command runs as its own process, as it does in the Job, so exit codes and stdout are the real ones.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.model, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data"
PROMPTS = DATA / "prompts" / "prompts.json"
COMMAND = [sys.executable, "-c", "from medusa_builder.cli import main; main()", "validate"]
# SmolLM2-135M answers most questions with "A" (a third of the test answers here); decoding is
# greedy, so the candidate's answers match the baseline's. Tokens/s on two shared CPU cores, next
# to other work, say nothing about GPUs (the reference runtime's tree verification costs more than
# a plain step there), so the passing run only asks for a speedup any working candidate reaches.
PASSING = ["--min-score", "0.25", "--max-drop-vs-base", "0.1", "--min-speedup", "0.05"]


def validate(tmp_path: Path, *argv: str, timeout: float = 900) -> tuple[int, dict, str]:
    result_file = tmp_path / "result.json"
    proc = subprocess.run([*COMMAND, "--result", str(result_file), *argv], capture_output=True, text=True,
                          timeout=timeout)
    doc = json.loads(result_file.read_text()) if result_file.exists() else {}
    return proc.returncode, doc, proc.stdout + "\n--- stderr ---\n" + proc.stderr[-4000:]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def passing_run(tmp_path_factory, triton_base, triton_medusa, smollm2_dir, s3_server):
    """One run over HTTP: every subject, two topics, two concurrency levels, report on S3."""
    tmp = tmp_path_factory.mktemp("validate-pass")
    bucket = "validation-reports"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    credentials = tmp / "credentials"
    credentials.mkdir()
    for key, value in s3_server.env().items():
        (credentials / key).write_text(value)
    code, doc, output = validate(
        tmp, "--candidate", triton_medusa.http_url, "--baseline", triton_base.http_url,
        "--dataset-uri", str(DATA / "mmlu"), "--shots", "3", "--max-examples-per-subject", "2",
        "--prompts-uri", str(PROMPTS), "--topics", "coding,math", "--tokenizer", str(smollm2_dir),
        "--concurrency", "1,2", "--max-tokens", "12", "--warmup-requests", "1",
        "--report-uri", f"s3://{bucket}/runs/report.json", "--credentials-dir", str(credentials),
        "--retries", "1", *PASSING)
    return code, doc, output, client, bucket


def test_a_good_candidate_passes_with_every_result_field(passing_run):
    code, doc, output, _, _ = passing_run
    assert code == 0, output
    assert doc["ok"] is True and doc["step"] == "validate"
    result = doc["result"]
    assert result["passed"] is True and result["failures"] == []
    assert 0.25 <= result["accuracy"] <= 1 and 0 <= result["baseAccuracy"] <= 1
    assert result["baseAccuracy"] - result["accuracy"] <= 0.1
    assert result["tokensPerSecond"] > 0 and result["baseTokensPerSecond"] > 0
    assert result["speedup"] == pytest.approx(result["tokensPerSecond"] / result["baseTokensPerSecond"], rel=0.01)
    assert result["meanAcceptedTokens"] >= 1.0
    assert result["concurrency"] == 1
    assert [t["topic"] for t in result["perTopic"]] == ["coding", "math"]
    assert all(t["tokensPerSecond"] > 0 and t["baseTokensPerSecond"] > 0 and t["speedup"] > 0
               for t in result["perTopic"])
    assert len(json.dumps(doc)) < 4096
    assert "Verdict: PASS" in output and "Tokens/s at concurrency 2" in output


def test_the_full_report_and_chart_reach_the_artifact_store(passing_run):
    _, doc, output, client, bucket = passing_run
    assert doc["result"]["reportUri"] == f"s3://{bucket}/runs/report.json", output
    assert doc["result"]["chartUri"] == f"s3://{bucket}/runs/report.png"
    report = json.loads(client.get_object(Bucket=bucket, Key="runs/report.json")["Body"].read())
    assert report["passed"] is True
    assert [lv["concurrency"] for lv in report["throughput"]["levels"]] == [1, 2]
    level = report["throughput"]["levels"][1]
    assert all(t["candidate"]["requests"] == 2 and t["baseline"]["requests"] == 2 for t in level["perTopic"])
    assert {s["subject"] for s in report["accuracy"]["candidate"]["perSubject"]} == {
        "basic_arithmetic", "everyday_science", "world_capitals"}
    assert report["accuracy"]["candidate"]["total"] == 6
    # Greedy verification keeps Medusa's output equal to the base model's.
    assert report["accuracy"]["agreement"] >= 0.9
    png = client.get_object(Bucket=bucket, Key="runs/report.png")["Body"].read()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_out_of_reach_thresholds_fail_with_named_reasons_over_grpc(tmp_path, triton_base, triton_medusa,
                                                                   smollm2_dir):
    report = tmp_path / "report.json"
    code, doc, output = validate(
        tmp_path, "--candidate", f"grpc://{triton_medusa.grpc_url}", "--baseline", f"grpc://{triton_base.grpc_url}",
        "--dataset-uri", str(DATA / "mmlu"), "--subjects", "world_capitals", "--shots", "3",
        "--max-examples-per-subject", "2", "--prompts-uri", str(PROMPTS), "--topics", "math",
        "--tokenizer", str(smollm2_dir), "--max-tokens", "8", "--report-uri", str(report),
        "--min-score", "1.0", "--max-drop-vs-base", "0.5", "--min-speedup", "50")
    assert code == 4, output
    assert doc["ok"] is False and doc["error"]["kind"] == "validation"
    result = doc["result"]
    assert result["passed"] is False
    names = {f["threshold"]: f for f in result["failures"]}
    expected = {"minSpeedup"} | ({"minScore"} if result["accuracy"] < 1.0 else set())
    assert set(names) == expected
    assert names["minSpeedup"]["required"] == 50
    assert names["minSpeedup"]["measured"] == pytest.approx(result["speedup"], abs=1e-3)
    assert "below the required 50.00x" in names["minSpeedup"]["message"]
    assert json.loads(report.read_text())["passed"] is False
    assert "Verdict: FAIL" in output and "minSpeedup" in output


def test_a_dead_endpoint_is_an_infrastructure_failure_not_a_low_score(tmp_path, triton_base):
    dead = f"http://127.0.0.1:{closed_port()}"
    for candidate, baseline in ((dead, triton_base.http_url), (triton_base.http_url, dead)):
        code, doc, output = validate(
            tmp_path, "--candidate", candidate, "--baseline", baseline, "--dataset-uri", str(DATA / "mmlu"),
            "--retries", "1", "--min-score", "0.0", timeout=120)
        assert code == 3, output
        assert doc["ok"] is False and doc["error"]["kind"] == "infrastructure"
        assert dead in doc["error"]["message"] and "after 2 attempt(s)" in doc["error"]["message"]
        assert "passed" not in doc.get("result", {})


# The reference runtime answers a streaming request in one response, so streaming is checked on
# a scripted decoupled model (not an LLM) served by the same real tritonserver: it sends one
# " word" per output token, STREAM_DELAY_S apart, then the final flag.
STREAM_DELAY_S = 0.05
STREAMING_MODEL = f'''
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "max_tokens").as_numpy().reshape(-1)[0])
            for _ in range(count):
                time.sleep({STREAM_DELAY_S})
                word = pb_utils.Tensor("text_output", np.array([b" word"], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[word]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''
STREAMING_CONFIG = """
name: "ensemble"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }
]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


@pytest.fixture(scope="module")
def streaming_server(tmp_path_factory):
    from fixtures.triton import start_tritonserver

    repository = tmp_path_factory.mktemp("triton-streaming") / "repository"
    (repository / "ensemble" / "1").mkdir(parents=True)
    (repository / "ensemble" / "config.pbtxt").write_text(STREAMING_CONFIG)
    (repository / "ensemble" / "1" / "model.py").write_text(STREAMING_MODEL)
    with start_tritonserver(repository) as server:
        yield server


def test_streaming_over_grpc_measures_time_to_first_token_and_inter_token_latency(tmp_path, streaming_server,
                                                                                  smollm2_dir):
    report = tmp_path / "report.json"
    code, doc, output = validate(
        tmp_path, "--candidate", f"grpc://{streaming_server.grpc_url}", "--prompts-uri", str(PROMPTS),
        "--topics", "math", "--tokenizer", str(smollm2_dir), "--max-tokens", "10", "--concurrency", "1,2",
        "--stream", "on", "--report-uri", str(report), "--dataset-uri", str(DATA / "mmlu"), "--shots", "0",
        "--max-examples-per-subject", "1", "--answer-max-tokens", "2", timeout=300)
    assert code == 0, output
    full = json.loads(report.read_text())
    assert full["settings"]["streaming"] is True
    # A decoupled model only answers over a stream, questions included (" word word" names no choice).
    assert full["accuracy"]["candidate"]["total"] == 3 and full["accuracy"]["candidate"]["accuracy"] == 0.0
    single, double = (level["perTopic"][0]["candidate"] for level in full["throughput"]["levels"])
    for stats in (single, double):
        assert stats["outputTokens"] == 10 * stats["requests"]
        assert stats["itlSeconds"]["mean"] == pytest.approx(STREAM_DELAY_S, abs=0.02)
    assert single["ttftSeconds"]["mean"] == pytest.approx(STREAM_DELAY_S, abs=0.04)
    # One model instance serves one request at a time: a second lane waits for the first, which
    # shows in its time to first token, not in tokens/s.
    assert double["ttftSeconds"]["p90"] > single["ttftSeconds"]["p90"] + 5 * STREAM_DELAY_S
    assert doc["result"]["tokensPerSecond"] == pytest.approx(1 / STREAM_DELAY_S, rel=0.35)


def test_a_decoupled_model_over_http_asks_for_grpc(tmp_path, streaming_server, smollm2_dir):
    code, doc, output = validate(
        tmp_path, "--candidate", streaming_server.http_url, "--prompts-uri", str(PROMPTS),
        "--tokenizer", str(smollm2_dir), timeout=120)
    assert code == 2, output
    assert "decoupled" in doc["error"]["message"] and "--protocol grpc" in doc["error"]["message"]
