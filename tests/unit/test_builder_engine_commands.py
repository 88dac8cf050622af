"""The TensorRT-LLM commands `build-engine --dry-run` prints, for every dtype, quantisation and TP size.

TensorRT-LLM itself cannot run on this project's hardware (no NVIDIA GPU), so these tests check
the exact commands, not an engine. `run_command` is exercised with ordinary processes.
"""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from builder_checkpoints import write_base, write_sparse_heads

from medusa_builder import cli
from medusa_builder.build import trtllm
from medusa_builder.build.spec import EngineSpec
from medusa_common.contract import InfraError, UserError
from medusa_common.tree import PRESETS


@pytest.fixture
def sources(tmp_path):
    base = write_base(tmp_path / "base")
    heads = write_sparse_heads(tmp_path / "heads", num_heads=4, vocab=None, layout="shared-lm-head")
    return base, heads


def dry_run(tmp_path, capsys, base, heads, *extra):
    result_file = tmp_path / "result.json"
    argv = ["build-engine", "--base-dir", str(base), "--heads-dir", str(heads), "--dry-run",
            "--work-dir", str(tmp_path / "work"), "--examples-dir", "/opt/trtllm/examples",
            "--result", str(result_file), *extra]
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    doc = json.loads(result_file.read_text())
    return stop.value.code, doc, capsys.readouterr().out


def expected_commands(tmp_path, base, heads, *, dtype, tp, tree_size, quantization="none"):
    work = tmp_path / "work"
    engine_dir = f"{work}/entry/engine"
    if quantization == "fp8":
        convert = (f"python3 /opt/trtllm/examples/quantization/quantize.py --model_dir {base} --dtype {dtype} "
                   f"--qformat fp8 --kv_cache_dtype fp8 --output_dir {work}/trtllm-checkpoint --calib_size 512 "
                   f"--tp_size {tp} --medusa_model_dir {work}/heads-converter --num_medusa_heads 4 "
                   f"--num_medusa_layers 1 --max_draft_len {tree_size}")
        gemm = "auto"
    else:
        convert = (f"python3 /opt/trtllm/examples/medusa/convert_checkpoint.py --model_dir {base} "
                   f"--medusa_model_dir {work}/heads-converter --output_dir {work}/trtllm-checkpoint "
                   f"--dtype {dtype} --model_type llama --tp_size {tp} --workers {tp} --num_medusa_heads 4 "
                   f"--num_medusa_layers 1 --max_medusa_token_len {tree_size}")
        gemm = dtype
    build = (f"trtllm-build --checkpoint_dir {work}/trtllm-checkpoint --output_dir {engine_dir} "
             f"--gemm_plugin {gemm} --speculative_decoding_mode medusa --max_draft_len {tree_size} "
             f"--max_batch_size 8 --max_input_len 4096 --max_seq_len 5120 --use_paged_context_fmha enable "
             f"--workers {tp}")
    return [convert, build]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_dry_run_prints_documented_commands(tmp_path, capsys, sources, dtype, tp):
    base, heads = sources
    code, doc, out = dry_run(tmp_path, capsys, base, heads, "--dtype", dtype, "--tp-size", str(tp),
                             "--tree-preset", "mc_sim_7b_63")
    assert code == 0
    expected = expected_commands(tmp_path, base, heads, dtype=dtype, tp=tp, tree_size=63)
    assert out.strip().splitlines() == expected
    assert doc["result"]["commands"] == expected
    assert doc["result"]["dryRun"] is True and doc["result"]["cacheHit"] is False
    assert not (tmp_path / "work").exists(), "a dry run writes nothing"


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_dry_run_fp8_quantises_the_base_and_keeps_heads(tmp_path, capsys, sources, tp):
    base, heads = sources
    code, doc, out = dry_run(tmp_path, capsys, base, heads, "--quantization", "fp8", "--tp-size", str(tp),
                             "--tree-choices", "[[0], [0, 0], [1], [0, 1], [2]]")
    assert code == 0
    assert out.strip().splitlines() == expected_commands(tmp_path, base, heads, dtype="float16", tp=tp,
                                                         tree_size=5, quantization="fp8")
    assert "--quant_medusa_head" not in out


def test_max_draft_len_is_the_tree_size(tmp_path, capsys, sources):
    base, heads = sources
    _, doc, _ = dry_run(tmp_path, capsys, base, heads, "--tree-preset", "medusa3_32", "--json")
    build = shlex.split(doc["result"]["commands"][1])
    assert build[build.index("--max_draft_len") + 1] == "32"
    assert doc["result"]["tree"] == PRESETS["medusa3_32"]


def test_default_tree_follows_the_head_count(tmp_path, capsys, sources):
    base, heads = sources
    _, doc, _ = dry_run(tmp_path, capsys, base, heads)
    assert doc["result"]["tree"] == PRESETS["mc_sim_7b_63"]


@pytest.mark.parametrize("extra, message", [
    (["--tree-preset", "medusa5_64"], "5 levels deep but the model has 4 head(s)"),
    (["--num-heads", "3"], "declares 3 heads but the checkpoint holds 4 heads"),
    # Issue 21, bullet: medusa.numLayers is checked like numHeads.
    (["--num-layers", "2"], "declares 2 residual layers per head but the checkpoint's heads have 1"),
    (["--cache-key", "bad/key"], "cache key 'bad/key'"),
])
def test_bad_inputs_exit_2(tmp_path, capsys, sources, extra, message):
    base, heads = sources
    code, doc, _ = dry_run(tmp_path, capsys, base, heads, *extra)
    assert code == 2
    assert message in doc["error"]["message"]


