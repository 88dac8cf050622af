"""Tokens per second, per topic and concurrency level.

For each topic and level: warm-up requests first (excluded), then the measured requests with
exactly ``concurrency`` in flight until the queue drains. Output tokens are counted by
re-encoding the generated text with the model's tokenizer.

- aggregate tokens/s = all measured output tokens / (last end - first start) of the window;
- per-request tokens/s = a request's output tokens / its latency (mean reported);
- with streaming, time to first token (TTFT) = first non-empty response - send time, and
  inter-token latency (ITL) = (last response - first response) / (output tokens - 1);
- mean accepted tokens per step = output tokens / (output tokens - accepted draft tokens), from the
  server's ``total_accepted_draft_tokens`` when it reports them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

from .client import Generation
from .tokens import TokenCounter


@dataclass(frozen=True)
class Sample:
    """One measured request."""

    output_tokens: int
    start: float
    end: float
    first_response: float | None = None
    accepted_draft_tokens: int | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ttft(self) -> float | None:
        return None if self.first_response is None else self.first_response - self.start

    @property
    def itl(self) -> float | None:
        if self.first_response is None or self.output_tokens < 2:
            return None
        return (self.end - self.first_response) / (self.output_tokens - 1)


def to_sample(generation: Generation, count_tokens: TokenCounter) -> Sample:
    return Sample(output_tokens=count_tokens(generation.text), start=generation.start, end=generation.end,
                  first_response=generation.first_response, accepted_draft_tokens=generation.accepted_draft_tokens)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _latency_stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99)}


def mean_accepted_tokens(samples: Sequence[Sample]) -> float | None:
    known = [s for s in samples if s.accepted_draft_tokens is not None]
    tokens = sum(s.output_tokens for s in known)
    steps = sum(s.output_tokens - s.accepted_draft_tokens for s in known)
    return tokens / steps if known and steps > 0 else None


@dataclass
class LevelStats:
    topic: str
    concurrency: int
    requests: int
    output_tokens: int
    duration: float
    tokens_per_second: float
    request_tokens_per_second: float
    latency: dict | None
    ttft: dict | None
    itl: dict | None
    mean_accepted_tokens: float | None

    def to_dict(self) -> dict:
        return {"topic": self.topic, "concurrency": self.concurrency, "requests": self.requests,
                "outputTokens": self.output_tokens, "durationSeconds": self.duration,
                "tokensPerSecond": self.tokens_per_second, "requestTokensPerSecond": self.request_tokens_per_second,
                "latencySeconds": self.latency, "ttftSeconds": self.ttft, "itlSeconds": self.itl,
                "meanAcceptedTokens": self.mean_accepted_tokens}


def summarize(topic: str, concurrency: int, samples: Sequence[Sample]) -> LevelStats:
    """Aggregate the measured requests of one topic at one concurrency level."""
    if not samples:
        raise ValueError("no samples to summarise")
    window = max(s.end for s in samples) - min(s.start for s in samples)
    tokens = sum(s.output_tokens for s in samples)
    per_request = [s.output_tokens / s.latency for s in samples if s.latency > 0]
    return LevelStats(
        topic=topic, concurrency=concurrency, requests=len(samples), output_tokens=tokens, duration=window,
        tokens_per_second=tokens / window if window > 0 else 0.0,
        request_tokens_per_second=statistics.fmean(per_request) if per_request else 0.0,
        latency=_latency_stats([s.latency for s in samples]),
        ttft=_latency_stats([s.ttft for s in samples if s.ttft is not None]),
        itl=_latency_stats([s.itl for s in samples if s.itl is not None]),
        mean_accepted_tokens=mean_accepted_tokens(samples),
    )


def combine(stats: Sequence[LevelStats]) -> dict:
    """One level over all topics: tokens and measured time add up across the topics' windows."""
    tokens = sum(s.output_tokens for s in stats)
    duration = sum(s.duration for s in stats)
    accepted = [(s.mean_accepted_tokens, s.output_tokens) for s in stats if s.mean_accepted_tokens]
    weight = sum(w for _, w in accepted)
    return {"outputTokens": tokens, "durationSeconds": duration, "requests": sum(s.requests for s in stats),
            "tokensPerSecond": tokens / duration if duration > 0 else 0.0,
            "meanAcceptedTokens": sum(m * w for m, w in accepted) / weight if weight else None}


def request_plan(prompts: Sequence[str], concurrency: int, minimum: int = 0) -> list[str]:
    """The measured prompts: every prompt once, cycled until there are at least ``concurrency``
    (so every lane has work) and at least ``minimum`` requests."""
    count = max(len(prompts), concurrency, minimum)
    return [prompts[i % len(prompts)] for i in range(count)]


def measure(topic: str, prompts: Sequence[str], concurrency: int, *,
            run_prompts: Callable[[list[str], int], list[Generation]], count_tokens: TokenCounter,
            warmup: int, minimum_requests: int = 0) -> LevelStats:
    """Warm up (results dropped), then measure one topic at one concurrency level."""
    if warmup > 0:
        run_prompts([prompts[i % len(prompts)] for i in range(warmup)], concurrency)
    generations = run_prompts(request_plan(prompts, concurrency, minimum_requests), concurrency)
    return summarize(topic, concurrency, [to_sample(g, count_tokens) for g in generations])
