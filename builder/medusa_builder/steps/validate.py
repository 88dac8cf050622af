"""`medusa-builder validate`: accuracy and tokens/s gates for a candidate against a baseline.

Exit codes: 0 = measured and passed; 4 = measured and failed (result ``ok: false``, error kind
``validation``, the full summary with ``passed: false`` and every failed threshold); 2 = bad input
(flags, empty or malformed dataset or prompts); 3 = could not measure (endpoint unreachable,
server errors after the bounded retries, time budget spent). The work is
``medusa_builder.validation.run``; see docs/validation.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..validation.run import ValidationOptions, validate
from . import add_result_argument, add_storage_arguments, storage_settings


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
    add_storage_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return validate(ValidationOptions(
        candidate=args.candidate, baseline=args.baseline, model_name=args.model_name, protocol=args.protocol,
        stream=args.stream, timeout_seconds=args.timeout_seconds,
        request_timeout_seconds=args.request_timeout_seconds, retries=args.retries, dataset_uri=args.dataset_uri,
        subjects=args.subjects, shots=args.shots, max_examples_per_subject=args.max_examples_per_subject,
        answer_max_tokens=args.answer_max_tokens, min_score=args.min_score, max_drop_vs_base=args.max_drop_vs_base,
        prompts_uri=args.prompts_uri, topics=args.topics, tokenizer=args.tokenizer, concurrency=args.concurrency,
        max_tokens=args.max_tokens, warmup_requests=args.warmup_requests,
        requests_per_topic=args.requests_per_topic, min_speedup=args.min_speedup, report_uri=args.report_uri,
        chart=args.chart, work_dir=args.work_dir, storage=storage_settings(args)))
