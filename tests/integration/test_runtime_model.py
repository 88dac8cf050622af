"""The reference runtime on the real SmolLM2-135M-Instruct model (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from medusa_builder import cli
from medusa_runtime.engine.decoding import MedusaDecoder
from medusa_runtime.engine.heads import TOKEN_COUNTS_FILE, load_heads
from medusa_runtime.engine.model import LlamaModel
from medusa_runtime.tuning.prompts import calibration_prompts, evaluation_prompts, packaged_prompts, training_prompts
from medusa_runtime.engine.text import TextCodec

pytestmark = pytest.mark.model

VOCAB_SIZE = 49152  # SmolLM2's


@pytest.fixture(scope="module")
def runtime(smollm2_dir):
    return LlamaModel.load(smollm2_dir), TextCodec(smollm2_dir)


def test_packaged_prompts_are_varied_and_split():
    prompts = packaged_prompts()
    assert len(prompts) >= 250 and len(set(prompts)) == len(prompts)
    training, calibration, evaluation = set(training_prompts()), set(calibration_prompts()), set(evaluation_prompts())
    assert not training & calibration and not training & evaluation and not calibration & evaluation
    assert len(training) + len(calibration) + len(evaluation) == len(prompts) and len(evaluation) >= 25


def test_runtime_matches_transformers_greedy(smollm2_dir, runtime):
    from transformers import AutoModelForCausalLM

    model, codec = runtime
    reference = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    decoder = MedusaDecoder(model)
    for text in ("Write a haiku about programming.",):
        ids = codec.encode_chat(text)
        ours = decoder.generate(ids, 12, sorted(codec.eos_ids)).tokens
        theirs = reference.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
        assert ours == [t for t in theirs if t not in codec.eos_ids][: len(ours)]
        assert len(ours) > 3


def test_base_model_writes_new_prompts_from_given_openings(smollm2_dir, runtime):
    from medusa_runtime.tuning.train import SEED_WORDS, model_written_prompts

    model, codec = runtime
    seeds = ["Explain how a rainbow forms.", "What is the capital of France?"]
    assert codec.decode(codec.encode_user_turn_start("Explain how")).endswith("Explain how")
    written = model_written_prompts(model, codec, smollm2_dir, seeds, 4, max_new_tokens=40)
    assert written, "the model finished none of its prompts"
    openings = {" ".join(s.split()[:SEED_WORDS]) for s in seeds}
    for prompt in written:
        assert " ".join(prompt.split()[:SEED_WORDS]) in openings and prompt not in seeds
    assert len(set(written)) == len(written)


def test_teacher_rows_are_where_the_base_model_predicts_each_target(smollm2_dir, runtime):
    from medusa_runtime.tuning.train import IGNORE, greedy_sequences, hidden_and_targets, teacher_rows

    model, codec = runtime
    seqs = greedy_sequences(model, codec, smollm2_dir, training_prompts()[:2], 10)
    hidden, targets = hidden_and_targets(model, seqs, 3)
    rows = teacher_rows(targets)
    predicted = (hidden @ model.lm_head.float().T).argmax(dim=-1)
    has_target = targets != IGNORE
    assert has_target.sum() >= 20
    assert torch.equal(predicted[rows[has_target]], targets[has_target])


def test_medusa_greedy_is_identical_to_base_greedy(runtime, medusa_heads_dir, medusa_tree):
    model, codec = runtime
    heads = load_heads(medusa_heads_dir, model.cfg.vocab_size)
    base, medusa = MedusaDecoder(model), MedusaDecoder(model, heads, medusa_tree)
    eos = sorted(codec.eos_ids)
    accepted, steps = 0, 0
    prompts = calibration_prompts()[:2] + training_prompts()[100:102]
    for text in prompts:
        ids = codec.encode_chat(text)
        expected, got = base.generate(ids, 12, eos), medusa.generate(ids, 12, eos)
        assert got.tokens == expected.tokens, text
        accepted += got.accepted_draft_tokens
        steps += got.steps
    assert accepted > 0  # the trained heads do get tokens accepted
    assert steps < len(prompts) * 12


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr()


def test_train_heads_and_calibrate_commands(tmp_path, smollm2_dir, capsys):
    heads = tmp_path / "heads"
    code, _ = run_cli(["train-heads", "--base-dir", str(smollm2_dir), "--output", str(heads), "--num-heads", "2",
                       "--max-prompts", "2", "--model-written-prompts", "3", "--max-new-tokens", "8",
                       "--epochs", "1", "--batch-size", "8", "--distillation", "0.5", "--device", "cpu",
                       "--result", str(tmp_path / "train.json")], capsys)
    assert code == 0
    result = json.loads((tmp_path / "train.json").read_text())["result"]
    assert result["numHeads"] == 2 and result["trainingPositions"] > 0 and result["distillation"] == 0.5
    assert 1 <= result["modelWrittenPrompts"] <= 3 and result["prompts"] == 2 + result["modelWrittenPrompts"]
    config = json.loads((heads / "config.json").read_text())
    assert config["medusa_num_heads"] == 2 and (heads / "medusa_lm_head.safetensors").is_file()
    counts = load_file(str(heads / TOKEN_COUNTS_FILE))["counts"]
    assert counts.shape == (VOCAB_SIZE,) and 0 < int(counts.sum()) <= result["trainingPositions"]
    code, _ = run_cli(["calibrate", "--base-dir", str(smollm2_dir), "--heads-dir", str(heads), "--num-nodes", "5",
                       "--max-prompts", "2", "--max-new-tokens", "8", "--device", "cpu", "--draft-vocab", "3",
                       "--output", str(tmp_path / "draft-tree.json")], capsys)
    assert code == 0
    draft = json.loads((tmp_path / "draft-tree.json").read_text())
    assert all(rank < 3 for path in draft["tree"] for rank in path)  # the draft holds 3 tokens
    assert len(draft["topkAccuracy"][0]) == 3 and draft["draftVocabulary"]["size"] == 3
    assert 0 < draft["draftVocabulary"]["trainingCoverage"] < 1

    code, out = run_cli(["calibrate", "--base-dir", str(smollm2_dir), "--heads-dir", str(heads), "--num-nodes", "5",
                         "--max-prompts", "2", "--max-new-tokens", "8", "--device", "cpu",
                         "--output", str(tmp_path / "tree.json")], capsys)
    assert code == 0
    calibration = json.loads((tmp_path / "tree.json").read_text())
    assert len(calibration["tree"]) == 5 and max(len(p) for p in calibration["tree"]) <= 2
    assert calibration["expectedAcceptedTokens"] >= 1.0
    assert len(calibration["topkAccuracy"]) == 2 and len(calibration["topkAccuracy"][0]) == 10
    assert "expected accepted tokens per step" in out.out


def error_of(result_file) -> str:
    doc = json.loads(result_file.read_text())
    assert doc["ok"] is False and doc["error"]["kind"] == "user"
    return doc["error"]["message"]


def test_commands_reject_bad_input(tmp_path, smollm2_dir, capsys):
    result = tmp_path / "result.json"
    code, _ = run_cli(["calibrate", "--base-dir", str(smollm2_dir), "--heads-dir", str(tmp_path / "none"),
                       "--device", "cpu", "--result", str(result)], capsys)
    assert code == 2 and "does not exist" in error_of(result)
    code, _ = run_cli(["train-heads", "--base-dir", str(tmp_path), "--output", str(tmp_path / "h"),
                       "--device", "cpu", "--result", str(result)], capsys)
    assert code == 2 and "config.json" in error_of(result)
    code, _ = run_cli(["train-heads", "--base-dir", str(smollm2_dir), "--output", str(tmp_path / "h"),
                       "--distillation", "1.5", "--device", "cpu", "--result", str(result)], capsys)
    assert code == 2 and "distillation is a weight from 0 to 1, got 1.5" in error_of(result)
    assert not (tmp_path / "h").exists()
    code, _ = run_cli(["convert-gguf", "--gguf", str(tmp_path / "missing.gguf"), "--output", str(tmp_path / "m"),
                       "--result", str(result)], capsys)
    assert code == 2 and "does not exist" in error_of(result)


def test_convert_gguf_reuses_the_cached_folder(smollm2_dir, capsys):
    code, out = run_cli(["convert-gguf"], capsys)
    assert code == 0 and out.out.strip() == str(smollm2_dir)
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
