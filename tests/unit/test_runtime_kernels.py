"""The Triton decoding kernels: when the runtime picks them, and the kernels themselves under
Triton's CPU interpreter (checks in interpreted_kernels.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medusa_builder.errors import UserError
from medusa_builder.runtime.model import LlamaConfig, LlamaModel, kernels_unsupported
from tiny_llama import HF_CONFIG, write_tiny_model

pytest.importorskip("triton")
CHECKS = Path(__file__).with_name("interpreted_kernels.py")


def test_kernels_under_the_triton_interpreter():
    """Triton decides whether to interpret when first imported: the checks need a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", str(CHECKS)],
        env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=CHECKS.parents[2], capture_output=True, text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert re.search(r"^27 passed in ", result.stdout, re.MULTILINE), result.stdout[-2000:]  # none skipped


def test_the_cpu_decodes_in_float32_through_torch_operations(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    folder = write_tiny_model(tmp_path / "tiny")
    model = LlamaModel.load(folder, dtype="auto", device="cpu")
    assert (model.dtype, model.kernels) == (torch.float32, False)
    assert LlamaModel.load(folder, dtype="bfloat16", device="cpu").kernels is False
    with pytest.raises(UserError, match="need a CUDA device; use kernels off"):
        LlamaModel.load(folder, device="cpu", kernels="on")


def test_bad_kernel_settings_are_refused_with_the_choices(tmp_path):
    folder = write_tiny_model(tmp_path / "tiny")
    with pytest.raises(UserError, match="unknown kernels setting 'fast'; use auto, on or off"):
        LlamaModel.load(folder, kernels="fast")
    with pytest.raises(UserError, match="unknown dtype 'int8'; use auto or one of"):
        LlamaModel.load(folder, dtype="int8")


def test_kernels_refuse_float16_and_odd_head_sizes():
    cuda = torch.device("cuda")  # only compared, never allocated on
    cfg = LlamaConfig.from_hf({**HF_CONFIG, "num_hidden_layers": 1})
    assert kernels_unsupported(cfg, cuda, "bfloat16") is None
    assert "use bfloat16" in kernels_unsupported(cfg, cuda, "float16")
    odd = LlamaConfig.from_hf({**HF_CONFIG, "num_hidden_layers": 1, "head_dim": 24})
    assert "head size 24" in kernels_unsupported(odd, cuda, "bfloat16")
