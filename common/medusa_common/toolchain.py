"""The TensorRT-LLM toolchain Medusa engines are built and served with, and what is known about
the Triton images that carry it. Standard library only: the operator imports it too.

An engine loads only in the TensorRT-LLM version that built it, so the builder image and the
serving image must carry the same one. TensorRT-LLM 1.1 is the last line that builds Medusa
engines: later releases removed the TensorRT engine path (``trtllm-build`` and the checkpoint
converters), and the PyTorch backend that remains has no Medusa decoding.
"""

from __future__ import annotations

import re

# The pinned version: the builder image (builder/Dockerfile) refuses to build on anything else.
TRTLLM_VERSION = "1.1.0"
# The TensorRT-LLM line (major.minor) whose releases build Medusa engines with this builder.
MEDUSA_TRTLLM_LINE = (1, 1)
TRITON_TRTLLM_RELEASE = "25.12"
TRITON_TRTLLM_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_TRTLLM_RELEASE}-trtllm-python-py3"

# Triton release -> the TensorRT-LLM version its `-trtllm-python-py3` image ships, as pinned by
# the TensorRT-LLM backend's container recipe on that release branch
# (triton-inference-server/tensorrtllm_backend, dockerfile/Dockerfile.triton.trt_llm_backend,
# TENSORRTLLM_VER). 24.08 predates that argument: its branch pins a TensorRT-LLM commit of the
# 0.12 development line, recorded here as the line.
TRITON_RELEASE_TRTLLM = {
    "24.08": "0.12",
    "25.09": "1.0.0",
    "25.10": "1.0.0",
    "25.12": "1.1.0",
    "26.01": "1.1.0",
    "26.02": "1.1.0",
    "26.03": "1.2.0rc8",
    "26.04": "1.2.1",
}

# TensorRT-LLM packs each index of a medusa_choices path into a 4-bit chunk of a 64-bit prefix
# when it lays out the tree (cpp/tensorrt_llm/runtime/utils/speculativeChoicesUtils.cpp,
# computePrefix with PREFIX_CHUNK_SIZE_BITS = 4): an index of 16 or more spills into the next
# chunk and corrupts the tree, and at most 64 / 4 = 16 indices fit in one path.
MEDUSA_CHOICE_INDEX_LIMIT = 16
MEDUSA_CHOICE_DEPTH_LIMIT = 16

_TRITON_TRTLLM_TAG = re.compile(r"(?:^|/)tritonserver:(?P<release>\d{2}\.\d{2})-trtllm-python-py3(?:@sha256:[0-9a-f]+)?$")


def triton_release(image: str) -> str | None:
    """The Triton release of a ``.../tritonserver:YY.MM-trtllm-python-py3`` image reference
    (any registry, optionally pinned by digest), or None for any other image."""
    match = _TRITON_TRTLLM_TAG.search(image.strip())
    return match.group("release") if match else None


def image_trtllm_version(image: str) -> str | None:
    """The TensorRT-LLM version a known Triton TensorRT-LLM image ships; None when unknown."""
    release = triton_release(image)
    return TRITON_RELEASE_TRTLLM.get(release) if release else None


def version_line(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string such as ``1.1.0``, ``1.2.0rc8`` or ``0.12``."""
    match = re.match(r"^\s*(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def builds_medusa(version: str) -> bool:
    """Whether this builder can build Medusa engines with that TensorRT-LLM version."""
    return version_line(version) == MEDUSA_TRTLLM_LINE


def medusa_line_releases() -> list[str]:
    """The known Triton releases whose image ships the TensorRT-LLM line that builds Medusa."""
    return sorted(r for r, v in TRITON_RELEASE_TRTLLM.items() if builds_medusa(v))


def unsupported_version_reason(version: str) -> str:
    """Why a TensorRT-LLM version cannot build this project's Medusa engines, as a sentence that
    starts with the version and says what to use instead."""
    line = version_line(version)
    pinned = ".".join(str(n) for n in MEDUSA_TRTLLM_LINE)
    releases = ", ".join(medusa_line_releases())
    if line is not None and line > MEDUSA_TRTLLM_LINE:
        return (f"TensorRT-LLM {version} cannot build Medusa engines: after the {pinned} line TensorRT-LLM removed "
                f"the TensorRT engine path (trtllm-build and the checkpoint converters) and its PyTorch backend has "
                f"no Medusa. Use the TensorRT-LLM {pinned} toolchain (Triton {releases}), or engine.backend: "
                f"reference, this project's maintained Medusa runtime")
    return (f"TensorRT-LLM {version} is not the {pinned} line this builder drives (its converters and trtllm-build "
            f"flags differ): use the TensorRT-LLM {pinned} toolchain (Triton {releases})")
