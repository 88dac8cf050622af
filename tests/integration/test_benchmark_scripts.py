"""The benchmark scripts end to end on the CPU, so a broken benchmark shows up here rather than
in a GPU session (their figures here say nothing about speed; only their bookkeeping is checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medusa_runtime.engine.heads import TOKEN_COUNTS_FILE, save_token_counts
from medusa_common.tree import normalise_tree
from tiny_llama import VOCAB, write_tiny_model

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
VOCAB_SIZE = 49152  # SmolLM2's


@pytest.mark.model
def test_medusa_speed_compares_base_and_medusa_with_and_without_a_draft_vocabulary(
        tmp_path, smollm2_dir, medusa_heads_dir, medusa_tree):
    heads = tmp_path / "heads"
    shutil.copytree(medusa_heads_dir, heads, ignore=shutil.ignore_patterns(TOKEN_COUNTS_FILE))
    out = tmp_path / "speed.json"

    def speed(*drafts: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(BENCHMARKS / "medusa_speed.py"), "--base", str(smollm2_dir), "--heads", str(heads),
             "--tree", json.dumps(medusa_tree), *drafts, "--num-prompts", "2", "--max-new-tokens", "12",
             "--threads", "2", "--json-out", str(out)],
            capture_output=True, text=True, timeout=600,
        )

    refused = speed("--draft-vocab", "2000")  # no counts yet: refused before anything is timed
    assert refused.returncode != 0 and "only heads trained by train-heads record token counts" in refused.stderr
    assert not out.exists()
    counts = torch.arange(VOCAB_SIZE).flip(0)  # lower ids counted more: a draft of N is ids 0..N-1
    save_token_counts(heads, counts)
    proc = speed("--draft-vocab", "0", "--draft-vocab", "2000")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tritonKernels"] is False and result["numHeads"] == 3
    runs = result["runs"]
    assert [run["draftVocabulary"] for run in runs] == [VOCAB_SIZE, 2000]
    assert runs[0]["draftTrainingCoverage"] == 1.0
    assert runs[1]["draftTrainingCoverage"] == pytest.approx(float(counts[:2000].sum() / counts.sum()), abs=1e-4)
    for run in runs:
        assert run["tree"] == normalise_tree(medusa_tree, 3)
        assert run["identical"] == run["prompts"] == 2
        assert run["speedup"] == pytest.approx(run["medusaTokensPerSecond"] / run["baseTokensPerSecond"])
        assert 1.0 <= run["meanAcceptedTokens"] <= 1 + run["treeDepth"]
    assert "tree | draft vocab | base tok/s" in proc.stdout


def test_step_cost_times_plain_and_tree_steps_with_and_without_a_draft_vocabulary(tmp_path):
    """The step-cost script on the CPU (torch operations only; its GPU kernels are checked under
    the interpreter in interpreted_kernels.py), on random weights in the tiny model's shape."""
    base = write_tiny_model(tmp_path / "tiny")
    out = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "step_cost.py"), "--base", str(base), "--device", "cpu",
         "--dtype", "float32", "--nodes", "0", "7", "--heads", "2", "--output-layer", "--draft-vocab", "0", "20",
         "--prompt-tokens", "6", "--new-tokens", "5", "--repeats", "1", "--end-at", "3", "--json-out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "requests end at an end token after about 3 tokens" in proc.stdout
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["endAt"] == 3
    assert [(r["implementation"], r["nodes"], r["draftVocabulary"]) for r in rows] == [
        ("torch", 0, VOCAB), ("torch", 7, VOCAB), ("torch", 7, 20)]
    assert all(r["msPerStep"] > 0 and 1 <= r["tokensPerRequest"] <= 5 for r in rows)
    assert all(isinstance(r["rowsIdentical"], bool) for r in rows[1:])
    refused = subprocess.run([sys.executable, str(BENCHMARKS / "step_cost.py"), "--device", "cpu", "--profile"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--profile times GPU kernels" in refused.stderr
    refused = subprocess.run([sys.executable, str(BENCHMARKS / "step_cost.py"), "--device", "cpu", "--end-at", "-1"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "cannot be negative, got -1" in refused.stderr


def test_step_cost_takes_a_model_shape_by_name(tmp_path):
    """Issue 26: --shape reproduces a published model's step without a config file (on the CPU
    only the bookkeeping is checked; the GPU adds the weight-read floor and proposal costs)."""
    out = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "step_cost.py"), "--shape", "smollm2-135m", "--device", "cpu", "--dtype",
         "float32", "--nodes", "0", "--prompt-tokens", "4", "--new-tokens", "2", "--repeats", "1",
         "--json-out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["shape"] == "smollm2-135m" and [r["nodes"] for r in result["rows"]] == [0]
    assert "floorMs" not in result  # no bandwidth is measured on the CPU
    for argv, message in [(["--shape", "llama3-8b", "--base", str(tmp_path)], "not allowed with argument"),
                          (["--shape", "llama-9"], "invalid choice: 'llama-9'"),
                          (["--linear-tiles", str(tmp_path / "none.json")], "is none")]:
        refused = subprocess.run([sys.executable, str(BENCHMARKS / "step_cost.py"), "--device", "cpu", *argv],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and message in refused.stderr, (argv, refused.stderr[-500:])


@pytest.mark.parametrize("flags, message", [
    (["--rows", "1", "65"], "row counts must be 1 to 64 (a 63-node tree)"),
    (["--prompt-rows", "-1"], "--prompt-rows counts a prompt's tokens (0: leave the row tiles); got -1"),
])
def test_the_tile_sweep_refuses_bad_row_counts_before_looking_for_a_gpu(flags, message):
    """Without a GPU the sweep cannot run at all, so a bad flag must be named first, not hidden
    behind the missing device."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "linear_tiles.py"), *flags],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-1000:]
