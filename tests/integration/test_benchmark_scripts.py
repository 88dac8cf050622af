"""benchmarks/medusa_speed.py end to end on the CPU with the SmolLM2 test model and heads, so a
broken benchmark shows up here rather than in a GPU session (its figures here say nothing about
speed; only the comparison's bookkeeping is checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medusa_builder.runtime.heads import save_token_counts
from medusa_builder.tree import normalise_tree

pytestmark = pytest.mark.model

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "medusa_speed.py"
VOCAB_SIZE = 49152  # SmolLM2's


def test_medusa_speed_compares_base_and_medusa_with_and_without_a_draft_vocabulary(
        tmp_path, smollm2_dir, medusa_heads_dir, medusa_tree):
    heads = tmp_path / "heads"
    shutil.copytree(medusa_heads_dir, heads)
    counts = torch.arange(VOCAB_SIZE).flip(0)  # lower ids counted more: a draft of N is ids 0..N-1
    save_token_counts(heads, counts)
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--base", str(smollm2_dir), "--heads", str(heads),
         "--tree", json.dumps(medusa_tree), "--draft-vocab", "0", "--draft-vocab", "2000", "--num-prompts", "2",
         "--max-new-tokens", "12", "--threads", "2", "--json-out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
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
