"""The reference runtime served by the real tritonserver (Python backend, CPU)."""

from __future__ import annotations

import re

import pytest
import requests

from medusa_common.tree import REFERENCE_DRAFT_VOCAB

pytestmark = [pytest.mark.triton, pytest.mark.model]

PROMPTS = ["What is the capital of France?", "Explain recursion in simple terms."]


def metric_value(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_medusa_serving_matches_the_base_model(triton_base, triton_medusa):
    """The Medusa model decodes with a draft vocabulary (its heads rank 8,192 tokens, not all):
    outputs stay the base model's."""
    assert f"draft vocabulary: {REFERENCE_DRAFT_VOCAB} tokens" in triton_medusa.log_path.read_text(errors="replace")
    for text in PROMPTS:
        base = triton_base.generate(text, 16, return_perf_metrics=True)
        medusa = triton_medusa.generate(text, 16, return_perf_metrics=True)
        assert base["text_output"] and medusa["text_output"] == base["text_output"]
        assert base["total_draft_tokens"] == 0 and base["acceptance_rate"] == 0
        assert medusa["total_draft_tokens"] > 0
        assert 0 <= medusa["total_accepted_draft_tokens"] <= medusa["total_draft_tokens"]


def test_perf_metrics_only_when_asked(triton_base):
    body = triton_base.generate(PROMPTS[0], 8)
    assert body["text_output"]
    assert "total_draft_tokens" not in body


def test_metrics_port_exports_output_tokens_and_acceptance(triton_medusa):
    before = triton_medusa.metrics()
    count_before = metric_value(before, "nv_llm_output_token_len_count", response_metric_type="total_output_tokens") or 0
    sum_before = metric_value(before, "nv_llm_output_token_len_sum", response_metric_type="total_output_tokens") or 0
    steps_before = metric_value(before, "medusa_tokens_per_step_count") or 0
    triton_medusa.generate(PROMPTS[1], 12)
    after = triton_medusa.metrics()
    assert re.search(r"^# TYPE nv_llm_output_token_len histogram$", after, re.M)
    assert re.search(r"^# TYPE medusa_tokens_per_step histogram$", after, re.M)
    assert metric_value(after, "nv_llm_output_token_len_count", response_metric_type="total_output_tokens",
                        model="ensemble", version="1") == count_before + 1
    produced = metric_value(after, "nv_llm_output_token_len_sum", response_metric_type="total_output_tokens") - sum_before
    assert 1 <= produced <= 12
    steps = metric_value(after, "medusa_tokens_per_step_count") - steps_before
    tokens_via_steps = metric_value(after, "medusa_tokens_per_step_sum")
    assert 1 <= steps <= produced + 1 and tokens_via_steps >= steps
    assert metric_value(after, "nv_llm_output_token_len_bucket", le="+Inf") >= 1


def test_bad_request_is_refused_with_a_message(triton_base):
    response = requests.post(f"{triton_base.http_url}/v2/models/ensemble/generate",
                             json={"text_input": "hello", "max_tokens": 0}, timeout=60)
    assert response.status_code == 400
    assert "max_tokens must be at least 1" in response.text
