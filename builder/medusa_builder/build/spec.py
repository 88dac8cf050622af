"""What shapes an engine: the settings a build takes and that its cache key covers."""

from __future__ import annotations

from dataclasses import dataclass

from medusa_common.contract import UserError

DTYPES = ("float16", "bfloat16")
QUANTIZATIONS = ("none", "fp8")
TP_SIZES = (1, 2, 4, 8)
BACKENDS = ("tensorrt-llm", "reference")


@dataclass(frozen=True)
class EngineSpec:
    """Everything that shapes an engine (and therefore its cache key)."""

    backend: str = "tensorrt-llm"
    dtype: str = "float16"
    quantization: str = "none"
    tp_size: int = 1
    max_batch_size: int = 8
    max_input_len: int = 4096
    max_output_len: int = 1024
    gpu_product: str | None = None

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise UserError(f"unsupported dtype {self.dtype!r}; use float16 or bfloat16")
        if self.quantization not in QUANTIZATIONS:
            raise UserError(f"unsupported quantization {self.quantization!r}; use none or fp8")
        if self.tp_size not in TP_SIZES:
            raise UserError(f"tensor parallel size {self.tp_size} is not supported; use 1, 2, 4 or 8")
        for name in ("max_batch_size", "max_input_len", "max_output_len"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")

    @property
    def max_seq_len(self) -> int:
        return self.max_input_len + self.max_output_len
