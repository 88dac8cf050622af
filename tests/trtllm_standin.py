"""A stand-in TensorRT-LLM install for builder tests on machines without NVIDIA GPUs.

TensorRT-LLM cannot run here, so tests that exercise the code around a build put these in its
place: distribution metadata declaring a version (what the builder reads to learn which
TensorRT-LLM an image has), a ``trtllm-build`` executable and the checkpoint converter script,
both writing placeholder files and logging their argv as JSON lines to ``$MOCK_TRTLLM_LOG``.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path

CONVERTER = textwrap.dedent("""
    import json, os, sys
    out = sys.argv[sys.argv.index("--output_dir") + 1]
    os.makedirs(out, exist_ok=True)
    json.dump({"architecture": "MedusaForCausalLM"}, open(os.path.join(out, "config.json"), "w"))
    open(os.path.join(out, "rank0.safetensors"), "wb").write(b"checkpoint")
    open(os.environ["MOCK_TRTLLM_LOG"], "a").write(json.dumps(sys.argv) + "\\n")
""")


def write_distribution(site: Path, version: str) -> Path:
    """Metadata of an installed ``tensorrt_llm`` distribution of ``version`` under ``site``."""
    info = site / f"tensorrt_llm-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt_llm\nVersion: {version}\n")
    return site


def install_trtllm_standin(root: Path, *, version: str | None = "1.1.0", fail_build: bool = False,
                           with_build: bool = True) -> Path:
    """Lay out ``root/site`` (metadata, unless ``version`` is None), ``root/bin/trtllm-build``
    (unless ``with_build`` is False) and ``root/examples/medusa/convert_checkpoint.py``."""
    if version is not None:
        write_distribution(root / "site", version)
    else:
        (root / "site").mkdir(parents=True)
    examples = root / "examples" / "medusa"
    examples.mkdir(parents=True)
    (examples / "convert_checkpoint.py").write_text(CONVERTER)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    if with_build:
        build = bin_dir / "trtllm-build"
        body = ("print('[TRT-LLM] [E] Invalid max_draft_len'); sys.exit(1)" if fail_build else
                "out = sys.argv[sys.argv.index('--output_dir') + 1]\n"
                "os.makedirs(out, exist_ok=True)\n"
                "open(os.path.join(out, 'rank0.engine'), 'wb').write(b'engine' * 100)\n"
                "json.dump({'build_config': {}}, open(os.path.join(out, 'config.json'), 'w'))\n"
                "print('[TRT-LLM] [I] Total time of building all engines: 00:00:01')")
        build.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                         "open(os.environ['MOCK_TRTLLM_LOG'], 'a').write(json.dumps(sys.argv) + '\\n')\n" + body + "\n")
        build.chmod(build.stat().st_mode | stat.S_IEXEC)
    return root


def activate(monkeypatch, root: Path, log: Path, examples_env: str) -> Path:
    """Make the stand-in the installed TensorRT-LLM of this process and of the commands it runs."""
    monkeypatch.syspath_prepend(str(root / "site"))
    monkeypatch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MOCK_TRTLLM_LOG", str(log))
    monkeypatch.setenv(examples_env, str(root / "examples"))
    return log
