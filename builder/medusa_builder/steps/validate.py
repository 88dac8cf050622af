"""`medusa-builder validate`: accuracy and tokens/s gates for a candidate against a baseline.

Exit codes: 0 = measured and passed; 4 = measured and failed (result ``ok: false``, error kind
``validation``, the full summary with ``passed: false`` and every failed threshold); 2 = bad input
(flags, empty or malformed dataset or prompts); 3 = could not measure (endpoint unreachable,
server errors after the bounded retries, time budget spent). See docs/validation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import storage
from . import add_result_argument
from medusa_common.contract import InfraError, UserError, ValidationFailed
from ..validation import accuracy as accuracy_mod
from ..validation import throughput as throughput_mod
from ..validation.client import Deadline, TritonGenerator, map_bounded, parse_endpoint
from ..validation.dataset import load_subjects, load_topic_prompts
from ..validation.report import Measurements, build_report, headline, render_chart, render_table, summary
from ..validation.tokens import NOT_TOKENIZER_FILES, load_token_counter
from ..validation.verdict import Thresholds, evaluate

log = logging.getLogger(__name__)

def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", help="measure accuracy and tokens/s of a candidate endpoint against thresholds",
        description="Multiple-choice accuracy (MMLU layout) and tokens/s per topic of a Triton endpoint, "
                    "compared with a baseline endpoint; exit 0 pass, 4 failed thresholds, 2 bad input, "
                    "3 could not measure.")
    ends = parser.add_argument_group("endpoints")
    ends.add_argument("--candidate", required=True, metavar="URL",
                      help="candidate endpoint: http://HOST:8000, grpc://HOST:8001, HOST:PORT or .../v2/models/NAME")
    ends.add_argument("--baseline", metavar="URL", help="baseline endpoint (the same model without Medusa)")
    ends.add_argument("--model-name", default="ensemble", help="model to call when the URL names none")
    ends.add_argument("--protocol", choices=("http", "grpc"), help="default: from the URL scheme (http)")
    ends.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                      help="stream throughput requests (TTFT, ITL): auto = when both endpoints can (gRPC, "
                           "decoupled model)")
    ends.add_argument("--timeout-seconds", type=float, default=3600.0,
                      help="time budget of the whole validation; past it the run fails as infrastructure")
    ends.add_argument("--request-timeout-seconds", type=float, default=300.0, help="limit for one request")
    ends.add_argument("--retries", type=int, default=3, help="retries of a failed request or readiness check")

    acc = parser.add_argument_group("accuracy")
    acc.add_argument("--dataset-uri", metavar="URI", help="multiple-choice set (MMLU CSV or HF parquet layout)")
    acc.add_argument("--subjects", type=_name_list, default=[], metavar="A,B", help="default: every subject")
    acc.add_argument("--shots", type=int, default=5, metavar="K", help="few-shot examples from the dev split")
    acc.add_argument("--max-examples-per-subject", type=int, default=0, metavar="N", help="0 = all")
    acc.add_argument("--answer-max-tokens", type=int, default=8, metavar="N", help="tokens generated per answer")
    acc.add_argument("--min-score", type=float, metavar="X", help="minimum candidate accuracy (0-1)")
    acc.add_argument("--max-drop-vs-base", type=float, metavar="X",
                     help="largest allowed baseline accuracy minus candidate accuracy (0-1)")

    thr = parser.add_argument_group("throughput")
    thr.add_argument("--prompts-uri", metavar="URI",
                     help="throughput prompts per topic (JSON, JSONL or *.txt; default: a built-in set)")
    thr.add_argument("--topics", type=_name_list, default=[], metavar="A,B", help="default: every topic")
    thr.add_argument("--tokenizer", metavar="DIR",
                     help="the model's tokenizer folder (or URI), to count tokens; throughput is measured with it")
    thr.add_argument("--concurrency", type=_int_list, default=[1], metavar="1,4",
                     help="requests in flight per level; the first level gives the headline numbers")
    thr.add_argument("--max-tokens", type=int, default=256, metavar="N", help="output tokens per request")
    thr.add_argument("--warmup-requests", type=int, metavar="N",
                     help="unmeasured requests before each topic and level (default: the concurrency)")
    thr.add_argument("--requests-per-topic", type=int, default=0, metavar="N",
                     help="at least N measured requests per topic and level (prompts are cycled)")
    thr.add_argument("--min-speedup", type=float, metavar="X", help="minimum candidate/baseline tokens/s")

    out = parser.add_argument_group("output")
    out.add_argument("--report-uri", metavar="URI", help="where the full JSON report goes (path, s3://, gs://, pvc://)")
    out.add_argument("--chart", metavar="FILE",
                     help="PNG chart of tokens/s per topic (path or URI; default: beside the report)")
    out.add_argument("--work-dir", metavar="DIR", help="folder for downloaded inputs (default: a temporary one)")
    storage.add_storage_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def check_arguments(args: argparse.Namespace) -> Thresholds:
    """Refuse contradictory or incomplete settings before anything is contacted."""
    thresholds = Thresholds(args.min_score, args.max_drop_vs_base, args.min_speedup)
    if not args.dataset_uri and not args.tokenizer:
        raise UserError("nothing to measure: give --dataset-uri (accuracy), --tokenizer (throughput) or both")
    for name in ("min_score", "max_drop_vs_base"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
    if args.min_speedup is not None and args.min_speedup <= 0:
        raise UserError(f"--min-speedup must be positive, got {args.min_speedup}")
    positive = {"shots": (args.shots, 0), "max-examples-per-subject": (args.max_examples_per_subject, 0),
                "answer-max-tokens": (args.answer_max_tokens, 1), "max-tokens": (args.max_tokens, 1),
                "retries": (args.retries, 0), "requests-per-topic": (args.requests_per_topic, 0),
                "warmup-requests": (args.warmup_requests if args.warmup_requests is not None else 0, 0)}
    for flag, (value, least) in positive.items():
        if value < least:
            raise UserError(f"--{flag} must be at least {least}, got {value}")
    if args.timeout_seconds <= 0 or args.request_timeout_seconds <= 0:
        raise UserError("--timeout-seconds and --request-timeout-seconds must be positive")
    if (args.min_score is not None or args.max_drop_vs_base is not None) and not args.dataset_uri:
        raise UserError("--min-score and --max-drop-vs-base need --dataset-uri")
    if args.max_drop_vs_base is not None and not args.baseline:
        raise UserError("--max-drop-vs-base needs --baseline")
    if args.min_speedup is not None and not (args.baseline and args.tokenizer):
        raise UserError("--min-speedup needs --baseline and --tokenizer")
    for flag, uri in (("--report-uri", args.report_uri), ("--chart", args.chart)):
        if uri:
            loc = storage.parse_uri(uri)
            if loc.scheme == "hf":
                raise UserError(f"{flag} {uri}: Hugging Face locations are read-only; use a path, s3://, gs:// "
                                "or pvc://")
            if not os.path.basename((loc.key if loc.is_object_store else loc.path).rstrip("/")) or uri.endswith("/"):
                raise UserError(f"{flag} {uri} must name a file, e.g. s3://bucket/validation/report.json")
    if args.prompts_uri and not args.tokenizer:
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    started, clock = datetime.now(timezone.utc), time.monotonic()
    thresholds = check_arguments(args)
    storage.apply_storage_arguments(args)
    deadline = Deadline(args.timeout_seconds)
    candidate_ep = parse_endpoint(args.candidate, protocol=args.protocol, model=args.model_name)
    baseline_ep = None
    if args.baseline:
        baseline_ep = parse_endpoint(args.baseline, protocol=args.protocol, model=args.model_name)

    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        subject_sets = topics = count_tokens = None
        if args.dataset_uri:
            subject_sets = load_subjects(_local(args.dataset_uri, work, "dataset"), args.subjects, shots=args.shots,
                                         max_examples=args.max_examples_per_subject or None)
            log.info("accuracy: %d subjects, %d questions, %d shots", len(subject_sets),
                     sum(len(s.test) for s in subject_sets), args.shots)
        if args.tokenizer:
            prompts = _local(args.prompts_uri, work, "prompts") if args.prompts_uri else None
            topics = load_topic_prompts(prompts, args.topics or None)
            count_tokens = load_token_counter(_local(args.tokenizer, work, "tokenizer", NOT_TOKENIZER_FILES))
            log.info("throughput: %d topics, concurrency %s, %d max tokens", len(topics), args.concurrency,
                     args.max_tokens)

        workers = max(args.concurrency)
        generators = {"candidate": TritonGenerator(candidate_ep, request_timeout=args.request_timeout_seconds,
                                                   retries=args.retries, deadline=deadline, name="candidate",
                                                   workers=workers)}
        if baseline_ep:
            generators["baseline"] = TritonGenerator(baseline_ep, request_timeout=args.request_timeout_seconds,
                                                     retries=args.retries, deadline=deadline, name="baseline",
                                                     workers=workers)
        try:
            measurements, stream = _measure(args, generators, subject_sets, topics, count_tokens)
        finally:
            for generator in generators.values():
                generator.close()

        failures = evaluate(thresholds, accuracy=measurements.accuracy.accuracy if measurements.accuracy else None,
                            base_accuracy=measurements.base_accuracy.accuracy if measurements.base_accuracy else None,
                            speedup=_speedup(measurements))
        settings = {"subjects": [s.subject for s in subject_sets or []], "shots": args.shots,
                    "maxExamplesPerSubject": args.max_examples_per_subject, "answerMaxTokens": args.answer_max_tokens,
                    "topics": list(topics or {}), "concurrency": args.concurrency, "maxTokens": args.max_tokens,
                    "warmupRequests": args.warmup_requests, "requestsPerTopic": args.requests_per_topic,
                    "streaming": stream, "protocol": candidate_ep.protocol,
                    "datasetUri": args.dataset_uri, "promptsUri": args.prompts_uri}
        finished = datetime.now(timezone.utc)
        report = build_report(
            measurements, failures=failures, thresholds=thresholds.to_dict(),
            candidate={"url": candidate_ep.url, "model": candidate_ep.model},
            baseline={"url": baseline_ep.url, "model": baseline_ep.model} if baseline_ep else None,
            settings=settings,
            timing={"startedAt": started.isoformat(), "finishedAt": finished.isoformat(),
                    "durationSeconds": round(time.monotonic() - clock, 3)})

        chart_uri = args.chart or default_chart_uri(args.report_uri)
        chart_file = work / "chart.png"
        if chart_uri and render_chart(report, chart_file):
            _store_file(chart_file, chart_uri)
            log.info("chart written to %s", chart_uri)
        else:
            chart_uri = None
        if args.report_uri:
            report_file = work / "report.json"
            report_file.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            _store_file(report_file, args.report_uri)
            log.info("report written to %s", args.report_uri)

    print(render_table(report), flush=True)
    result = summary(report, report_uri=args.report_uri, chart_uri=chart_uri)
    if failures:
        names = ", ".join(f["threshold"] for f in failures)
        raise ValidationFailed(f"the candidate failed {len(failures)} threshold(s): {names}", result)
    return result


def _speedup(m: Measurements) -> float | None:
    return headline(m)["speedup"] if m.base_throughput else None


def _measure(args, generators: dict[str, TritonGenerator], subject_sets, topics, count_tokens):
    interfaces = {name: g.connect() for name, g in generators.items()}
    protocol = generators["candidate"].endpoint.protocol
    can_stream = all(i.can_stream(protocol) for i in interfaces.values())
    if args.stream == "on" and not can_stream:
        raise UserError("--stream on needs --protocol grpc and decoupled (streaming) models on every endpoint")
    stream = args.stream == "on" or (args.stream == "auto" and can_stream)
    measurements = Measurements(levels=args.concurrency if topics else [])

    if subject_sets:
        concurrency = max(args.concurrency)
        for name, generator in generators.items():
            log.info("%s: answering %d questions", name, sum(len(s.test) for s in subject_sets))
            result = accuracy_mod.evaluate(subject_sets, _texts(generator, args.answer_max_tokens, concurrency))
            log.info("%s: accuracy %.3f (%d/%d)", name, result.accuracy, result.correct, result.total)
            if name == "candidate":
                measurements.accuracy = result
            else:
                measurements.base_accuracy = result

    if topics:
        for level in args.concurrency:
            warmup = level if args.warmup_requests is None else args.warmup_requests
            for topic, prompts in topics.items():
                for name, generator in generators.items():
                    stats = throughput_mod.measure(
                        topic, prompts, level, run_prompts=_run_prompts(generator, args.max_tokens, stream),
                        count_tokens=count_tokens, warmup=warmup, minimum_requests=args.requests_per_topic)
                    log.info("%s: %s at concurrency %d: %.1f tokens/s (%d tokens in %.2fs)", name, topic, level,
                             stats.tokens_per_second, stats.output_tokens, stats.duration)
                    (measurements.throughput if name == "candidate" else measurements.base_throughput).append(stats)
    return measurements, stream
