"""`package`: Triton model repositories whose every config.pbtxt parses against Triton's schema.

The TensorRT-LLM engine files here are stand-in bytes: TensorRT-LLM cannot build real engines
on this project's hardware (no NVIDIA GPU). Everything else (templates, layout, tokenizer,
schema parsing, upload) is real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builder_checkpoints import TINY_CONFIG, random_heads_state, write_base, write_tiny_base_with_weights
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from medusa_builder import cli
from medusa_builder.build.entry import MANIFEST, make_manifest, write_tree
from medusa_builder.build.reference import build_reference_entry
from medusa_builder.build.spec import EngineSpec
from medusa_builder.repository.config import TemplateError, parse_model_config
from medusa_builder.repository.trtllm import TrtllmRepositoryOptions, render_trtllm_configs
from medusa_common.toolchain import TRTLLM_VERSION
from medusa_common.tree import PRESETS, to_brace_form


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def options(tree=PRESETS["mc_sim_7b_63"], **overrides):
    return TrtllmRepositoryOptions(max_batch_size=overrides.pop("max_batch_size", 8), max_input_len=2048,
                                   tree=tuple(tuple(p) for p in tree), **overrides)


@pytest.mark.parametrize("tree_name", sorted(PRESETS))
@pytest.mark.parametrize("max_batch_size, decoupled", [(1, False), (64, True)])
def test_every_config_parses_against_tritons_schema(tree_name, max_batch_size, decoupled):
    configs = render_trtllm_configs(options(PRESETS[tree_name], max_batch_size=max_batch_size, decoupled=decoupled))
    assert sorted(configs) == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm"]
    for name, text in configs.items():
        config = parse(text)
        assert config.name == name
        assert config.max_batch_size == max_batch_size
    trtllm = parse(configs["tensorrt_llm"])
    assert trtllm.backend == "tensorrtllm"
    assert trtllm.model_transaction_policy.decoupled is decoupled
    params = {k: v.string_value for k, v in trtllm.parameters.items()}
    assert params["decoding_mode"] == "medusa"
    assert params["medusa_choices"] == to_brace_form(PRESETS[tree_name])
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == "/models/tensorrt_llm/1"
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.9"


def test_ensemble_wiring_is_consistent():
    """Every step's input and output names exist on the composing model, and every tensor flows."""
    configs = {name: parse(text) for name, text in render_trtllm_configs(options()).items()}
    ensemble = configs["ensemble"]
    available = {i.name for i in ensemble.input}
    produced = set()
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        model_inputs = {i.name: i for i in model.input}
        model_outputs = {o.name for o in model.output}
        for key, tensor in step.input_map.items():
            assert key in model_inputs, f"{step.model_name} has no input {key}"
            assert tensor in available, f"{tensor} is used by {step.model_name} before it is produced"
        required = {name for name, spec in model_inputs.items() if not spec.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required - set(step.input_map)}"
        for key, tensor in step.output_map.items():
            assert key in model_outputs, f"{step.model_name} has no output {key}"
            available.add(tensor)
            produced.add(tensor)
    assert {o.name for o in ensemble.output} <= produced
    assert {o.name for o in ensemble.output} == {"text_output", "acceptance_rate", "total_accepted_draft_tokens",
                                                 "total_draft_tokens"}
    assert {i.name for i in ensemble.input} >= {"text_input", "max_tokens", "end_id", "pad_id", "temperature",
                                                "stream", "return_perf_metrics"}


def test_bad_options_and_broken_configs_are_refused():
    with pytest.raises(Exception, match="memory fraction"):
        render_trtllm_configs(options(kv_cache_free_gpu_mem_fraction=1.5))
    with pytest.raises(Exception, match="must be absolute"):
        render_trtllm_configs(options(mount_path="models"))
    with pytest.raises(TemplateError, match="schema"):
        parse_model_config('name: "x"\nno_such_field: 1\n')


def make_trtllm_entry(root: Path, tree) -> Path:
    """A cache entry as build-engine leaves it, with stand-in engine bytes."""
    entry = root / "engines" / "k1"
    (entry / "engine").mkdir(parents=True)
    (entry / "engine" / "rank0.engine").write_bytes(b"stand-in engine bytes")
    (entry / "engine" / "config.json").write_text(json.dumps({"version": TRTLLM_VERSION}))
    write_base(entry / "tokenizer")
    write_tree(entry, tree)
    spec = EngineSpec(max_batch_size=16, max_input_len=1024)
    manifest = make_manifest(cache_key="k1", spec=spec, entry_dir=entry, num_heads=4, num_layers=1,
                                    tree=tree, sources={}, commands=[], build_seconds=12.5)
    (entry / MANIFEST).write_text(json.dumps(manifest))
    return entry


def package(tmp_path, *argv):
    result_file = tmp_path / "result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["package", "--work-dir", str(tmp_path / "work"), "--result", str(result_file), *argv])
    return stop.value.code, json.loads(result_file.read_text())


