"""`build --tree-preset auto`: the tree is calibrated by the reference runtime from the heads.

The base is a 2-layer Llama with random weights and SmolLM2's tokenizer (fast on CPU); the point
is the wiring from calibration to the engine commands, not the quality of the tree.
"""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from medusa_builder import cli
from medusa_common.tree import DEFAULT_TREE_NODES, REFERENCE_DRAFT_VOCAB, REFERENCE_TREE_NODES, tree_depth

pytestmark = pytest.mark.model


@pytest.fixture
def tiny_llama(tmp_path, smollm2_dir):
    import torch
    from builder_checkpoints import random_heads_state
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    source = json.loads((smollm2_dir / "config.json").read_text())
    config = LlamaConfig(vocab_size=source["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=source.get("bos_token_id"), eos_token_id=source.get("eos_token_id"))
    torch.manual_seed(0)
    base = tmp_path / "base"
    LlamaForCausalLM(config).save_pretrained(base, safe_serialization=True)
    for path in smollm2_dir.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "generation_config")):
            shutil.copyfile(path, base / path.name)
    heads = tmp_path / "heads"
    heads.mkdir()
    save_file(random_heads_state(3, 1, 32, None), str(heads / "medusa_lm_head.safetensors"))
    return base, heads


def build_auto(tmp_path, tiny_llama, monkeypatch, backend: str) -> tuple[dict, list[dict]]:
    """Run `build --tree-preset auto --dry-run` with the real calibration on a CPU-sized budget;
    returns the step result and the options each calibration was asked for."""
    from medusa_runtime.tuning import calibrate

    base, heads = tiny_llama
    real = calibrate.calibrate_tree
    calls = []

    def small_budget(base_dir, heads_dir, **options):
        calls.append(options)
        return real(base_dir, heads_dir, num_nodes=12, prompts=["The capital of France is", "1, 2, 3, 4,"],
                    device="cpu", max_new_tokens=8, draft_vocab=options["draft_vocab"])

    monkeypatch.setattr(calibrate, "calibrate_tree", small_budget)
    result_file = tmp_path / "result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["build", "--backend", backend, "--base-uri", str(base), "--heads-uri", str(heads),
                  "--tree-preset", "auto", "--dry-run", "--json", "--work-dir", str(tmp_path / "work"),
                  "--result", str(result_file)])
    doc = json.loads(result_file.read_text())
    assert stop.value.code == 0, doc
    return doc["result"], calls


def test_auto_tree_feeds_the_engine_commands(tmp_path, tiny_llama, monkeypatch):
    result, calls = build_auto(tmp_path, tiny_llama, monkeypatch, "tensorrt-llm")
    assert len(result["tree"]) == 12 and tree_depth(result["tree"]) <= 3
    assert result["expectedAcceptedTokens"] >= 1.0
    build = shlex.split(result["commands"][1])
    assert build[build.index("--max_draft_len") + 1] == "12"
    # In the engine's dtype, at the published 63-node size.
    assert calls == [{"num_nodes": DEFAULT_TREE_NODES, "dtype": "float16", "draft_vocab": None}]
    assert "draftVocabulary" not in result


def test_auto_tree_for_the_reference_backend_is_its_fastest_size(tmp_path, tiny_llama, monkeypatch):
    result, calls = build_auto(tmp_path, tiny_llama, monkeypatch, "reference")
    # Heads without training token counts (not from train-heads): the whole vocabulary.
    assert calls == [{"num_nodes": REFERENCE_TREE_NODES, "dtype": "float16", "draft_vocab": None}]
    assert len(result["tree"]) == 12 and "draftVocabulary" not in result


def test_auto_tree_for_the_reference_backend_uses_a_draft_vocabulary_when_heads_count_tokens(
        tmp_path, tiny_llama, monkeypatch):
    import torch
    from medusa_runtime.engine.heads import save_token_counts

    base, heads = tiny_llama
    vocab_size = json.loads((base / "config.json").read_text())["vocab_size"]
    save_token_counts(heads, torch.arange(vocab_size).flip(0))  # lower ids counted more
    result, calls = build_auto(tmp_path, tiny_llama, monkeypatch, "reference")
    assert calls == [{"num_nodes": REFERENCE_TREE_NODES, "dtype": "float16", "draft_vocab": REFERENCE_DRAFT_VOCAB}]
    assert result["draftVocabulary"]["size"] == REFERENCE_DRAFT_VOCAB
    assert 0 < result["draftVocabulary"]["trainingCoverage"] < 1
    # The TensorRT-LLM engine ranks the whole vocabulary whatever the heads recorded.
    _, calls = build_auto(tmp_path, tiny_llama, monkeypatch, "tensorrt-llm")
    assert calls[0]["draft_vocab"] is None
