"""Does `medusa-builder validate` measure tokens/s like an established tool? A side-by-side run.

Both tools drive the same Triton server with the same prompts, output length, concurrency,
request count, warm-up and tokenizer, in alternating rounds (ours, aiperf, ours, aiperf, ...), so
slow drift of a shared machine affects both alike. Compared: aggregate output tokens/s (output
tokens of the measured requests / wall time of the measured window) and the output tokens per
request each tool counted. The two should agree within 5%.

The peer is aiperf (PyPI ``aiperf``, the successor of genai-perf), driving Triton's
``/v2/models/<model>/generate`` endpoint through its template endpoint. Its dependencies are
pinned tightly, so it lives in its own virtual environment under
``~/.cache/medusa-operator/aiperf-<version>/``, created on first use (or give ``--aiperf``).

Without ``--url`` the script starts the real ``tritonserver`` (from the nvidia-pytriton wheel)
serving the reference runtime with SmolLM2-135M-Instruct (the base model, as the baseline of a
validation), on the CPU.

    python benchmarks/validate_fidelity.py [--url http://HOST:PORT --tokenizer DIR] \
        [--concurrency 1] [--max-tokens 32] [--requests 6] [--rounds 2] [--output result.json]

Results measured on the development machine, and why the two differ there (aiperf's own CPU use
slows a CPU-bound server): docs/validation.md, "Fidelity".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "tests" / "data" / "prompts" / "prompts.json"
AIPERF_VERSION = "0.13.0"
AGREEMENT = 0.05


def aiperf_binary(explicit: str | None) -> Path:
    """The aiperf executable, installing it into its own environment when missing."""
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("MEDUSA_CACHE", Path.home() / ".cache" / "medusa-operator"))
    venv = cache / f"aiperf-{AIPERF_VERSION}"
    binary = venv / "bin" / "aiperf"
    if not binary.is_file():
        print(f"installing aiperf {AIPERF_VERSION} into {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"aiperf=={AIPERF_VERSION}"], check=True)
    return binary


def load_prompts() -> list[str]:
    return [p for prompts in json.loads(PROMPTS.read_text()).values() for p in prompts]


def server_counters(metrics_url: str | None, model: str) -> dict[str, float]:
    """Triton's cumulative request counters for ``model`` (empty without a metrics URL)."""
    if not metrics_url:
        return {}
    import urllib.request

    wanted = ("nv_inference_request_success", "nv_inference_request_duration_us",
              "nv_inference_compute_infer_duration_us")
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    counters = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in wanted and f'model="{model}"' in rest:
            counters[name] = float(line.rsplit(" ", 1)[1])
    return counters


def pin_process_tree(pid: int, cpus: set[int]) -> None:
    """Bind a process, its threads and its descendants (tritonserver and its Python-backend stub)
    to ``cpus``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            pin_process_tree(int(child), cpus)


def measured(run, metrics_url: str | None, model: str) -> dict:
    """Run one tool; add its CPU seconds (client side) and the server's own view of the requests."""
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = server_counters(metrics_url, model)
    result = run()
    after = server_counters(metrics_url, model)
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["clientCpuSeconds"] = (after_cpu.ru_utime - before_cpu.ru_utime) + (after_cpu.ru_stime - before_cpu.ru_stime)
    if before and after:
        count = after["nv_inference_request_success"] - before["nv_inference_request_success"]
        duration = after["nv_inference_request_duration_us"] - before["nv_inference_request_duration_us"]
        compute = after["nv_inference_compute_infer_duration_us"] - before["nv_inference_compute_infer_duration_us"]
        # Warm-up requests are in these deltas too.
        result["serverRequests"] = int(count)
        result["serverMeanLatencySeconds"] = duration / count / 1e6 if count else None
        result["serverMeanComputeSeconds"] = compute / count / 1e6 if count else None
    return result


