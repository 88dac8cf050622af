"""`build` then `package` with the reference backend, served by the real tritonserver.

The base model is the real SmolLM2-135M-Instruct; the heads are random (built here, in the
shared-lm-head layout) because this test checks that the packaged repository loads and answers,
not what the heads accept. Greedy verification keeps the output equal to the base model's.
"""

from __future__ import annotations

import json

import pytest

from medusa_builder import cli, storage

pytestmark = [pytest.mark.triton, pytest.mark.model, pytest.mark.slow]

TREE = [[0], [1], [0, 0]]


def run_step(tmp_path, name, *argv):
    result_file = tmp_path / f"{name}.json"
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--result", str(result_file), *argv])
    doc = json.loads(result_file.read_text())
    assert stop.value.code == 0, doc
    return doc["result"]


def test_packaged_reference_repository_serves_in_tritonserver(tmp_path, smollm2_dir):
    from builder_checkpoints import random_heads_state
    from fixtures.triton import start_tritonserver
    from safetensors.torch import save_file

    config = json.loads((smollm2_dir / "config.json").read_text())
    heads = tmp_path / "heads"
    heads.mkdir()
    state = {k: v * 0.01 for k, v in random_heads_state(2, 1, config["hidden_size"], None).items()}
    save_file(state, str(heads / "medusa_lm_head.safetensors"))

    artifacts = tmp_path / "artifacts"
    built = run_step(tmp_path, "build", "--backend", "reference", "--base-uri", str(smollm2_dir),
                     "--heads-uri", str(heads), "--tree-choices", json.dumps(TREE), "--num-heads", "2",
                     "--artifacts-uri", str(artifacts), "--work-dir", str(tmp_path / "build"),
                     "--max-batch-size", "2")
    assert built["cacheHit"] is False and built["numHeads"] == 2
    output = storage.join_uri(str(artifacts), "repositories", built["cacheKey"])
    packaged = run_step(tmp_path, "package", "--engine-uri", built["engineUri"], "--backend", "reference",
                        "--output-uri", output, "--device", "cpu", "--work-dir", str(tmp_path / "package"))
    assert packaged["repositoryUri"] == output

    with start_tritonserver(output) as server:
        reply = server.generate("What is the capital of France?", max_tokens=8, return_perf_metrics=True)
    assert isinstance(reply["text_output"], str) and reply["text_output"].strip()
    assert "acceptance_rate" in reply
