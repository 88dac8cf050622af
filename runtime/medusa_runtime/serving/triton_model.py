"""Triton Python-backend model serving the reference Medusa runtime.

``write_reference_repository`` copies this file to ``<model>/1/model.py``. The request and
response tensors follow the TensorRT-LLM ensemble: ``text_input``, ``max_tokens`` and optional
``end_id``, ``pad_id``, ``temperature``, ``stream``, ``return_perf_metrics`` in;
``text_output`` and, when asked, ``acceptance_rate``, ``total_accepted_draft_tokens`` and
``total_draft_tokens`` out. Decoding is greedy (as TensorRT-LLM's Medusa is), so
``temperature`` is accepted and ignored, and a request asking to ``stream`` gets its whole
answer in a single response.
"""

import json
import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from medusa_common.contract import StepError
from medusa_runtime.engine.service import ReferenceService
from medusa_runtime.serving.metrics import ServingMetrics


def _parameters(model_config: dict) -> dict:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def _scalar(request, name: str, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    return values[0] if values.size else default


class TritonPythonModel:
    def initialize(self, args):
        logging.basicConfig(level=logging.INFO)
        config = json.loads(args["model_config"])
        params = _parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        device = params.get("device", "auto")
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args.get('model_instance_device_id', '0')}"
        heads_dir = params.get("heads_dir") or None
        self.service = ReferenceService(
            version_dir / params["base_dir"],
            version_dir / heads_dir if heads_dir else None,
            json.loads(params.get("tree") or "[]") or None,
            device=device,
            dtype=params.get("dtype", "auto"),
            draft_vocab=int(params.get("draft_vocab") or 0) or None,
        )
        self.metrics = ServingMetrics(pb_utils, args["model_name"], args["model_version"], self.service.tree_depth + 1)
        if not self.metrics.histograms_supported:
            pb_utils.Logger.log_warn("this Triton has no histogram metrics; histograms are exported as _sum/_count counters")

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        text = _scalar(request, "text_input")
        max_tokens = _scalar(request, "max_tokens")
        if text is None or max_tokens is None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError("text_input and max_tokens are required"))
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        end_id = _scalar(request, "end_id")
        try:
            completion = self.service.complete(str(text), int(max_tokens), None if end_id is None else int(end_id))
        except StepError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        generation = completion.generation
        self.metrics.record(generation.prompt_tokens, completion.output_tokens, generation.accepted_per_step,
                            generation.draft_tokens)
        outputs = [pb_utils.Tensor("text_output", np.array([[completion.text.encode("utf-8")]], dtype=np.object_))]
        if bool(_scalar(request, "return_perf_metrics", False)):
            outputs += [
                pb_utils.Tensor("acceptance_rate", np.array([[completion.acceptance_rate]], dtype=np.float32)),
                pb_utils.Tensor("total_accepted_draft_tokens",
                                np.array([[generation.accepted_draft_tokens]], dtype=np.int32)),
                pb_utils.Tensor("total_draft_tokens", np.array([[generation.draft_tokens]], dtype=np.int32)),
            ]
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def finalize(self):
        self.service = None
