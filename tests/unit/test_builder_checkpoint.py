"""Head checkpoints in every layout against the real SmolLM2-135M configuration, through `inspect`."""

from __future__ import annotations

import json

import pytest
from builder_checkpoints import (SMOLLM2_CONFIG, TINY_CONFIG, random_heads_state, truncate, write_base,
                                 write_heads_config, write_sparse_heads, write_tiny_base_with_weights)

from medusa_builder import cli
from medusa_common import checkpoint
from medusa_runtime.engine import checkpoint as head_tensors
from medusa_common.contract import UserError


def run_cli(argv, tmp_path):
    """Run medusa-builder in-process; returns (exit code, result document)."""
    result_file = tmp_path / "result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--result", str(result_file)])
    return stop.value.code, json.loads(result_file.read_text())


@pytest.fixture
def base_dir(tmp_path):
    return write_base(tmp_path / "base")


def test_per_head_output_layer_safetensors(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", num_heads=3)
    code, doc = run_cli(["inspect", "--base-dir", str(base_dir), "--heads-dir", str(heads), "--num-heads", "3"], tmp_path)
    assert code == 0
    report = doc["result"]
    assert report["heads"]["layout"] == "per-head-output"
    assert report["heads"]["fileFormat"] == "safetensors"
    assert (report["numHeads"], report["numLayers"]) == (3, 1)
    assert (report["heads"]["hiddenSize"], report["heads"]["vocabSize"]) == (576, 49152)
    assert report["heads"]["dtype"] == "float16"
    assert report["base"]["family"] == "llama" and report["base"]["numKeyValueHeads"] == 3
    assert report["compatible"] is True


def test_heads_without_output_layer_reuse_the_base_lm_head(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", num_heads=4, num_layers=2, layout="shared-lm-head",
                               dtype="BF16")
    report = checkpoint.inspect(base_dir, heads)
    assert report["heads"]["layout"] == "shared-lm-head"
    assert report["heads"]["hasOutputLayer"] is False and report["heads"]["vocabSize"] is None
    assert (report["numHeads"], report["numLayers"]) == (4, 2)
    assert report["heads"]["dtype"] == "bfloat16"


def test_modelopt_fp8_heads_under_prefix(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", num_heads=3, layout="modelopt")
    report = checkpoint.inspect(base_dir, heads)
    assert report["heads"]["layout"] == "modelopt"
    assert report["heads"]["files"] == ["model.safetensors"]
    assert report["heads"]["quantized"] is True
    assert report["heads"]["dtype"] == "float8_e4m3fn"
    assert report["numHeads"] == 3 and report["heads"]["configClaims"]["numHeads"] == 3


def test_pt_checkpoint_without_output_layer(tmp_path, base_dir):
    import torch

    heads = tmp_path / "heads"
    heads.mkdir()
    state = {k: v.to(torch.float16) for k, v in random_heads_state(2, 1, 576, None).items()}
    torch.save(state, heads / "medusa_lm_head.pt")
    report = checkpoint.inspect(base_dir, heads)
    assert report["heads"]["fileFormat"] == "pt"
    assert report["heads"]["layout"] == "shared-lm-head"
    assert (report["numHeads"], report["heads"]["hiddenSize"]) == (2, 576)


def test_pt_checkpoint_with_output_layer_and_prefix(tmp_path):
    import torch

    base = write_base(tmp_path / "base", TINY_CONFIG)
    heads = tmp_path / "heads"
    heads.mkdir()
    state = {f"medusa_head.{k}": v for k, v in random_heads_state(5, 1, 32, 96).items()}
    torch.save(state, heads / "medusa_lm_head.pt")
    report = checkpoint.inspect(base, heads)
    assert report["heads"]["layout"] == "per-head-output"
    assert (report["numHeads"], report["heads"]["vocabSize"], report["heads"]["dtype"]) == (5, 96, "float32")


def test_counts_come_from_tensors_not_the_config(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", num_heads=4, claimed_heads=2)
    report = checkpoint.inspect(base_dir, heads)
    assert report["numHeads"] == 4
    assert report["heads"]["configClaims"]["numHeads"] == 2
    assert any("claims 2 heads but the tensors hold 4" in w for w in report["warnings"])


def test_mismatched_hidden_size_names_both_numbers(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", hidden=512, vocab=None, layout="shared-lm-head")
    code, doc = run_cli(["inspect", "--base-dir", str(base_dir), "--heads-dir", str(heads)], tmp_path)
    assert code == 2
    assert doc["error"]["kind"] == "user"
    assert "hidden size 512" in doc["error"]["message"] and "hidden size 576" in doc["error"]["message"]
    assert doc["result"]["compatible"] is False


def test_mismatched_vocabulary_names_both_numbers(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", vocab=32000)
    code, doc = run_cli(["inspect", "--base-dir", str(base_dir), "--heads-dir", str(heads)], tmp_path)
    assert code == 2
    assert "vocabulary size 32000" in doc["error"]["message"]
    assert "vocabulary size 49152" in doc["error"]["message"]


def test_mismatched_head_count_names_both_numbers(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", num_heads=3, vocab=None, layout="shared-lm-head")
    code, doc = run_cli(["inspect", "--base-dir", str(base_dir), "--heads-dir", str(heads), "--num-heads", "5"], tmp_path)
    assert code == 2
    assert "declares 5 heads but the checkpoint holds 3 heads" in doc["error"]["message"]


def test_several_problems_are_all_reported(tmp_path):
    base = write_base(tmp_path / "base", {**SMOLLM2_CONFIG, "model_type": "gpt2"})
    heads = write_sparse_heads(tmp_path / "heads", hidden=512, vocab=None, layout="shared-lm-head")
    with pytest.raises(UserError) as caught:
        checkpoint.inspect(base, heads, expected_heads=4)
    message = str(caught.value)
    assert "'gpt2' is not supported" in message and "hidden size 512" in message and "declares 4 heads" in message


def test_truncated_safetensors_is_a_user_error(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", num_heads=2, vocab=None, layout="shared-lm-head")
    truncate(heads / "medusa_lm_head.safetensors", 0.6)
    code, doc = run_cli(["inspect", "--base-dir", str(base_dir), "--heads-dir", str(heads)], tmp_path)
    assert code == 2
    assert "truncated" in doc["error"]["message"] and "download it again" in doc["error"]["message"]


def test_truncated_header_is_a_user_error(tmp_path, base_dir):
    heads = write_sparse_heads(tmp_path / "heads", num_heads=2)
    truncate(heads / "medusa_lm_head.safetensors", 0.0000001)
    with pytest.raises(UserError, match="truncated"):
        checkpoint.inspect(base_dir, heads)


def test_missing_head_file_is_a_user_error(tmp_path, base_dir):
    heads = tmp_path / "heads"
    heads.mkdir()
    write_heads_config(heads, 3)
    code, doc = run_cli(["inspect", "--base-dir", str(base_dir), "--heads-dir", str(heads)], tmp_path)
    assert code == 2
    assert "no Medusa head checkpoint" in doc["error"]["message"]


def test_missing_base_config_is_a_user_error(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    heads = write_sparse_heads(tmp_path / "heads")
    code, doc = run_cli(["inspect", "--base-dir", str(base), "--heads-dir", str(heads)], tmp_path)
    assert code == 2
    assert "config.json is missing" in doc["error"]["message"]


def test_gap_in_head_numbers_is_refused(tmp_path, base_dir):
    from builder_checkpoints import head_layout, write_sparse_safetensors

    tensors = {k: v for k, v in head_layout(3, 1, 576, None).items() if not k.startswith("1.")}
    heads = tmp_path / "heads"
    write_sparse_safetensors(heads / "medusa_lm_head.safetensors", tensors)
    with pytest.raises(UserError, match=r"numbered \[0, 2\]"):
        checkpoint.inspect(base_dir, heads)


def test_load_heads_dequantises_fp8_with_scales(tmp_path):
    import torch
    from safetensors.torch import save_file

    heads = tmp_path / "heads"
    heads.mkdir()
    weight = torch.full((8, 8), 2.0).to(torch.float8_e4m3fn)
    save_file({
        "medusa_heads.0.0.linear.weight": weight, "medusa_heads.0.0.linear.bias": torch.zeros(8, dtype=torch.float16),
        "medusa_heads.0.0.linear.weight_scale": torch.tensor(0.5), "medusa_heads.0.0.linear.input_scale": torch.tensor(1.0),
        "medusa_heads.0.1.weight": weight.clone(), "medusa_heads.0.1.weight_scale": torch.tensor(0.25),
    }, str(heads / "model.safetensors"))
    info, state = head_tensors.load_heads(heads)
    assert info.layout == "modelopt" and info.vocab_size == 8
    assert torch.allclose(state["0.0.linear.weight"], torch.full((8, 8), 1.0))
    assert torch.allclose(state["0.1.weight"], torch.full((8, 8), 0.5))


def test_converter_heads_get_output_layers_from_the_tied_embedding(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    base = write_tiny_base_with_weights(tmp_path / "base")
    heads = tmp_path / "heads"
    heads.mkdir()
    save_file(random_heads_state(3, 1, 32, None, bias=False), str(heads / "medusa_lm_head.safetensors"))
    write_heads_config(heads, 1)  # under-reports, like published configs
    info = head_tensors.write_converter_heads(heads, base, tmp_path / "converter", dtype="float16")
    assert (info.layout, info.num_heads, info.vocab_size) == ("per-head-output", 3, 96)
    written = load_file(str(tmp_path / "converter" / "medusa_lm_head.safetensors"))
    embed = load_file(str(base / "model.safetensors"))["model.embed_tokens.weight"].to(torch.float16)
    for h in range(3):
        assert torch.equal(written[f"{h}.1.weight"], embed)
        assert torch.count_nonzero(written[f"{h}.0.linear.bias"]) == 0
        assert written[f"{h}.0.linear.weight"].dtype == torch.float16
    config = json.loads((tmp_path / "converter" / "config.json").read_text())
    assert (config["medusa_num_heads"], config["medusa_num_layers"]) == (3, 1)


def test_base_without_lm_head_cannot_give_output_layers(tmp_path):
    from safetensors.torch import save_file

    base = write_base(tmp_path / "base", TINY_CONFIG)
    import torch

    save_file({"model.norm.weight": torch.ones(32)}, str(base / "model.safetensors"))
    heads = tmp_path / "heads"
    heads.mkdir()
    save_file(random_heads_state(2, 1, 32, None), str(heads / "medusa_lm_head.safetensors"))
    with pytest.raises(UserError, match="neither lm_head.weight nor model.embed_tokens.weight"):
        head_tensors.write_converter_heads(heads, base, tmp_path / "converter")


def test_inspect_reads_the_folders_under_their_old_spellings_too(base_dir, tmp_path, capsys):
    """Issue 24: one spelling per input (--base-dir, --heads-dir); --base and --heads still work."""
    heads = write_sparse_heads(tmp_path / "heads", num_heads=3)
    _, new = run_cli(["inspect", "--base-dir", str(base_dir), "--heads-dir", str(heads)], tmp_path)
    _, old = run_cli(["inspect", "--base", str(base_dir), "--heads", str(heads)], tmp_path)
    assert old == new and new["ok"]
    assert "--base is deprecated" in capsys.readouterr().err
