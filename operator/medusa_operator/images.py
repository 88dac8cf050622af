"""Which TensorRT-LLM a revision's images carry, and the image pairs the operator refuses.

The builder image builds the engine and the serving image loads it, and an engine loads only in
the TensorRT-LLM version that built it. The operator knows an image's version when it is a
Triton TensorRT-LLM image listed in ``medusa_common.toolchain`` or, for the builder, when it is
the operator's own builder image (built from builder/Dockerfile, which checks the pinned
version). A pair it knows to mismatch is refused before any Job runs; an image it does not know
is allowed, and the build step reports the version it built with (``status.engine``), which is
checked against the serving image once known.
"""

from __future__ import annotations

from medusa_common import toolchain

from .render.context import RenderContext


def builder_trtllm_version(ctx: RenderContext) -> str | None:
    """The TensorRT-LLM version of the revision's builder image, or None when unknown."""
    known = toolchain.image_trtllm_version(ctx.builder_image)
    if known is not None:
        return known
    return toolchain.TRTLLM_VERSION if ctx.builder_image == ctx.config.builder_image else None


def serving_trtllm_version(ctx: RenderContext) -> str | None:
    """The TensorRT-LLM version of the revision's serving image, or None when unknown."""
    return toolchain.image_trtllm_version(ctx.serving_image)


def _mismatch(ctx: RenderContext, engine_version: str, serving_version: str, built: bool) -> str:
    releases = ", ".join(toolchain.medusa_line_releases())
    how = "was built with" if built else "would be built with"
    return (f"serving.image {ctx.serving_image} ships TensorRT-LLM {serving_version} but the engine {how} "
            f"TensorRT-LLM {engine_version} (builder image {ctx.builder_image}); an engine loads only in the "
            f"TensorRT-LLM version that built it. Serve with {toolchain.TRITON_TRTLLM_IMAGE} (Triton {releases} ship "
            f"TensorRT-LLM {toolchain.TRTLLM_VERSION}) or leave serving.image unset for the operator's default")


def image_refusal(ctx: RenderContext) -> str | None:
    """Why the revision's builder and serving images cannot produce a servable engine, or None
    when nothing known stands in the way. Only the tensorrt-llm backend depends on them."""
    if ctx.spec.engine.backend != "tensorrt-llm":
        return None
    builder = builder_trtllm_version(ctx)
    if builder is not None and not toolchain.builds_medusa(builder):
        return f"builder image {ctx.builder_image}: {toolchain.unsupported_version_reason(builder)}"
    serving = serving_trtllm_version(ctx)
    if serving is None:
        return None
    if builder is not None and builder != serving:
        return _mismatch(ctx, builder, serving, built=False)
    if builder is None and not toolchain.builds_medusa(serving):
        # Whatever the unknown builder image holds, its build succeeds only on the Medusa line.
        return _mismatch(ctx, ".".join(str(n) for n in toolchain.MEDUSA_TRTLLM_LINE), serving, built=False)
    return None


def built_engine_refusal(ctx: RenderContext, engine_version: str | None) -> str | None:
    """Why an engine the build step reports as built with ``engine_version`` cannot load in the
    revision's serving image, or None when it can or either version is unknown."""
    if ctx.spec.engine.backend != "tensorrt-llm" or not engine_version:
        return None
    serving = serving_trtllm_version(ctx)
    if serving is None or serving == engine_version:
        return None
    return _mismatch(ctx, engine_version, serving, built=True)
