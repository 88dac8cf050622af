"""The contract between the operator and its Jobs: error kinds, exit codes and step results.

Every ``medusa-builder`` step ends by writing one small JSON document, its result, to the
container's termination log; the operator reads it back from the pod status. Kubernetes keeps
at most 4096 bytes of a termination message, so the document is shrunk to fit: large values are
dropped from ``result`` before the message is cut. The fields the operator reads are declared
once, as the typed results below (``BuildResult``, ``PackageResult``, ``ValidateResult``); the
type check and the operator's readers both derive from them. Standard library only: the operator,
the builder and the serving runtime all import this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TERMINATION_LOG = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4096
# Where a step's pod mounts each PersistentVolumeClaim a pvc:// URI names (<root>/<claim>).
PVC_MOUNT_ROOT = "/mnt/pvc"


# --- error kinds and exit codes ---------------------------------------------------------------


class ErrorKind(str, enum.Enum):
    """Why a step failed, as its result names it; the operator decides on retries from it."""

    USER = "user"  # the input is wrong: the same spec fails the same way again
    VALIDATION = "validation"  # the model ran but missed a threshold: a verdict, not a fault
    INFRASTRUCTURE = "infrastructure"  # store, network or server trouble: a retry may pass
    INTERNAL = "internal"  # a defect in the step itself

    def __str__(self) -> str:
        return self.value


EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_INFRA_ERROR = 3
EXIT_VALIDATION_FAILED = 4
EXIT_CODES = {ErrorKind.INTERNAL: EXIT_INTERNAL_ERROR, ErrorKind.USER: EXIT_USER_ERROR,
              ErrorKind.INFRASTRUCTURE: EXIT_INFRA_ERROR, ErrorKind.VALIDATION: EXIT_VALIDATION_FAILED}
# Failures that no retry of the same spec can change: a Job's pod failure policy stops on them.
FINAL_KINDS = (ErrorKind.USER, ErrorKind.VALIDATION)
FINAL_EXIT_CODES = tuple(EXIT_CODES[kind] for kind in FINAL_KINDS)


class StepError(Exception):
    """Base for errors a step reports in its result instead of a traceback."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]


class UserError(StepError):
    """The input is wrong: a person has to change something before a retry can succeed."""

    kind = ErrorKind.USER


class InfraError(StepError):
    """Something outside the input failed (network, storage, server): a retry may succeed."""

    kind = ErrorKind.INFRASTRUCTURE


class ValidationFailed(StepError):
    """The candidate missed a threshold; the result still carries every measurement."""

    kind = ErrorKind.VALIDATION

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


# --- content keys -----------------------------------------------------------------------------

ENGINE_KEY_LENGTH = 24


def content_key(payload: Any, length: int = ENGINE_KEY_LENGTH) -> str:
    """A stable hex key over a JSON-able payload (sorted keys, compact): the engine cache key and
    the revision name both come from here, so an engine built by hand is found by the operator
    when the inputs match."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


# --- typed results ----------------------------------------------------------------------------

_NUMBER = (int, float)


def _field(name: str, kind: Any, default: Any = None) -> Any:
    """A result field: its JSON name and the shape the operator relies on (a type, a list of
    one shape, or a nested result class)."""
    return field(default=default, metadata={"json": name, "kind": kind})


class _Typed:
    """JSON <-> typed fields for the result classes; absent and null fields read as None."""

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Any:
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = body.get(f.metadata["json"])
            kind = f.metadata["kind"]
            if isinstance(kind, list) and isinstance(kind[0], type) and issubclass(kind[0], _Typed) and value:
                value = [kind[0].from_dict(item) for item in value]
            elif isinstance(kind, list) and value is not None:
                value = [list(item) if isinstance(item, list) else item for item in value]
            values[f.name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, list):
                value = [item.to_dict() if isinstance(item, _Typed) else item for item in value]
            doc[f.metadata["json"]] = value
        return doc


@dataclass(frozen=True)
class BuildResult(_Typed):
    """What ``build`` (and ``build --lookup-only``) reports about the engine."""

    cache_key: str | None = _field("cacheKey", str)
    cache_hit: bool | None = _field("cacheHit", bool)
    engine_uri: str | None = _field("engineUri", str)
    build_seconds: float | None = _field("buildSeconds", _NUMBER)
    num_heads: int | None = _field("numHeads", int)
    num_layers: int | None = _field("numLayers", int)
    tree_size: int | None = _field("treeSize", int)
    tree: list[list[int]] | None = _field("tree", [[int]])
    base_only: bool | None = _field("baseOnly", bool)
    tensorrt_llm_version: str | None = _field("tensorrtLlmVersion", str)

    @property
    def num_nodes(self) -> int | None:
        """The tree's size: counted from the tree when the result carries it."""
        return len(self.tree) if self.tree is not None else self.tree_size