def run_ours(url: str, model: str, tokenizer: str, prompts: list[str], args, work: Path) -> dict:
    """One `medusa-builder validate` throughput run; numbers come from its JSON report."""
    prompts_file = work / "prompts-ours.json"
    prompts_file.write_text(json.dumps({"all": prompts}))
    report = work / "report-ours.json"
    command = [sys.executable, "-c", "from medusa_builder.cli import main; main()", "--log-level", "WARNING",
               "validate", "--candidate", url, "--model-name", model, "--prompts-uri", str(prompts_file),
               "--tokenizer", tokenizer, "--concurrency", str(args.concurrency),
               "--max-tokens", str(args.max_tokens), "--requests-per-topic", str(args.requests),
               "--warmup-requests", str(args.warmup), "--report-uri", str(report)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"validate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    level = json.loads(report.read_text())["throughput"]["levels"][0]
    topic = level["perTopic"][0]["candidate"]
    return {"tokensPerSecond": topic["tokensPerSecond"], "requests": topic["requests"],
            "outputTokens": topic["outputTokens"], "seconds": topic["durationSeconds"],
            "meanLatencySeconds": topic["latencySeconds"]["mean"]}


def run_aiperf(binary: Path, url: str, model: str, tokenizer: str, prompts: list[str], args, work: Path,
               round_index: int) -> dict:
    """One aiperf run with the same load; numbers come from its JSON export."""
    dataset = work / "prompts-aiperf.jsonl"
    dataset.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    artifacts = work / f"aiperf-{round_index}"
    # aiperf splits --extra-inputs values on commas, so the JSON template goes in a file.
    template = work / "payload.json.j2"
    template.write_text('{"text_input": {{ text|tojson }}, "max_tokens": %d}' % args.max_tokens)
    command = [str(binary), "profile", "--model", model, "--url", url, "--endpoint-type", "template",
               "--custom-endpoint", f"/v2/models/{model}/generate",
               "--extra-inputs", f"payload_template:{template}", "--extra-inputs", "response_field:text_output",
               "--input-file", str(dataset), "--custom-dataset-type", "single_turn",
               "--dataset-sampling-strategy", "sequential", "--tokenizer", tokenizer,
               "--concurrency", str(args.concurrency), "--request-count", str(args.requests),
               "--warmup-request-count", str(args.warmup), "--random-seed", "0",
               "--output-artifact-dir", str(artifacts), "--ui-type", "none",
               # The fewest helper processes: on a small CPU host they compete with the server.
               "--workers-max", "1", "--record-processors", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=work)
    exports = sorted(artifacts.rglob("profile_export_aiperf.json"))
    if proc.returncode != 0 or not exports:
        raise SystemExit(f"aiperf failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    doc = json.loads(exports[0].read_text())
    osl = doc["output_sequence_length"]["avg"]
    requests = int(doc["request_count"]["avg"])
    return {"tokensPerSecond": doc["output_token_throughput"]["avg"], "requests": requests,
            "outputTokens": round(osl * requests), "seconds": doc["benchmark_duration"]["avg"],
            "meanLatencySeconds": doc["request_latency"]["avg"] / 1000}


def busy_share(run: dict, concurrency: int) -> float:
    """How much of the measured window the tool kept ``concurrency`` requests in flight: requests x
    mean latency / (concurrency x window). Near 1 means no client overhead between requests."""
    return run["requests"] * run["meanLatencySeconds"] / (concurrency * run["seconds"])


def compare(ours: list[dict], peer: list[dict], concurrency: int) -> dict:
    """Tokens/s of both tools, and the same load's server speed (mean latency) to tell a measuring
    difference (busy share, token counts) from the server being slower in one tool's turn."""
    ours_tps = statistics.fmean(r["tokensPerSecond"] for r in ours)
    peer_tps = statistics.fmean(r["tokensPerSecond"] for r in peer)
    difference = (ours_tps - peer_tps) / peer_tps
    for run in ours + peer:
        run["busyShare"] = busy_share(run, concurrency)
    return {"oursTokensPerSecond": ours_tps, "aiperfTokensPerSecond": peer_tps, "relativeDifference": difference,
            "withinTolerance": abs(difference) <= AGREEMENT,
            "oursClientCpuSeconds": statistics.fmean(r["clientCpuSeconds"] for r in ours),
            "aiperfClientCpuSeconds": statistics.fmean(r["clientCpuSeconds"] for r in peer),
            "oursMeanLatencySeconds": statistics.fmean(r["meanLatencySeconds"] for r in ours),
            "aiperfMeanLatencySeconds": statistics.fmean(r["meanLatencySeconds"] for r in peer),
            "oursOutputTokens": [r["outputTokens"] for r in ours],
            "aiperfOutputTokens": [r["outputTokens"] for r in peer],
            "oursRounds": ours, "aiperfRounds": peer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Triton server (default: start the reference one with SmolLM2)")
    parser.add_argument("--metrics-url", help="the server's metrics URL, for its own view of the requests")
    parser.add_argument("--model", default="ensemble")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the SmolLM2 test model)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=6, help="measured requests per run")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up requests per run (not measured)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per tool")
    parser.add_argument("--aiperf", help="path to an aiperf executable (default: its own cached venv)")
    parser.add_argument("--output", help="also write the comparison as JSON here")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not split CPUs between the started server and the clients")
    args = parser.parse_args()
    # A terminated run still stops the server it started (the ExitStack below unwinds).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    binary = aiperf_binary(args.aiperf)
    prompts = load_prompts()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url, tokenizer, metrics_url = args.url, args.tokenizer, args.metrics_url
        if not url or not tokenizer:
            from medusa_runtime.tuning.smollm2 import cached_model_dir

            model_dir = cached_model_dir()
            tokenizer = tokenizer or str(model_dir)
        if not url:
            sys.path.insert(0, str(ROOT / "tests"))
            from fixtures.triton import start_tritonserver
            from medusa_runtime.serving.triton_repo import write_reference_repository

            repository = work / "repository"
            write_reference_repository(repository, base_dir=model_dir, device="cpu")
            server = stack.enter_context(start_tritonserver(repository))
            url, metrics_url = server.http_url, server.metrics_url
            cpus = sorted(os.sched_getaffinity(0))
            if args.pin and len(cpus) >= 2:
                # The server gets the first CPU, both clients (and this script) the others, so a
                # client's own CPU use cannot slow the CPU-bound server it measures.
                pin_process_tree(server.process.pid, {cpus[0]})
                os.sched_setaffinity(0, set(cpus[1:]))
                print(f"server pinned to CPU {cpus[0]}, clients to {cpus[1:]}", file=sys.stderr)
        ours, peer = [], []
        for index in range(args.rounds):
            ours.append(measured(lambda: run_ours(url, args.model, tokenizer, prompts, args, work), metrics_url,
                                 args.model))
            print(f"round {index + 1}: ours {ours[-1]['tokensPerSecond']:.2f} tokens/s", file=sys.stderr)
            peer.append(measured(lambda: run_aiperf(binary, url, args.model, tokenizer, prompts, args, work, index),
                                 metrics_url, args.model))
            print(f"round {index + 1}: aiperf {peer[-1]['tokensPerSecond']:.2f} tokens/s", file=sys.stderr)
    result = {"settings": {"concurrency": args.concurrency, "maxTokens": args.max_tokens, "requests": args.requests,
                           "warmup": args.warmup, "rounds": args.rounds, "prompts": len(prompts),
                           "aiperf": AIPERF_VERSION, "pinned": bool(args.pin and not args.url)},
              **compare(ours, peer, args.concurrency)}
    text = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    print(f"ours {result['oursTokensPerSecond']:.2f} vs aiperf {result['aiperfTokensPerSecond']:.2f} tokens/s: "
          f"{result['relativeDifference']:+.1%} ({'within' if result['withinTolerance'] else 'outside'} "
          f"{AGREEMENT:.0%})", file=sys.stderr)


if __name__ == "__main__":
    main()
