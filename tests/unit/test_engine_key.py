"""The engine cache key has one home (issue 24, "the same facts live twice: the engine cache key").

``medusa_common.engine_key.EngineInputs`` is what the operator and a build run by hand both key
engines with. These tests check the key itself, and that a hand-run build given the flags the
operator renders keys the very facts the operator keys (only the toolchain is named differently).
The operator's own keys are locked separately, with literal values, in test_engine_key_compat.py.
"""

from __future__ import annotations

import json
import stat
import sys
import tomllib
from dataclasses import fields, replace
from pathlib import Path

import pytest

from medusa_builder.build import host
from medusa_builder.build import run as build_run
from medusa_builder.build.key import engine_inputs as hand_run_inputs
from medusa_builder.build.spec import EngineSpec
from medusa_builder.cli import build_parser
from medusa_builder.steps import build as build_step
from medusa_builder.steps.build_engine import build_options
from medusa_common.engine_key import EngineInputs
from medusa_common.tree import TreeError
from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.render import jobs
from medusa_operator.render.context import ModelRef, RenderContext
from medusa_operator.revision import base_engine_cache_key, engine_cache_key, engine_inputs

from plan_helpers import CONFIG
from trtllm_standin import write_distribution

INPUTS = EngineInputs(
    base_uri="s3://models/base/", base_revision="r1", heads_uri="s3://models/heads/", heads_revision="h1",
    num_heads=3, num_layers=1, tree_choices=((0,), (0, 0), (1,)), tree_preset=None, backend="tensorrt-llm",
    dtype="float16", quantization="none", tensor_parallel_size=1, max_batch_size=8, max_input_len=4096,
    max_output_len=1024, gpu_product="NVIDIA-H100-80GB-HBM3", toolchain="registry.example/medusa-builder:1",
)
# A different value for each field, each still a valid input.
CHANGED = {
    "base_uri": "s3://models/other-base/", "base_revision": "r2", "heads_uri": "s3://models/other-heads/",
    "heads_revision": "h2", "num_heads": 4, "num_layers": 2, "tree_choices": ((0,), (1,)),
    "backend": "reference", "dtype": "bfloat16", "quantization": "fp8", "tensor_parallel_size": 2,
    "max_batch_size": 16, "max_input_len": 2048, "max_output_len": 512, "gpu_product": "NVIDIA-A100-SXM4-80GB",
    "toolchain": "registry.example/medusa-builder:2",
}
HEADS_AND_TREE = {"heads_uri", "heads_revision", "num_heads", "num_layers", "tree_choices", "tree_preset"}


def test_every_input_changes_the_engine_key_and_only_base_facts_change_the_baseline_key() -> None:
    assert {f.name for f in fields(EngineInputs)} == {*CHANGED, "tree_preset"}, "a new input needs a case here"
    cases = {name: replace(INPUTS, **{name: value}) for name, value in CHANGED.items()}
    cases["tree_preset"] = replace(INPUTS, tree_choices=None, tree_preset="medusa3_32")
    keys = {name: inputs.key() for name, inputs in cases.items()}
    assert len({INPUTS.key(), *keys.values()}) == len(cases) + 1
    for name, inputs in cases.items():
        same = inputs.baseline_key() == INPUTS.baseline_key()
        assert same == (name in HEADS_AND_TREE), name
    assert INPUTS.baseline_key() != INPUTS.key()


def test_an_engine_key_needs_heads_and_exactly_one_tree() -> None:
    with pytest.raises(ValueError, match="not both"):
        replace(INPUTS, tree_preset="medusa3_32")
    with pytest.raises(ValueError, match="needs its tree"):
        replace(INPUTS, tree_choices=None).key()
    base_only = replace(INPUTS, heads_uri=None, heads_revision=None, tree_choices=None)
    with pytest.raises(ValueError, match="baseline_key"):
        base_only.key()
    assert base_only.baseline_key() == INPUTS.baseline_key()


SPECS = [
    {"baseModel": {"uri": "hf://org/base", "revision": "abc"},
     "medusa": {"uri": "s3://heads/h/", "revision": "v2", "numHeads": 3, "numLayers": 1,
                "tree": {"choices": [[1], [0], [0, 0]]}},
     "engine": {"gpu": {"product": "NVIDIA-H100-80GB-HBM3"}}, "artifacts": {"uri": "s3://engines/"}},
    {"baseModel": {"uri": "s3://models/base/"}, "medusa": {"uri": "s3://models/heads/", "numLayers": 2},
     "engine": {"dtype": "bfloat16", "quantization": "fp8", "tensorParallelSize": 2, "maxBatchSize": 4,
                "maxInputLen": 1024, "maxOutputLen": 256, "gpu": {"count": 2, "product": "NVIDIA-H200"}},
     "artifacts": {"uri": "s3://engines/"}},
    {"baseModel": {"uri": "pvc://models/base"},
     "medusa": {"uri": "pvc://models/heads", "tree": {"preset": "medusa2_16"}},
     "engine": {"backend": "reference", "gpu": {"count": 0}}, "artifacts": {"uri": "pvc://engines/"}},
]