@dataclass(frozen=True)
class PackageResult(_Typed):
    """Where ``package`` wrote the Triton model repository."""

    repository_uri: str | None = _field("repositoryUri", str)


@dataclass(frozen=True)
class TopicSpeed(_Typed):
    topic: str | None = _field("topic", str)
    tokens_per_second: float | None = _field("tokensPerSecond", _NUMBER)
    base_tokens_per_second: float | None = _field("baseTokensPerSecond", _NUMBER)
    speedup: float | None = _field("speedup", _NUMBER)


@dataclass(frozen=True)
class MissedThreshold(_Typed):
    threshold: str | None = _field("threshold", str)
    measured: float | None = _field("measured", _NUMBER)
    required: float | None = _field("required", _NUMBER)
    message: str | None = _field("message", str)


@dataclass(frozen=True)
class ValidateResult(_Typed):
    """The verdict and measurements of ``validate``."""

    passed: bool | None = _field("passed", bool)
    accuracy: float | None = _field("accuracy", _NUMBER)
    base_accuracy: float | None = _field("baseAccuracy", _NUMBER)
    tokens_per_second: float | None = _field("tokensPerSecond", _NUMBER)
    base_tokens_per_second: float | None = _field("baseTokensPerSecond", _NUMBER)
    speedup: float | None = _field("speedup", _NUMBER)
    mean_accepted_tokens: float | None = _field("meanAcceptedTokens", _NUMBER)
    per_topic: list[TopicSpeed] | None = _field("perTopic", [TopicSpeed])
    failures: list[MissedThreshold] | None = _field("failures", [MissedThreshold])
    report_uri: str | None = _field("reportUri", str)


# The typed result of each command whose result the operator reads.
RESULT_TYPES: dict[str, type[_Typed]] = {"build": BuildResult, "package": PackageResult, "validate": ValidateResult}


@dataclass
class StepResult:
    step: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_kind: str | None = None
    error_message: str | None = None

    def typed(self, kind: type[Any]) -> Any:
        """The result's fields the operator reads, as ``kind`` (BuildResult, ...)."""
        return kind.from_dict(self.result)

    @property
    def final(self) -> bool:
        """A failure no retry of the same spec can change."""
        return not self.ok and self.error_kind in FINAL_KINDS

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": SCHEMA_VERSION, "step": self.step, "ok": self.ok}
        if self.ok:
            doc["result"] = self.result
        else:
            kind = str(self.error_kind or ErrorKind.INTERNAL)
            doc["error"] = {"kind": kind, "message": self.error_message or ""}
            if self.result:
                doc["result"] = self.result
        return doc

    def to_message(self) -> str:
        """Serialise within the termination-message limit (bytes, as the kubelet counts them),
        dropping the largest result fields first, then shortening the error message."""
        doc = self.to_dict()
        body = doc.get("result", {})
        while len(_encode(doc)) > MAX_MESSAGE_BYTES and body:
            largest = max(body, key=lambda k: len(json.dumps(body[k])))
            del body[largest]
            doc["truncated"] = True
        if len(_encode(doc)) > MAX_MESSAGE_BYTES and "error" in doc:
            # Non-ASCII text grows when encoded (up to 12 bytes a character as JSON escapes):
            # keep the longest prefix of the message whose document fits.
            message, low, high = doc["error"]["message"], 0, len(doc["error"]["message"])
            while low < high:
                middle = (low + high + 1) // 2
                doc["error"]["message"] = message[:middle] + "..."
                low, high = (middle, high) if len(_encode(doc)) <= MAX_MESSAGE_BYTES else (low, middle - 1)
            doc["error"]["message"] = message[:low] + "..."
        return _encode(doc).decode()


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def write_result(res: StepResult, result_file: str | None = None) -> None:
    """Write the result to the termination log when present and to ``result_file`` if given."""
    message = res.to_message()
    targets = [p for p in (result_file,) if p]
    if os.path.exists(TERMINATION_LOG):
        targets.append(TERMINATION_LOG)
    for path in targets:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(message)


