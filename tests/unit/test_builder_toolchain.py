"""Where Medusa ends upstream: the build step refuses a TensorRT-LLM that cannot build Medusa
engines, and records the version it built with.

TensorRT-LLM cannot run here, so a stand-in install (tests/trtllm_standin.py) plays the builder
image's TensorRT-LLM: distribution metadata of a chosen version, `trtllm-build` and the converter.
Issue 23: a builderImage with a newer TensorRT-LLM (no Medusa) or without trtllm-build fails the
build step with a clear message; the builder Dockerfile uses the examples the image ships.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from builder_checkpoints import TINY_CONFIG, random_heads_state, write_tiny_base_with_weights
from trtllm_standin import activate, install_trtllm_standin

from medusa_builder import cli
from medusa_builder.build.entry import MANIFEST
from medusa_builder.build.spec import EngineSpec
from medusa_builder.build.trtllm import BASE_CONVERTERS, DEFAULT_EXAMPLES_DIR, EXAMPLES_DIR_ENV, BuildPaths, plan_commands
from medusa_common import toolchain

REPO = Path(__file__).resolve().parents[2]
TREE = "[[0], [1], [0, 0]]"


@pytest.fixture
def sources(tmp_path):
    from safetensors.torch import save_file

    base = write_tiny_base_with_weights(tmp_path / "src" / "base")
    heads = tmp_path / "src" / "heads"
    heads.mkdir()
    save_file(random_heads_state(2, 1, TINY_CONFIG["hidden_size"], None), str(heads / "medusa_lm_head.safetensors"))
    (heads / "config.json").write_text(json.dumps({"medusa_num_heads": 2, "medusa_num_layers": 1}))
    return base, heads


def standin(tmp_path, monkeypatch, **kwargs) -> Path:
    root = install_trtllm_standin(tmp_path / "trtllm", **kwargs)
    return activate(monkeypatch, root, tmp_path / "calls.jsonl", EXAMPLES_DIR_ENV)


def run(tmp_path, *argv) -> tuple[int, dict]:
    result = tmp_path / "result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--work-dir", str(tmp_path / "work"), "--result", str(result)])
    return stop.value.code, json.loads(result.read_text())


def build_engine(tmp_path, sources, *extra) -> tuple[int, dict]:
    base, heads = sources
    return run(tmp_path, "build-engine", "--base-dir", str(base), "--heads-dir", str(heads), "--tree-choices", TREE,
               "--artifacts-uri", str(tmp_path / "store"), "--cache-key", "k1", *extra)


def test_a_tensorrt_llm_without_medusa_is_refused_before_anything_runs(tmp_path, monkeypatch, sources) -> None:
    calls = standin(tmp_path, monkeypatch, version="1.2.0rc8")
    code, doc = build_engine(tmp_path, sources)
    assert code == 2, doc
    message = doc["error"]["message"]
    assert "TensorRT-LLM 1.2.0rc8 cannot build Medusa engines" in message
    assert "removed the TensorRT engine path" in message and "engine.backend: reference" in message
    assert "Triton 25.12, 26.01, 26.02" in message
    assert not calls.exists(), "no converter or trtllm-build may run"
    assert not (tmp_path / "store" / "engines" / "k1").exists()


def test_an_older_tensorrt_llm_is_refused_too(tmp_path, monkeypatch, sources) -> None:
    standin(tmp_path, monkeypatch, version="0.12.0")
    code, doc = build_engine(tmp_path, sources)
    assert code == 2 and "TensorRT-LLM 0.12.0 is not the 1.1 line this builder drives" in doc["error"]["message"]


def test_an_image_without_tensorrt_llm_is_refused(tmp_path, monkeypatch, sources) -> None:
    standin(tmp_path, monkeypatch, version=None)
    code, doc = build_engine(tmp_path, sources)
    assert code == 2 and "TensorRT-LLM is not installed in this builder image" in doc["error"]["message"]


def test_an_image_without_trtllm_build_is_refused(tmp_path, monkeypatch, sources) -> None:
    if shutil.which("trtllm-build"):
        pytest.skip("a real trtllm-build is on PATH")
    calls = standin(tmp_path, monkeypatch, version="1.1.0", with_build=False)
    code, doc = build_engine(tmp_path, sources)
    assert code == 2 and "trtllm-build is not on PATH" in doc["error"]["message"]
    assert not calls.exists()


def test_the_cpu_lookup_refuses_on_a_miss_before_downloading(tmp_path, monkeypatch) -> None:
    """The operator's lookup Job runs the builder image on a CPU first: a wrong TensorRT-LLM fails
    there, before a GPU is held. The sources do not exist, so nothing can have been fetched."""
    standin(tmp_path, monkeypatch, version="1.2.1")
    args = ["build", "--base-uri", str(tmp_path / "no-base"), "--heads-uri", str(tmp_path / "no-heads"),
            "--tree-choices", TREE, "--artifacts-uri", str(tmp_path / "store"), "--cache-key", "k2"]
    code, doc = run(tmp_path, *args, "--lookup-only")
    assert code == 2 and "TensorRT-LLM 1.2.1 cannot build Medusa engines" in doc["error"]["message"]
    code, doc = run(tmp_path, *args, "--lookup-only", "--backend", "reference")
    assert code == 0 and doc["result"] == {"cacheKey": "k2", "cacheHit": False}, "reference needs no TensorRT-LLM"


def test_the_installed_version_is_what_the_engine_records(tmp_path, monkeypatch, sources) -> None:
    """An image the operator does not know is allowed; the version it built with is reported."""
    standin(tmp_path, monkeypatch, version="1.1.0rc5")
    code, doc = build_engine(tmp_path, sources)
    assert code == 0, doc
    assert doc["result"]["tensorrtLlmVersion"] == "1.1.0rc5"
    manifest = json.loads((tmp_path / "store" / "engines" / "k1" / MANIFEST).read_text())
    assert manifest["versions"]["tensorrtLlm"] == "1.1.0rc5"
    assert manifest["versions"]["image"] is None, "a version other than the pinned one is not the pinned image"


def test_dry_run_needs_no_tensorrt_llm(tmp_path, sources) -> None:
    code, doc = build_engine(tmp_path, sources, "--dry-run")
    assert code == 0 and len(doc["result"]["commands"]) == 2


@pytest.mark.parametrize("image, release, version", [
    ("nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3", "25.12", "1.1.0"),
    ("registry.example/mirror/nvidia/tritonserver:26.02-trtllm-python-py3", "26.02", "1.1.0"),
    ("nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3@sha256:" + "ab" * 32, "24.08", "0.12"),
    ("nvcr.io/nvidia/tritonserver:26.03-trtllm-python-py3", "26.03", "1.2.0rc8"),
    ("nvcr.io/nvidia/tritonserver:27.01-trtllm-python-py3", "27.01", None),
    ("nvcr.io/nvidia/tritonserver:25.12-py3", None, None),
    ("registry.example/medusa-builder:0.1.0", None, None),
])
def test_triton_image_references(image: str, release: str | None, version: str | None) -> None:
    assert toolchain.triton_release(image) == release
    assert toolchain.image_trtllm_version(image) == version


def test_the_medusa_line_is_what_the_builder_pins() -> None:
    assert toolchain.builds_medusa(toolchain.TRTLLM_VERSION)
    assert toolchain.image_trtllm_version(toolchain.TRITON_TRTLLM_IMAGE) == toolchain.TRTLLM_VERSION
    assert toolchain.medusa_line_releases() == ["25.12", "26.01", "26.02"]
    assert not toolchain.builds_medusa("1.2.1") and not toolchain.builds_medusa("1.0.0")


def dockerfile_arg(name: str) -> str:
    text = (REPO / "builder" / "Dockerfile").read_text()
    return re.search(rf"^ARG {name}=(\S+)$", text, re.M).group(1)


def test_the_builder_dockerfile_pins_what_the_toolchain_module_says() -> None:
    assert dockerfile_arg("TRITON_IMAGE") == toolchain.TRITON_TRTLLM_IMAGE
    assert dockerfile_arg("TRTLLM_VERSION") == toolchain.TRTLLM_VERSION
    assert dockerfile_arg("TRTLLM_EXAMPLES_DIR") == DEFAULT_EXAMPLES_DIR
    text = (REPO / "builder" / "Dockerfile").read_text()
    assert "git clone" not in text and "github.com" not in text, "the image's own examples are used, no network"


def test_the_dockerfile_checks_every_example_script_a_build_can_run() -> None:
    """The image build stops when a script the builder runs is missing from the examples folder."""
    text = (REPO / "builder" / "Dockerfile").read_text()
    checked = set(re.search(r"for script in (.*?); do", text, re.S).group(1).replace("\\", " ").split())
    used = set()
    paths = BuildPaths(base_dir="/b", heads_dir="/h", checkpoint_dir="/c", engine_dir="/e", examples_dir="/x")
    for quantization in ("none", "fp8"):
        for heads in (0, 3):
            for model_type in BASE_CONVERTERS:
                commands = plan_commands(EngineSpec(quantization=quantization), paths, num_heads=heads,
                                         num_layers=1, tree_size=3, model_type=model_type)
                used |= {c.argv[1].removeprefix("/x/") for c in commands if c.argv[0] == "python3"}
    assert used and used <= checked, f"the Dockerfile does not check {used - checked}"
