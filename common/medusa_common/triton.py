"""Facts about Triton Inference Server that the operator, the builder and the runtime share."""

from __future__ import annotations

import json
from typing import Any

# Triton's default ports: the serving pods expose them and the validate step dials them.
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002


def pbtxt_string(value: Any) -> str:
    """A protobuf text-format string literal for config.pbtxt (JSON's escapes are valid there)."""
    return json.dumps(str(value), ensure_ascii=True)