def test_package_tensorrt_llm_repository_layout(tmp_path):
    tree = PRESETS["medusa4_48"]
    entry = make_trtllm_entry(tmp_path / "artifacts", tree)
    out = tmp_path / "artifacts" / "repositories" / "k1"
    code, doc = package(tmp_path, "--engine-uri", str(entry), "--backend", "tensorrt-llm", "--output-uri", str(out),
                        "--mount-path", "/srv/repo")
    assert code == 0, doc
    assert doc["result"]["repositoryUri"] == str(out)
    assert doc["result"]["models"] == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm"]
    for name in doc["result"]["models"]:
        config = parse((out / name / "config.pbtxt").read_text())
        assert config.max_batch_size == 16, "defaults to the engine's batch size"
        assert (out / name / "1").is_dir()
    assert (out / "tensorrt_llm" / "1" / "rank0.engine").read_bytes() == b"stand-in engine bytes"
    assert (out / "preprocessing" / "1" / "model.py").is_file() and (out / "postprocessing" / "1" / "model.py").is_file()
    assert (out / "preprocessing" / "1" / "tokenizer" / "tokenizer_config.json").is_file()
    trtllm = parse((out / "tensorrt_llm" / "config.pbtxt").read_text())
    assert trtllm.parameters["gpt_model_path"].string_value == "/srv/repo/tensorrt_llm/1"
    assert trtllm.parameters["medusa_choices"].string_value == to_brace_form(tree)
    description = json.loads((out / "repository.json").read_text())
    assert description["cacheKey"] == "k1" and description["tree"] == tree


def test_python_models_compile():
    from medusa_builder.repository.trtllm import TEMPLATES

    for name in ("preprocessing_model.py.tmpl", "postprocessing_model.py.tmpl"):
        compile((TEMPLATES / name).read_text(), name, "exec")


def test_package_refuses_wrong_backend_and_missing_engine(tmp_path):
    entry = make_trtllm_entry(tmp_path / "artifacts", PRESETS["medusa2_16"])
    code, doc = package(tmp_path, "--engine-uri", str(entry), "--backend", "reference", "--output-uri",
                        str(tmp_path / "out"))
    assert code == 2
    assert "built for the tensorrt-llm backend" in doc["error"]["message"]
    code, doc = package(tmp_path, "--engine-uri", str(tmp_path / "nothing"), "--backend", "tensorrt-llm",
                        "--output-uri", str(tmp_path / "out"))
    assert code == 2
    assert "manifest.json is missing" in doc["error"]["message"]


def test_package_reference_repository(tmp_path):
    import torch
    from safetensors.torch import save_file

    from medusa_runtime.engine.heads import save_token_counts

    base = write_tiny_base_with_weights(tmp_path / "base")
    heads = tmp_path / "heads"
    heads.mkdir()
    save_file(random_heads_state(2, 1, TINY_CONFIG["hidden_size"], TINY_CONFIG["vocab_size"]),
              str(heads / "medusa_lm_head.safetensors"))
    save_token_counts(heads, torch.arange(TINY_CONFIG["vocab_size"]))
    tree = [[0], [1], [0, 0]]
    entry, _ = build_reference_entry(base_dir=base, heads_dir=heads, work_dir=tmp_path / "build", tree=tree)
    spec = EngineSpec(backend="reference", max_batch_size=4)
    manifest = make_manifest(cache_key="r1", spec=spec, entry_dir=entry, num_heads=2, num_layers=1,
                                    tree=tree, sources={}, commands=[], build_seconds=0.1,
                                    extra={"draftVocabulary": {"size": 5, "trainingCoverage": 0.9}})
    (entry / MANIFEST).write_text(json.dumps(manifest))
    out = tmp_path / "repo"
    code, doc = package(tmp_path, "--engine-uri", str(entry), "--backend", "reference", "--output-uri", str(out),
                        "--device", "cpu")
    assert code == 0, doc
    assert doc["result"]["models"] == ["ensemble"]
    config = parse((out / "ensemble" / "config.pbtxt").read_text())
    assert config.backend == "python" and config.max_batch_size == 4
    assert config.parameters["medusa_choices"].string_value == "{0}, {1}, {0, 0}"
    assert config.parameters["draft_vocab"].string_value == "5"  # the size the tree was calibrated for
    assert json.loads((out / "repository.json").read_text())["backend"] == "reference"


def test_base_only_engine_config_has_no_medusa_parameters():
    configs = render_trtllm_configs(options(tree=()))
    trtllm = parse(configs["tensorrt_llm"])
    assert "decoding_mode" not in trtllm.parameters and "medusa_choices" not in trtllm.parameters
    assert trtllm.parameters["gpt_model_path"].string_value == "/models/tensorrt_llm/1"


def test_package_reference_base_only(tmp_path):
    base = write_tiny_base_with_weights(tmp_path / "base")
    entry, _ = build_reference_entry(base_dir=base, heads_dir=None, work_dir=tmp_path / "build", tree=[])
    assert not (entry / "heads").exists()
    manifest = make_manifest(cache_key="b1", spec=EngineSpec(backend="reference"), entry_dir=entry,
                                    num_heads=0, num_layers=0, tree=[], sources={}, commands=[], build_seconds=0.0)
    (entry / MANIFEST).write_text(json.dumps(manifest))
    out = tmp_path / "repo"
    code, doc = package(tmp_path, "--engine-uri", str(entry), "--backend", "reference", "--output-uri", str(out),
                        "--device", "cpu")
    assert code == 0, doc
    config = parse((out / "ensemble" / "config.pbtxt").read_text())
    assert "medusa_choices" not in config.parameters
    assert json.loads((out / "repository.json").read_text())["medusa"] is False
