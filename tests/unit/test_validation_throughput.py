"""Throughput arithmetic: windows, per-request rates, TTFT/ITL, acceptance, request plans."""

import pytest

from medusa_builder.validation.client import Generation
from medusa_builder.validation.throughput import (Sample, combine, mean_accepted_tokens, measure, percentile,
                                                  request_plan, summarize)


def test_aggregate_rate_uses_the_whole_window_and_per_request_rates_their_latency():
    samples = [Sample(output_tokens=100, start=0.0, end=2.0), Sample(output_tokens=50, start=1.0, end=3.0)]
    stats = summarize("math", 2, samples)
    assert stats.duration == 3.0
    assert stats.tokens_per_second == pytest.approx(150 / 3)
    assert stats.request_tokens_per_second == pytest.approx((50 + 25) / 2)
    assert stats.latency["mean"] == pytest.approx(2.0)
    assert stats.ttft is None and stats.itl is None and stats.mean_accepted_tokens is None


def test_streaming_gives_time_to_first_token_and_inter_token_latency():
    sample = Sample(output_tokens=11, start=10.0, end=12.5, first_response=10.5)
    assert sample.ttft == pytest.approx(0.5)
    assert sample.itl == pytest.approx(2.0 / 10)
    stats = summarize("t", 1, [sample, Sample(output_tokens=1, start=0, end=1, first_response=0.2)])
    assert stats.ttft["p50"] == pytest.approx(0.35)
    assert stats.itl["mean"] == pytest.approx(0.2)  # a one-token answer has no inter-token gap


def test_mean_accepted_tokens_counts_decoding_steps():
    # 30 tokens with 20 accepted drafts took 10 steps: 3 tokens per step.
    samples = [Sample(20, 0, 1, accepted_draft_tokens=15), Sample(10, 0, 1, accepted_draft_tokens=5)]
    assert mean_accepted_tokens(samples) == pytest.approx(3.0)
    assert mean_accepted_tokens([Sample(10, 0, 1, accepted_draft_tokens=0)]) == 1.0
    assert mean_accepted_tokens([Sample(10, 0, 1)]) is None


def test_levels_combine_over_topics_by_tokens_and_time():
    a = summarize("a", 1, [Sample(100, 0, 1, accepted_draft_tokens=50)])
    b = summarize("b", 1, [Sample(30, 0, 2, accepted_draft_tokens=0)])
    overall = combine([a, b])
    assert overall["tokensPerSecond"] == pytest.approx(130 / 3)
    assert overall["requests"] == 2
    assert overall["meanAcceptedTokens"] == pytest.approx((2.0 * 100 + 1.0 * 30) / 130)


def test_request_plan_cycles_prompts_to_fill_every_lane():
    assert request_plan(["a", "b", "c"], 1) == ["a", "b", "c"]
    assert request_plan(["a", "b"], 4) == ["a", "b", "a", "b"]
    assert request_plan(["a"], 1, minimum=3) == ["a", "a", "a"]


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile([1, 2, 3, 4, 5], 90) == pytest.approx(4.6)


def test_measure_excludes_warm_up_requests_and_counts_tokens_with_the_counter():
    calls = []

    def run_prompts(prompts, concurrency):
        calls.append((list(prompts), concurrency))
        start = float(len(calls))
        return [Generation(text=p * 3, start=start, end=start + 0.5) for p in prompts]

    stats = measure("topic", ["x y", "z"], 2, run_prompts=run_prompts, count_tokens=lambda t: len(t.split()),
                    warmup=3)
    assert calls == [(["x y", "z", "x y"], 2), (["x y", "z"], 2)]
    assert stats.requests == 2
    assert stats.output_tokens == len(("x y" * 3).split()) + len(("z" * 3).split())
    assert stats.duration == pytest.approx(0.5)