class ResultParseError(ValueError):
    """The termination message is missing or is not a step result."""


class ResultTypeError(ResultParseError):
    """A step result whose fields do not have the types the operator relies on."""


_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", _NUMBER: "a number"}


def _type_problem(value: Any, expected: Any, where: str) -> str | None:
    """Why ``value`` is not of the ``expected`` shape, or None; null is always accepted."""
    if value is None:
        return None
    if isinstance(expected, list):
        if not isinstance(value, list):
            return f"{where} must be a list, not {json.dumps(value)[:60]}"
        return next((p for i, item in enumerate(value)
                     if (p := _type_problem(item, expected[0], f"{where}[{i}]")) is not None), None)
    if isinstance(expected, type) and issubclass(expected, _Typed):
        if not isinstance(value, dict):
            return f"{where} must be an object, not {json.dumps(value)[:60]}"
        return next((p for f in dataclasses.fields(expected)  # type: ignore[arg-type]
                     if (p := _type_problem(value.get(f.metadata["json"]), f.metadata["kind"],
                                            f"{where}.{f.metadata['json']}")) is not None), None)
    # bool is an int to Python, never to JSON readers
    fits = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
    return None if fits else f"{where} must be {_TYPE_NAMES[expected]}, not {json.dumps(value)[:60]}"


def check_result(res: StepResult) -> None:
    """Raise ResultTypeError, naming the field, when a result field has the wrong type."""
    kind = RESULT_TYPES.get(res.step)
    problem = _type_problem(res.result, kind, "result") if kind is not None else None
    if problem is not None:
        raise ResultTypeError(f"the {res.step} step's result cannot be used: {problem}")


def parse_message(message: str | None) -> StepResult:
    """Parse a termination message defensively; raises ResultParseError with a readable reason."""
    if message is None or not message.strip():
        raise ResultParseError("the step left no result (empty termination message)")
    try:
        doc = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ResultParseError(f"the step's result is not JSON ({exc.msg} at offset {exc.pos})") from None
    if not isinstance(doc, dict):
        raise ResultParseError("the step's result is not a JSON object")
    version = doc.get("schemaVersion")
    if version != SCHEMA_VERSION:
        raise ResultParseError(f"the step's result has schemaVersion {version!r}, expected {SCHEMA_VERSION}")
    step, ok = doc.get("step"), doc.get("ok")
    if not isinstance(step, str) or not isinstance(ok, bool):
        raise ResultParseError("the step's result lacks a 'step' name or an 'ok' flag")
    body = doc.get("result") or {}
    if not isinstance(body, dict):
        raise ResultParseError("the step's 'result' field is not an object")
    error = doc.get("error") or {}
    if not isinstance(error, dict):
        raise ResultParseError("the step's 'error' field is not an object")
    return StepResult(
        step=step,
        ok=ok,
        result=body,
        error_kind=None if ok else str(error.get("kind", ErrorKind.INTERNAL)),
        error_message=None if ok else str(error.get("message", "")),
    )


# --- running a step ---------------------------------------------------------------------------

StepBody = Mapping[str, Any] | _Typed


def run_step(step: str, func: Callable[[argparse.Namespace], StepBody], args: argparse.Namespace) -> int:
    """Run one step: write its result document (success or a StepError's kind and message) and
    return the exit code that tells the Job whether a retry can help."""
    try:
        try:
            body = func(args)
        except PermissionError as exc:
            # A file or folder the step's user may not read or write: no retry changes that.
            where = exc.filename or "a file"
            raise UserError(f"permission denied on {where} ({exc.strerror or exc}) for uid {os.getuid()}: make it "
                            "readable (and, for outputs, writable) by the step's user or its group") from None
    except StepError as exc:
        log.error("%s failed (%s): %s", step, exc.kind, exc)
        res = StepResult(step=step, ok=False, error_kind=str(exc.kind), error_message=str(exc),
                         result=dict(getattr(exc, "result", None) or {}))
        write_result(res, getattr(args, "result", None))
        return exc.exit_code
    doc = body.to_dict() if isinstance(body, _Typed) else dict(body)
    write_result(StepResult(step=step, ok=True, result=doc), getattr(args, "result", None))
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, sort_keys=True))
    return EXIT_OK
