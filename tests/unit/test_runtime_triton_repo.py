"""The reference Triton repository: layout and a config.pbtxt that Triton's schema accepts."""

from __future__ import annotations

import json

import pytest
import torch
from google.protobuf import text_format
from safetensors.torch import save_file
from tritonclient.grpc import model_config_pb2

from medusa_common.contract import UserError
from medusa_runtime.engine.heads import TOKEN_COUNTS_FILE, MedusaHeads, save_heads, save_token_counts
from medusa_runtime.engine.service import ReferenceService
from medusa_runtime.serving.triton_repo import write_reference_repository
from medusa_common.tree import TreeError


@pytest.fixture
def base_dir(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8, "vocab_size": 11}))
    save_file({"model.embed_tokens.weight": torch.zeros(11, 8)}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture
def heads_dir(tmp_path):
    return save_heads(MedusaHeads(3, 1, 8, 11, output_layer=False), tmp_path / "heads", base_model="base")


def parse_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_medusa_repository(tmp_path, base_dir, heads_dir):
    tree = [[0], [1], [0, 0]]
    result = write_reference_repository(tmp_path / "repo", base_dir=base_dir, heads_dir=heads_dir, tree=tree,
                                        max_batch_size=4, device="cpu")
    assert result["numHeads"] == 3 and result["tree"] == tree and result["modelName"] == "ensemble"
    model = tmp_path / "repo" / "ensemble"
    assert (model / "1" / "model.py").is_file()
    assert (model / "1" / "base" / "model.safetensors").is_file()
    assert (model / "1" / "heads" / "medusa_lm_head.safetensors").is_file()
    config = parse_config(model / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 4
    assert {i.name for i in config.input} == {"text_input", "max_tokens", "end_id", "pad_id", "temperature",
                                              "stream", "return_perf_metrics"}
    assert {o.name for o in config.output} == {"text_output", "acceptance_rate", "total_accepted_draft_tokens",
                                               "total_draft_tokens"}
    assert all(i.optional for i in config.input if i.name not in ("text_input", "max_tokens"))
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert json.loads(params["tree"]) == tree
    assert params["medusa_choices"] == "{0}, {1}, {0, 0}"
    assert params["heads_dir"] == "heads" and params["base_dir"] == "base"


def test_draft_vocabulary_is_a_model_parameter_checked_when_written(tmp_path, base_dir, heads_dir):
    tree = [[0], [1]]
    with pytest.raises(UserError, match="only heads trained by train-heads record token counts"):
        write_reference_repository(tmp_path / "r", base_dir=base_dir, heads_dir=heads_dir, tree=tree, draft_vocab=4)
    save_token_counts(heads_dir, torch.arange(11))
    with pytest.raises(UserError, match="between 1 and 11 tokens"):
        write_reference_repository(tmp_path / "r", base_dir=base_dir, heads_dir=heads_dir, tree=tree, draft_vocab=12)
    with pytest.raises(UserError, match="without Medusa heads"):
        write_reference_repository(tmp_path / "r", base_dir=base_dir, draft_vocab=4)
    with pytest.raises(UserError, match="without Medusa heads"):  # refused before any model is loaded
        ReferenceService(base_dir, None, None, device="cpu", draft_vocab=4)
    result = write_reference_repository(tmp_path / "r", base_dir=base_dir, heads_dir=heads_dir, tree=tree,
                                        draft_vocab=4)
    assert result["draftVocabulary"] == 4
    params = parse_config(tmp_path / "r" / "ensemble" / "config.pbtxt").parameters
    assert params["draft_vocab"].string_value == "4"
    assert (tmp_path / "r" / "ensemble" / "1" / "heads" / TOKEN_COUNTS_FILE).is_file()
    write_reference_repository(tmp_path / "full", base_dir=base_dir, heads_dir=heads_dir, tree=tree)
    assert "draft_vocab" not in parse_config(tmp_path / "full" / "ensemble" / "config.pbtxt").parameters


def test_base_only_repository_and_default_tree(tmp_path, base_dir, heads_dir):
    write_reference_repository(tmp_path / "base-repo", base_dir=base_dir, model_name="baseline")
    config = parse_config(tmp_path / "base-repo" / "baseline" / "config.pbtxt")
    assert config.name == "baseline"
    assert "heads_dir" not in config.parameters and not config.instance_group  # auto: Triton picks
    result = write_reference_repository(tmp_path / "default", base_dir=base_dir, heads_dir=heads_dir)
    assert result["tree"] and max(len(p) for p in result["tree"]) <= 3


def test_bad_inputs_are_user_errors(tmp_path, base_dir, heads_dir):
    with pytest.raises(UserError, match="no config.json"):
        write_reference_repository(tmp_path / "r", base_dir=tmp_path)
    with pytest.raises(UserError, match="without Medusa heads"):
        write_reference_repository(tmp_path / "r", base_dir=base_dir, tree=[[0]])
    with pytest.raises(TreeError, match="4 levels deep"):
        write_reference_repository(tmp_path / "r", base_dir=base_dir, heads_dir=heads_dir,
                                   tree=[[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(UserError, match="unknown device"):
        write_reference_repository(tmp_path / "r", base_dir=base_dir, device="tpu")
