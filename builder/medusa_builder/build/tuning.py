"""Inputs a build can be given that the runtime's tuning code makes: calibrated trees, trained
heads and Hugging Face folders converted from GGUF. torch comes with medusa_runtime, which is
imported only when one of these runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from medusa_common.contract import UserError


def calibrate(base_dir: str, heads_dir: str, *, num_nodes: int, prompts_file: str | None, max_prompts: int | None,
              max_new_tokens: int, method: str, draft_vocab: int | None, device: str,
              output: str | None) -> dict[str, Any]:
    """Calibrate a tree for these heads (see medusa_runtime.tuning.calibrate), on the prompts of
    ``prompts_file`` or the packaged calibration prompts (the first ``max_prompts`` of them);
    also written as JSON to ``output`` when given."""
    from medusa_runtime.tuning.calibrate import calibrate_tree
    from medusa_runtime.tuning.prompts import read_prompt_file

    prompts = read_prompt_file(prompts_file) if prompts_file else None
    if prompts is not None and max_prompts is not None:
        prompts = prompts[: max(1, max_prompts)]
    elif max_prompts is not None:
        from medusa_runtime.tuning.prompts import calibration_prompts

        prompts = calibration_prompts()[: max(1, max_prompts)]
    result = calibrate_tree(base_dir, heads_dir, num_nodes=num_nodes, prompts=prompts, device=device,
                            max_new_tokens=max_new_tokens, method=method, draft_vocab=draft_vocab)
    if output:
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    return result


def train_heads(base_dir: str, output: str, *, prompts_file: str | None, max_prompts: int | None, num_heads: int,
                num_layers: int, output_layer: bool, model_written_prompts: int, styles: int, max_new_tokens: int,
                epochs: int, batch_size: int, learning_rate: float, loss_decay: float, distillation: float,
                device: str, dtype: str, seed: int) -> dict[str, Any]:
    """Train heads for a base model (Medusa-1 self-distillation, medusa_runtime.tuning.train) on
    the prompts of ``prompts_file`` or the packaged training prompts, the first ``max_prompts``
    of them when given."""
    from medusa_runtime.tuning.prompts import read_prompt_file, training_prompts
    from medusa_runtime.tuning.train import train_heads as train

    prompts = read_prompt_file(prompts_file) if prompts_file else training_prompts()
    if max_prompts is not None:
        prompts = prompts[: max(1, max_prompts)]
    return train(
        base_dir, output, num_heads=num_heads, num_layers=num_layers, output_layer=output_layer, prompts=prompts,
        model_written=model_written_prompts, styles=styles, max_new_tokens=max_new_tokens, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, loss_decay=loss_decay, distillation=distillation,
        device=device, dtype=dtype, seed=seed,
    )


def convert_gguf(gguf: str | None, output: str | None, dtype: str) -> dict[str, Any]:
    """Convert a GGUF file into a Hugging Face folder; without ``gguf``, the test model's file
    (into the shared cache when neither ``output`` nor a dtype other than float32 is given)."""
    from medusa_runtime.tuning import smollm2

    start = time.monotonic()
    if gguf is None:
        if output is None and dtype == "float32":
            model_dir = smollm2.cached_model_dir()
        else:
            if output is None:
                raise UserError("give --output DIR when converting to a dtype other than float32")
            model_dir = smollm2.convert_gguf(smollm2.locate_gguf(), output, dtype=dtype)
        source = str(smollm2.locate_gguf())
    else:
        if output is None:
            raise UserError("give --output DIR for the converted model")
        model_dir = smollm2.convert_gguf(gguf, output, dtype=dtype)
        source = gguf
    return {"modelDir": str(model_dir), "gguf": source, "dtype": dtype,
            "seconds": round(time.monotonic() - start, 1)}
