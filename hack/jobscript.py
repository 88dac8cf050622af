"""Simulated Job outcomes for the local cluster, where no builder container really runs.

kwok plays pod lifecycles (hack/kwok-stages.yaml): a pod annotated with
``kwok.medusa.dev/exit-code`` and ``kwok.medusa.dev/termination-message`` ends with them. The
``JobScripter`` watches the operator's Job pods in one namespace and annotates each with the
outcome scripted for its step (lookup, lookup-base, build, build-base, package, package-base,
validate). Default outcomes are plausible successful results derived from the pod's own
arguments (a lookup finds nothing in the store); tests replace them to script failures. The
e2e tests and the demo use it; both say the results are simulated.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable

from lightkube import Client
from lightkube.resources.core_v1 import Pod
from medusa_common.contract import (EXIT_CODES, EXIT_OK, BuildResult, ErrorKind, PackageResult, StepResult,
                                    TopicSpeed, ValidateResult)

STEP_LABEL = "medusa.dev/step"
EXIT_CODE = "kwok.medusa.dev/exit-code"
MESSAGE = "kwok.medusa.dev/termination-message"
DELAY = "kwok.medusa.dev/delay"


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None = None  # default: the exit code of the error's kind, or success
    result: BuildResult | PackageResult | ValidateResult | dict[str, Any] | None = None
    error: tuple[ErrorKind | str, str] | None = None  # (kind, message)
    raw_message: str | None = None  # sent as is (to test malformed results)
    delay_ms: int = 300
    hold: bool = False  # keep the pod running for an hour (a step that takes long)

    @property
    def code(self) -> int:
        if self.exit_code is not None:
            return self.exit_code
        return EXIT_CODES[ErrorKind(self.error[0])] if self.error is not None else EXIT_OK

    def message(self, step: str) -> str:
        """The termination message the step would write, through the contract's own codec."""
        if self.raw_message is not None:
            return self.raw_message
        body = self.result.to_dict() if hasattr(self.result, "to_dict") else dict(self.result or {})
        kind, text = self.error if self.error is not None else (None, None)
        return StepResult(step=step, ok=self.error is None, result=body,
                          error_kind=str(kind) if kind is not None else None, error_message=text).to_message()


def arg(pod: Pod, flag: str, default: str = "") -> str:
    args = pod.spec.containers[0].args or []
    return args[args.index(flag) + 1] if flag in args else default


def default_outcome(step: str, pod: Pod) -> Outcome:
    """A successful, plausible result for the step, read from the pod's arguments."""
    if step in ("lookup", "lookup-base"):
        return Outcome(result=BuildResult(cache_key=arg(pod, "--cache-key", "0" * 24), cache_hit=False))
    if step in ("build", "build-base"):
        key = arg(pod, "--cache-key", "0" * 24)
        artifacts = arg(pod, "--artifacts-uri", "s3://engines").rstrip("/")
        result = BuildResult(cache_key=key, cache_hit=False, engine_uri=f"{artifacts}/engines/{key}",
                             build_seconds=1834.0)
        if step == "build":
            result = replace(result, num_heads=3, num_layers=1, tree=[[0], [0, 0], [1], [0, 1], [0, 0, 0]])
        return Outcome(result=result)
    if step in ("package", "package-base"):
        return Outcome(result=PackageResult(repository_uri=arg(pod, "--output-uri", "s3://engines/repositories/x")))
    if step == "validate":
        return Outcome(result=ValidateResult(
            passed=True, accuracy=0.662, base_accuracy=0.665, tokens_per_second=191.0,
            base_tokens_per_second=92.4, speedup=2.07, mean_accepted_tokens=2.6,
            per_topic=[TopicSpeed(topic="coding", tokens_per_second=205.1, base_tokens_per_second=92.0, speedup=2.23),
                       TopicSpeed(topic="writing", tokens_per_second=177.0, base_tokens_per_second=92.8, speedup=1.91)],
            failures=[], report_uri=arg(pod, "--report-uri", "s3://engines/reports/x.json"),
        ))
    raise ValueError(f"unknown step {step}")


Script = Outcome | Callable[[Pod], Outcome]


def builder_command(step: str) -> str:
    """The medusa-builder command a step's Job runs (a lookup is `build --lookup-only`)."""
    return "build" if step.startswith("lookup") else step.removesuffix("-base")


class JobScripter:
    def __init__(self, client: Client, namespace: str, outcomes: dict[str, Script] | None = None,
                 interval: float = 0.2) -> None:
        self.client = client
        self.namespace = namespace
        self.outcomes: dict[str, Script] = dict(outcomes or {})
        self.interval = interval
        self.pods_seen: Counter[str] = Counter()  # step -> pods scripted
        self.errors: list[str] = []  # transient API errors met while polling
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-scripter", daemon=True)

    def script(self, step: str, outcome: Script) -> None:
        self.outcomes[step] = outcome

    def start(self) -> "JobScripter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "JobScripter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        """List the Job pods once, then follow a watch (a list per tick would cost the API server
        more than the operator under test at thousands of pods); list again after any error."""
        while not self._stop.is_set():
            try:
                listed = self.client.list(Pod, namespace=self.namespace, labels={STEP_LABEL: None})
                for pod in listed:
                    self._script(pod)
                for _, pod in self.client.watch(Pod, namespace=self.namespace, labels={STEP_LABEL: None},
                                                resource_version=listed.resourceVersion, server_timeout=5):
                    if self._stop.is_set():
                        return
                    self._script(pod)
            except Exception as exc:  # noqa: BLE001 - a slow API server must not end the scripting thread
                self.errors.append(repr(exc))
                self._stop.wait(self.interval)

    def _script(self, pod: Pod) -> None:
        if self._stop.is_set():
            return
        uid = pod.metadata.uid
        annotations = pod.metadata.annotations or {}
        if uid in self._done or EXIT_CODE in annotations or pod.metadata.deletionTimestamp:
            return
        if not pod.spec.nodeName:
            return  # not scheduled yet (or unschedulable): nothing runs
        step = pod.metadata.labels[STEP_LABEL]
        chosen = self.outcomes.get(step)
        outcome = chosen(pod) if callable(chosen) else chosen or default_outcome(step, pod)
        self._done.add(uid)
        self.pods_seen[step] += 1
        delay = 3_600_000 if outcome.hold else outcome.delay_ms
        self.client.patch(Pod, pod.metadata.name, {"metadata": {"annotations": {
            EXIT_CODE: str(outcome.code), MESSAGE: outcome.message(builder_command(step)),
            DELAY: f"{delay}ms"}}}, namespace=self.namespace)  # kwok reads a Go duration: a bare number is ignored
