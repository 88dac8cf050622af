"""A validation run: accuracy and tokens/s of a candidate endpoint against a baseline, the
report and chart, and the verdict against the thresholds (the work of ``medusa-builder validate``).

``validate`` returns the summary when every threshold holds and raises ValidationFailed (with
the summary) when one does not; bad settings are a UserError before anything is contacted,
and an endpoint that cannot be measured is an InfraError. See docs/validation.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medusa_common.contract import InfraError, UserError, ValidationFailed

from .. import storage
from . import accuracy as accuracy_mod
from . import throughput as throughput_mod
from .client import Deadline, TritonGenerator, map_bounded, parse_endpoint
from .dataset import load_subjects, load_topic_prompts
from .report import Measurements, build_report, headline, render_chart, render_table, summary
from .tokens import NOT_TOKENIZER_FILES, load_token_counter
from .verdict import Thresholds, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationOptions:
    """What to measure and the thresholds to hold (the validate step's flags, by the same names)."""

    candidate: str
    baseline: str | None = None
    model_name: str = "ensemble"
    protocol: str | None = None
    stream: str = "auto"
    timeout_seconds: float = 3600.0
    request_timeout_seconds: float = 300.0
    retries: int = 3
    dataset_uri: str | None = None
    subjects: list[str] = field(default_factory=list)
    shots: int = 5
    max_examples_per_subject: int = 0
    answer_max_tokens: int = 8
    min_score: float | None = None
    max_drop_vs_base: float | None = None
    prompts_uri: str | None = None
    topics: list[str] = field(default_factory=list)
    tokenizer: str | None = None
    concurrency: list[int] = field(default_factory=lambda: [1])
    max_tokens: int = 256
    warmup_requests: int | None = None
    requests_per_topic: int = 0
    min_speedup: float | None = None
    report_uri: str | None = None
    chart: str | None = None
    work_dir: str | None = None
    storage: storage.StorageSettings = field(default_factory=storage.StorageSettings)


def check_options(options: ValidationOptions) -> Thresholds:
    """Refuse contradictory or incomplete settings before anything is contacted."""
    thresholds = Thresholds(options.min_score, options.max_drop_vs_base, options.min_speedup)
    if not options.dataset_uri and not options.tokenizer:
        raise UserError("nothing to measure: give --dataset-uri (accuracy), --tokenizer (throughput) or both")
    for name in ("min_score", "max_drop_vs_base"):
        value = getattr(options, name)
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
    if options.min_speedup is not None and options.min_speedup <= 0:
        raise UserError(f"--min-speedup must be positive, got {options.min_speedup}")
    positive = {"shots": (options.shots, 0), "max-examples-per-subject": (options.max_examples_per_subject, 0),
                "answer-max-tokens": (options.answer_max_tokens, 1), "max-tokens": (options.max_tokens, 1),
                "retries": (options.retries, 0), "requests-per-topic": (options.requests_per_topic, 0),
                "warmup-requests": (options.warmup_requests if options.warmup_requests is not None else 0, 0)}
    for flag, (value, least) in positive.items():
        if value < least:
            raise UserError(f"--{flag} must be at least {least}, got {value}")
    if options.timeout_seconds <= 0 or options.request_timeout_seconds <= 0:
        raise UserError("--timeout-seconds and --request-timeout-seconds must be positive")
    if (options.min_score is not None or options.max_drop_vs_base is not None) and not options.dataset_uri:
        raise UserError("--min-score and --max-drop-vs-base need --dataset-uri")
    if options.max_drop_vs_base is not None and not options.baseline:
        raise UserError("--max-drop-vs-base needs --baseline")
    if options.min_speedup is not None and not (options.baseline and options.tokenizer):
        raise UserError("--min-speedup needs --baseline and --tokenizer")
    for flag, uri in (("--report-uri", options.report_uri), ("--chart", options.chart)):
        if uri:
            loc = storage.parse_uri(uri)
            if loc.scheme == "hf":
                raise UserError(f"{flag} {uri}: Hugging Face locations are read-only; use a path, s3://, gs:// "
                                "or pvc://")
            if not os.path.basename((loc.key if loc.is_object_store else loc.path).rstrip("/")) or uri.endswith("/"):
                raise UserError(f"{flag} {uri} must name a file, e.g. s3://bucket/validation/report.json")
    if options.prompts_uri and not options.tokenizer:
        raise UserError("--prompts-uri needs --tokenizer (the model folder with tokenizer.json) to count output tokens")
    return thresholds


def _local(uri: str, work_dir: Path, name: str, exclude: tuple[str, ...] = ()) -> Path:
    """A local path for an input location, downloading it (less ``exclude``) when it is remote."""
    loc = storage.parse_uri(uri)
    if loc.scheme == "local":
        if not os.path.exists(loc.path):
            raise UserError(f"{uri} does not exist; check the path or the volume mount")
        return Path(loc.path)
    dest = work_dir / name
    storage.download(uri, dest, exclude=exclude)
    return dest


def _store_file(local_file: Path, uri: str) -> None:
    loc = storage.parse_uri(uri)
    if loc.scheme == "local":
        try:
            Path(loc.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_file, loc.path)
        except OSError as exc:
            raise InfraError(f"writing {loc.path} failed ({exc.strerror}); check the volume") from None
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(local_file, Path(tmp, os.path.basename(loc.key)))
        storage.upload_dir(tmp, uri.rstrip("/").rsplit("/", 1)[0])


def default_chart_uri(report_uri: str | None) -> str | None:
    if not report_uri:
        return None
    stem = report_uri[:-5] if report_uri.endswith(".json") else report_uri
    return f"{stem}.png"


def _run_prompts(generator: TritonGenerator, max_tokens: int, stream: bool):
    def run_prompts(prompts: list[str], concurrency: int):
        return map_bounded(lambda p: generator.generate(p, max_tokens, stream=stream), prompts, concurrency,
                           pool=generator.pool)
    return run_prompts


def _texts(generator: TritonGenerator, max_tokens: int, concurrency: int):
    run = _run_prompts(generator, max_tokens, stream=False)
    return lambda prompts: [g.text for g in run(prompts, concurrency)]


def validate(options: ValidationOptions) -> dict[str, Any]:
    started, clock = datetime.now(timezone.utc), time.monotonic()
    thresholds = check_options(options)
    options.storage.apply()
    deadline = Deadline(options.timeout_seconds)
    candidate_ep = parse_endpoint(options.candidate, protocol=options.protocol, model=options.model_name)
    baseline_ep = None
    if options.baseline:
        baseline_ep = parse_endpoint(options.baseline, protocol=options.protocol, model=options.model_name)

    with tempfile.TemporaryDirectory(dir=options.work_dir) as tmp:
        work = Path(tmp)
        subject_sets = topics = count_tokens = None
        if options.dataset_uri:
            subject_sets = load_subjects(_local(options.dataset_uri, work, "dataset"), options.subjects, shots=options.shots,
                                         max_examples=options.max_examples_per_subject or None)
            log.info("accuracy: %d subjects, %d questions, %d shots", len(subject_sets),
                     sum(len(s.test) for s in subject_sets), options.shots)
        if options.tokenizer:
            prompts = _local(options.prompts_uri, work, "prompts") if options.prompts_uri else None
            topics = load_topic_prompts(prompts, options.topics or None)
            count_tokens = load_token_counter(_local(options.tokenizer, work, "tokenizer", NOT_TOKENIZER_FILES))
            log.info("throughput: %d topics, concurrency %s, %d max tokens", len(topics), options.concurrency,
                     options.max_tokens)

        workers = max(options.concurrency)
        generators = {"candidate": TritonGenerator(candidate_ep, request_timeout=options.request_timeout_seconds,
                                                   retries=options.retries, deadline=deadline, name="candidate",
                                                   workers=workers)}
        if baseline_ep:
            generators["baseline"] = TritonGenerator(baseline_ep, request_timeout=options.request_timeout_seconds,
                                                     retries=options.retries, deadline=deadline, name="baseline",
                                                     workers=workers)
        try:
            measurements, stream = _measure(options, generators, subject_sets, topics, count_tokens)
        finally:
            for generator in generators.values():
                generator.close()

        failures = evaluate(thresholds, accuracy=measurements.accuracy.accuracy if measurements.accuracy else None,
                            base_accuracy=measurements.base_accuracy.accuracy if measurements.base_accuracy else None,
                            speedup=_speedup(measurements))
        settings = {"subjects": [s.subject for s in subject_sets or []], "shots": options.shots,
                    "maxExamplesPerSubject": options.max_examples_per_subject, "answerMaxTokens": options.answer_max_tokens,
                    "topics": list(topics or {}), "concurrency": options.concurrency, "maxTokens": options.max_tokens,
                    "warmupRequests": options.warmup_requests, "requestsPerTopic": options.requests_per_topic,
                    "streaming": stream, "protocol": candidate_ep.protocol,
                    "datasetUri": options.dataset_uri, "promptsUri": options.prompts_uri}
        finished = datetime.now(timezone.utc)
        report = build_report(
            measurements, failures=failures, thresholds=thresholds.to_dict(),
            candidate={"url": candidate_ep.url, "model": candidate_ep.model},
            baseline={"url": baseline_ep.url, "model": baseline_ep.model} if baseline_ep else None,
            settings=settings,
            timing={"startedAt": started.isoformat(), "finishedAt": finished.isoformat(),
                    "durationSeconds": round(time.monotonic() - clock, 3)})

        chart_uri = options.chart or default_chart_uri(options.report_uri)
        chart_file = work / "chart.png"
        if chart_uri and render_chart(report, chart_file):
            _store_file(chart_file, chart_uri)
            log.info("chart written to %s", chart_uri)
        else:
            chart_uri = None
        if options.report_uri:
            report_file = work / "report.json"
            report_file.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            _store_file(report_file, options.report_uri)
            log.info("report written to %s", options.report_uri)

    print(render_table(report), flush=True)
    result = summary(report, report_uri=options.report_uri, chart_uri=chart_uri)
    if failures:
        names = ", ".join(f["threshold"] for f in failures)
        raise ValidationFailed(f"the candidate failed {len(failures)} threshold(s): {names}", result)
    return result


def _speedup(m: Measurements) -> float | None:
    return headline(m)["speedup"] if m.base_throughput else None


def _measure(options: ValidationOptions, generators: dict[str, TritonGenerator], subject_sets, topics, count_tokens):
    interfaces = {name: g.connect() for name, g in generators.items()}
    protocol = generators["candidate"].endpoint.protocol
    can_stream = all(i.can_stream(protocol) for i in interfaces.values())
    if options.stream == "on" and not can_stream:
        raise UserError("--stream on needs --protocol grpc and decoupled (streaming) models on every endpoint")
    stream = options.stream == "on" or (options.stream == "auto" and can_stream)
    measurements = Measurements(levels=options.concurrency if topics else [])

    if subject_sets:
        concurrency = max(options.concurrency)
        for name, generator in generators.items():
            log.info("%s: answering %d questions", name, sum(len(s.test) for s in subject_sets))
            result = accuracy_mod.evaluate(subject_sets, _texts(generator, options.answer_max_tokens, concurrency))
            log.info("%s: accuracy %.3f (%d/%d)", name, result.accuracy, result.correct, result.total)
            if name == "candidate":
                measurements.accuracy = result
            else:
                measurements.base_accuracy = result

    if topics:
        for level in options.concurrency:
            warmup = level if options.warmup_requests is None else options.warmup_requests
            for topic, prompts in topics.items():
                for name, generator in generators.items():
                    stats = throughput_mod.measure(
                        topic, prompts, level, run_prompts=_run_prompts(generator, options.max_tokens, stream),
                        count_tokens=count_tokens, warmup=warmup, minimum_requests=options.requests_per_topic)
                    log.info("%s: %s at concurrency %d: %.1f tokens/s (%d tokens in %.2fs)", name, topic, level,
                             stats.tokens_per_second, stats.output_tokens, stats.duration)
                    (measurements.throughput if name == "candidate" else measurements.base_throughput).append(stats)
    return measurements, stream