@pytest.mark.parametrize("flag, value", [("--tp-size", "3"), ("--dtype", "float32"), ("--quantization", "int4")])
def test_unsupported_engine_options_exit_2(tmp_path, sources, flag, value):
    base, heads = sources
    with pytest.raises(SystemExit) as stop:
        cli.main(["build-engine", "--base-dir", str(base), "--heads-dir", str(heads), "--dry-run", flag, value])
    assert stop.value.code == 2


def test_build_without_artifact_store_is_refused(tmp_path, sources):
    base, heads = sources
    result_file = tmp_path / "r.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["build-engine", "--base-dir", str(base), "--heads-dir", str(heads), "--result", str(result_file)])
    assert stop.value.code == 2
    assert "--artifacts-uri is required" in json.loads(result_file.read_text())["error"]["message"]


def test_mistral_and_qwen2_map_to_converter_model_types():
    paths = trtllm.BuildPaths(base_dir="/b", heads_dir="/h", checkpoint_dir="/c", engine_dir="/e", examples_dir="/x")
    for model_type in ("llama", "qwen2", "mixtral"):
        commands = trtllm.plan_commands(EngineSpec(), paths, num_heads=3, num_layers=1, tree_size=10,
                                        model_type=model_type)
        assert commands[0].argv[commands[0].argv.index("--model_type") + 1] == model_type


def test_run_command_streams_and_succeeds(capfd):
    seconds = trtllm.run_command(trtllm.Command("echo", (sys.executable, "-c", "print('building rank 0')")))
    assert seconds >= 0
    assert "building rank 0" in capfd.readouterr().err


def test_run_command_failures_are_classified():
    oom = trtllm.Command("build", (sys.executable, "-c",
                                   "print('[TRT] CUDA error: out of memory'); raise SystemExit(1)"))
    with pytest.raises(InfraError, match="build failed with exit code 1"):
        trtllm.run_command(oom)
    bad_input = trtllm.Command("convert", (sys.executable, "-c",
                                           "print('AssertionError: Invalid model type'); raise SystemExit(2)"))
    with pytest.raises(UserError, match="Invalid model type"):
        trtllm.run_command(bad_input)
    with pytest.raises(InfraError, match="not installed in this image"):
        trtllm.run_command(trtllm.Command("build", ("trtllm-build-that-does-not-exist",)))


def test_default_key_of_local_folders_follows_their_content(tmp_path, capsys, sources):
    base, heads = sources
    _, first, _ = dry_run(tmp_path, capsys, base, heads, "--json")
    _, same, _ = dry_run(tmp_path, capsys, base, heads, "--json")
    (base / "generation_config.json").write_text("{}")
    _, changed, _ = dry_run(tmp_path, capsys, base, heads, "--json")
    assert first["result"]["cacheKey"] == same["result"]["cacheKey"] != changed["result"]["cacheKey"]


@pytest.mark.parametrize("model_type, script", [("llama", "models/core/llama/convert_checkpoint.py"),
                                                ("mixtral", "models/core/llama/convert_checkpoint.py"),
                                                ("qwen2", "models/core/qwen/convert_checkpoint.py")])
def test_base_only_engine_has_no_medusa_flags(model_type, script):
    paths = trtllm.BuildPaths(base_dir="/b", heads_dir="/h", checkpoint_dir="/c", engine_dir="/e", examples_dir="/x")
    convert, build = trtllm.plan_commands(EngineSpec(dtype="bfloat16", tp_size=2), paths, num_heads=0,
                                          num_layers=0, tree_size=0, model_type=model_type)
    assert convert.shell() == (f"python3 /x/{script} --model_dir /b --output_dir /c --dtype bfloat16 "
                               "--tp_size 2 --workers 2")
    assert "medusa" not in build.shell() and "--max_draft_len" not in build.shell()
    fp8, _ = trtllm.plan_commands(EngineSpec(quantization="fp8"), paths, num_heads=0, num_layers=0,
                                  tree_size=0, model_type=model_type)
    assert "quantize.py" in fp8.shell() and "medusa" not in fp8.shell()


def test_build_base_only_dry_run(tmp_path, capsys):
    base = write_base(tmp_path / "base")
    result_file = tmp_path / "r.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["build", "--base-only", "--base-uri", str(base), "--dry-run", "--json", "--work-dir",
                  str(tmp_path / "work"), "--examples-dir", "/x", "--result", str(result_file)])
    result = json.loads(result_file.read_text())["result"]
    assert stop.value.code == 0, result
    assert result["baseOnly"] is True and result["numHeads"] == 0 and result["tree"] == []
    assert result["commands"][0].startswith("python3 /x/models/core/llama/convert_checkpoint.py")


@pytest.mark.parametrize("extra, message", [
    (["--base-only", "--heads-uri", "/h"], "drop --heads-uri"),
    (["--base-only", "--tree-preset", "auto"], "drop --tree-preset"),
    ([], "--heads-uri is required"),
])
def test_build_source_flags_are_checked(tmp_path, extra, message):
    result_file = tmp_path / "r.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["build", "--base-uri", str(tmp_path), "--dry-run", "--result", str(result_file), *extra])
    assert stop.value.code == 2
    assert message in json.loads(result_file.read_text())["error"]["message"]