def _hand_run(job: dict) -> EngineInputs:
    """The inputs ``medusa-builder`` keys a Job's command line by once its --cache-key is dropped."""
    argv = job["spec"]["template"]["spec"]["containers"][0]["args"]
    at = argv.index("--cache-key")
    args = build_parser().parse_args(argv[:at] + argv[at + 2:])
    return build_run.sources_inputs(build_step.sources(args), build_options(args, backend=args.backend))


@pytest.mark.parametrize("body", SPECS, ids=["choices-declared", "auto-fp8-tp2", "reference-preset-cpu"])
def test_a_hand_run_build_keys_the_facts_the_operator_keys(body, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: the spec alone names the GPU
    ctx = RenderContext(ModelRef("m", "ns", "uid-1"), MedusaModelSpec.model_validate(body), CONFIG)
    image = ctx.builder_image
    operator = engine_inputs(ctx.spec, image)
    hand_run = _hand_run(jobs.build_job(ctx, "r", engine_cache_key(ctx.spec, image)))
    assert hand_run.toolchain.startswith("medusa-builder ") and hand_run.toolchain != image
    assert replace(hand_run, toolchain=image) == operator
    assert replace(hand_run, toolchain=image).key() == engine_cache_key(ctx.spec, image)
    base = _hand_run(jobs.base_build_job(ctx, "r", base_engine_cache_key(ctx.spec, image)))
    assert replace(base, toolchain=image).baseline_key() == base_engine_cache_key(ctx.spec, image)


def _standin_nvidia_smi(folder: Path, name: str) -> None:
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!{sys.executable}\nprint({name + ', 9.0'!r})\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_a_hand_run_key_names_the_gpu_it_runs_on_unless_told(tmp_path, monkeypatch) -> None:
    # Engines are not portable across GPUs: two hand-run builds on different GPUs must not share a key.
    def key(**spec) -> str:
        return hand_run_inputs(EngineSpec(**spec), base_uri="s3://b", base_revision=None, heads_uri="s3://h",
                               heads_revision=None, preset="medusa2_16").key()

    monkeypatch.setenv("PATH", str(tmp_path))
    no_gpu = key()
    _standin_nvidia_smi(tmp_path, "NVIDIA H100 80GB HBM3")
    on_h100 = key()
    assert on_h100 != no_gpu and on_h100 == key(gpu_product="NVIDIA H100 80GB HBM3")
    assert key(gpu_product="NVIDIA-A100-SXM4-80GB") not in (no_gpu, on_h100)
    _standin_nvidia_smi(tmp_path, "NVIDIA A100-SXM4-80GB")
    assert key() not in (no_gpu, on_h100)


def test_a_hand_run_tensorrt_llm_key_names_the_installed_tensorrt_llm(tmp_path, monkeypatch) -> None:
    def key(backend: str) -> str:
        return hand_run_inputs(EngineSpec(backend=backend, gpu_product="NVIDIA-H100-80GB-HBM3"), base_uri="s3://b",
                               base_revision=None).baseline_key()

    before = {backend: key(backend) for backend in ("tensorrt-llm", "reference")}
    monkeypatch.syspath_prepend(str(write_distribution(tmp_path / "site", "1.1.1")))
    assert key("tensorrt-llm") != before["tensorrt-llm"]
    assert key("reference") == before["reference"]


def test_hand_run_choices_are_checked_before_anything_is_fetched(tmp_path) -> None:
    # The key takes the choices as given, as the operator does, but only once they are a valid
    # tree: a bad tree is refused before the (here missing) sources are looked at.
    sources = build_run.Sources(base_uri=str(tmp_path / "missing-base"), heads_uri=str(tmp_path / "missing-heads"))
    options = build_run.BuildOptions(spec=EngineSpec(backend="reference"), dry_run=True,
                                     tree=build_run.TreeRequest(choices=json.dumps([[0], [0, 0, 0]])))
    with pytest.raises(TreeError, match="prefix-closed"):
        build_run.build_from_sources(sources, options)


def test_the_toolchain_names_the_builder_s_own_distribution() -> None:
    # The builder image installs medusa-builder (not the operator's distribution): the version a
    # hand-run key and every manifest record is read from there.
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "builder" / "pyproject.toml").read_text())
    assert host.BUILDER_DISTRIBUTION == project["project"]["name"]
