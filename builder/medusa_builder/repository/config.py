"""The check every generated config.pbtxt passes: it parses against Triton's model configuration."""

from __future__ import annotations

from medusa_common.contract import StepError


class TemplateError(StepError):
    """A generated config does not parse against Triton's schema: a defect of this package."""


def parse_model_config(text: str, origin: str = "config.pbtxt"):
    """Parse a config.pbtxt into Triton's ModelConfig message; raises TemplateError when it does not parse."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TemplateError(f"{origin} does not match Triton's model configuration schema: {exc}") from None
