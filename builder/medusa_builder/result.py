"""The small JSON document every step leaves behind: the contract between Jobs and the operator.

A step writes it to the container's termination log (read back by the operator from the pod
status) and optionally to a file. Kubernetes keeps at most 4096 bytes of a termination message,
so the document is shrunk to fit: large values are dropped from ``result`` before the message
is cut. This module uses the standard library only, so the operator can parse results without
the builder's dependencies.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
TERMINATION_LOG = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4096


@dataclass
class StepResult:
    step: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_kind: str | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": SCHEMA_VERSION, "step": self.step, "ok": self.ok}
        if self.ok:
            doc["result"] = self.result
        else:
            doc["error"] = {"kind": self.error_kind or "internal", "message": self.error_message or ""}
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


# What the operator reads from each step's result, by the command that wrote it: a field's
# type, a list's item type, an object's own fields. A field may be absent or null; fields not
# listed are carried but not read.
_NUMBER = (int, float)
_TOPIC = {"topic": str, "tokensPerSecond": _NUMBER, "baseTokensPerSecond": _NUMBER, "speedup": _NUMBER}
_FAILURE = {"threshold": str, "measured": _NUMBER, "required": _NUMBER, "message": str}
RESULT_FIELDS: dict[str, dict[str, Any]] = {
    "build": {"cacheKey": str, "cacheHit": bool, "engineUri": str, "buildSeconds": _NUMBER, "numHeads": int,
              "numLayers": int, "treeSize": int, "tree": [[int]], "baseOnly": bool},
    "package": {"repositoryUri": str},
    "validate": {"passed": bool, "accuracy": _NUMBER, "baseAccuracy": _NUMBER, "tokensPerSecond": _NUMBER,
                 "baseTokensPerSecond": _NUMBER, "speedup": _NUMBER, "meanAcceptedTokens": _NUMBER,
                 "perTopic": [_TOPIC], "failures": [_FAILURE], "reportUri": str},
}
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
    if isinstance(expected, dict):
        if not isinstance(value, dict):
            return f"{where} must be an object, not {json.dumps(value)[:60]}"
        return next((p for key, kind in expected.items()
                     if (p := _type_problem(value.get(key), kind, f"{where}.{key}")) is not None), None)
    # bool is an int to Python, never to JSON readers
    fits = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
    return None if fits else f"{where} must be {_TYPE_NAMES[expected]}, not {json.dumps(value)[:60]}"


def check_result(res: StepResult) -> None:
    """Raise ResultTypeError, naming the field, when a result field has the wrong type."""
    problem = _type_problem(res.result, RESULT_FIELDS.get(res.step, {}), "result")
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
        error_kind=None if ok else str(error.get("kind", "internal")),
        error_message=None if ok else str(error.get("message", "")),
    )
