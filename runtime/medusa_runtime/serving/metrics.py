"""Prometheus metrics of the serving model, through the Python backend's custom metrics API.

- ``nv_llm_output_token_len`` (histogram, one observation of output tokens per finished
  request) and ``nv_llm_input_token_len``: the names, labels
  (``model``, ``version``, ``response_metric_type``) and buckets of the TensorRT-LLM backend, so
  one recording rule (``rate(nv_llm_output_token_len_sum[1m])`` = output tokens/s) serves both.
- ``medusa_tokens_per_step`` (histogram, one observation per decoding step of the tokens it
  emitted: accepted draft tokens + 1); ``_sum / _count`` is the mean accepted tokens per step.
- ``medusa_draft_tokens_total`` / ``medusa_accepted_draft_tokens_total`` (counters).

The backend module is passed in (it only exists inside the Triton stub). Where a Triton build
has no histogram kind, each histogram degrades to two counters with the same ``_sum`` and
``_count`` names, which keeps the rate queries working (buckets are then lost).
"""

from __future__ import annotations

from typing import Any

TOKEN_LEN_BUCKETS = [10.0, 50.0, 100.0, 500.0, 1000.0]


class _Histogram:
    def __init__(self, backend: Any, name: str, description: str, labels: dict[str, str], buckets: list[float]):
        family_cls = backend.MetricFamily
        if hasattr(family_cls, "HISTOGRAM"):
            family = family_cls(name=name, description=description, kind=family_cls.HISTOGRAM)
            self._families = [family]  # a family must outlive its metrics
            self._metric = family.Metric(labels=labels, buckets=buckets)
            self._sum = self._count = None
        else:
            self._metric = None
            sums = family_cls(name=f"{name}_sum", description=f"{description} (sum)", kind=family_cls.COUNTER)
            counts = family_cls(name=f"{name}_count", description=f"{description} (count)", kind=family_cls.COUNTER)
            self._families = [sums, counts]
            self._sum, self._count = sums.Metric(labels=labels), counts.Metric(labels=labels)

    def observe(self, value: float) -> None:
        if self._metric is not None:
            self._metric.observe(float(value))
        else:
            self._sum.increment(float(value))
            self._count.increment(1.0)


class ServingMetrics:
    def __init__(self, backend: Any, model: str, version: str, max_tokens_per_step: int):
        labels = {"model": model, "version": version}
        self.histograms_supported = hasattr(backend.MetricFamily, "HISTOGRAM")
        self.output_tokens = _Histogram(
            backend, "nv_llm_output_token_len", "Output tokens per finished request",
            {**labels, "response_metric_type": "total_output_tokens"}, TOKEN_LEN_BUCKETS,
        )
        self.input_tokens = _Histogram(
            backend, "nv_llm_input_token_len", "Input tokens per request",
            {**labels, "response_metric_type": "total_input_tokens"}, TOKEN_LEN_BUCKETS,
        )
        self.tokens_per_step = _Histogram(
            backend, "medusa_tokens_per_step", "Tokens emitted per decoding step (accepted draft tokens + 1)",
            labels, [float(n) for n in range(1, max(1, max_tokens_per_step) + 1)],
        )
        counter = backend.MetricFamily.COUNTER
        self._families = [
            backend.MetricFamily(name="medusa_draft_tokens_total", description="Draft tokens verified", kind=counter),
            backend.MetricFamily(name="medusa_accepted_draft_tokens_total", description="Draft tokens accepted",
                                 kind=counter),
        ]
        self.draft_tokens = self._families[0].Metric(labels=labels)
        self.accepted_draft_tokens = self._families[1].Metric(labels=labels)

    def record(self, input_tokens: int, output_tokens: int, accepted_per_step: list[int], draft_tokens: int) -> None:
        self.input_tokens.observe(input_tokens)
        self.output_tokens.observe(output_tokens)
        for accepted in accepted_per_step:
            self.tokens_per_step.observe(accepted + 1)
        self.draft_tokens.increment(float(draft_tokens))
        self.accepted_draft_tokens.increment(float(sum(accepted_per_step)))
