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
        """Serialise within the termination-message limit, dropping the largest fields first."""
        doc = self.to_dict()
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        body = doc.get("result", {})
        while len(text.encode()) > MAX_MESSAGE_BYTES and body:
            largest = max(body, key=lambda k: len(json.dumps(body[k])))
            del body[largest]
            doc["truncated"] = True
            text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        if len(text.encode()) > MAX_MESSAGE_BYTES and "error" in doc:
            doc["error"]["message"] = doc["error"]["message"][:1000]
            text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        return text


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
