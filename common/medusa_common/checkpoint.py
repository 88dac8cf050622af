"""Reading base-model configs and Medusa head checkpoints in every published layout.

Head layouts (tensor names after an optional ``medusa_heads.``/``medusa_head.`` prefix):

- per-head output layer (original Medusa): ``{h}.{l}.linear.weight`` [hidden, hidden],
  ``{h}.{l}.linear.bias`` [hidden] for each of L residual layers, and ``{h}.{L}.weight``
  [vocab, hidden];
- shared lm_head ("version 2"): the same residual layers without ``{h}.{L}.weight``; the heads
  reuse the base model's lm_head;
- ModelOpt: the first layout under a ``medusa_heads.`` prefix, inside the model's own
  safetensors, possibly FP8 with ``weight_scale``/``input_scale`` tensors.

Files are ``medusa_lm_head.safetensors`` or ``medusa_lm_head.pt`` (or any ``*.safetensors``
holding ``medusa_heads.`` tensors). Head and layer counts come from the tensors: published
configs under-report them. Inspection reads safetensors headers only (no tensor data, no torch),
so the operator's side and the builder's CPU steps can run it; a ``.pt`` checkpoint is a pickle
and needs torch, imported only when one is read. Loading the tensors themselves is the runtime's
(``medusa_runtime.engine.checkpoint``).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import UserError

log = logging.getLogger(__name__)

SUPPORTED_FAMILIES = ("llama", "mistral", "mixtral", "qwen2")
# TensorRT-LLM's Medusa converter knows llama, mixtral and qwen2; Mistral is Llama-shaped.
TRTLLM_MODEL_TYPE = {"llama": "llama", "mistral": "llama", "mixtral": "mixtral", "qwen2": "qwen2"}
HEAD_FILES = ("medusa_lm_head.safetensors", "medusa_lm_head.pt")
PREFIXES = ("medusa_heads.", "medusa_head.")
MAX_HEADER_BYTES = 100 * 1024 * 1024

SAFETENSORS_DTYPES = {
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I8": "int8", "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool",
}
READABLE_HEAD_DTYPES = {"float16", "bfloat16", "float32"}
FP8_DTYPES = {"float8_e4m3fn", "float8_e5m2"}

RESIDUAL_TENSOR = re.compile(r"^(\d+)\.(\d+)\.linear\.(weight|bias)$")
OUTPUT_TENSOR = re.compile(r"^(\d+)\.(\d+)\.weight$")
_SCALE = re.compile(r"^(\d+)\.(\d+)\.(?:linear\.)?(weight_scale|input_scale|weight_scale_2|pre_quant_scale)$")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass
class BaseInfo:
    path: str
    family: str
    architectures: list[str]
    hidden_size: int
    vocab_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    tie_word_embeddings: bool
    dtype: str | None

    @property
    def trtllm_model_type(self) -> str:
        return TRTLLM_MODEL_TYPE.get(self.family, self.family)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "family": self.family, "architectures": self.architectures,
            "hiddenSize": self.hidden_size, "vocabSize": self.vocab_size, "numLayers": self.num_layers,
            "numAttentionHeads": self.num_attention_heads, "numKeyValueHeads": self.num_key_value_heads,
            "intermediateSize": self.intermediate_size, "tieWordEmbeddings": self.tie_word_embeddings,
            "dtype": self.dtype, "supported": self.family in SUPPORTED_FAMILIES,
        }


@dataclass
class HeadsInfo:
    path: str
    files: list[str]
    file_format: str  # safetensors | pt
    layout: str  # per-head-output | shared-lm-head | modelopt
    prefix: str
    num_heads: int
    num_layers: int
    hidden_size: int
    vocab_size: int | None
    dtype: str
    has_bias: bool
    quantized: bool
    config_claims: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_output_layer(self) -> bool:
        return self.vocab_size is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "files": self.files, "fileFormat": self.file_format, "layout": self.layout,
            "numHeads": self.num_heads, "numLayers": self.num_layers, "hiddenSize": self.hidden_size,
            "vocabSize": self.vocab_size, "hasOutputLayer": self.has_output_layer, "dtype": self.dtype,
            "hasBias": self.has_bias, "quantized": self.quantized, "configClaims": self.config_claims,
        }


# --- base model ------------------------------------------------------------------------------


def _read_config(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; the {what} must be a Hugging Face folder with a config.json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); repair or re-download the {what}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} is not a JSON object; repair or re-download the {what}")
    return doc


def _int_field(config: dict[str, Any], name: str, path: Path, default: int | None = None) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{path} has no positive integer {name!r} (found {value!r}); the base config is incomplete")
    return value


def read_base_config(base_dir: str | Path) -> BaseInfo:
    """Read the base model's config.json (text config for multimodal wrappers)."""
    folder = Path(base_dir)
    if not folder.is_dir():
        raise UserError(f"the base model folder {folder} does not exist; fetch the base model first")
    path = folder / "config.json"
    config = _read_config(path, "base model")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    attention_heads = _int_field(text, "num_attention_heads", path)
    return BaseInfo(
        path=str(folder),
        family=str(text.get("model_type") or config.get("model_type") or "unknown"),
        architectures=list(config.get("architectures") or []),
        hidden_size=_int_field(text, "hidden_size", path),
        vocab_size=_int_field(text, "vocab_size", path),
        num_layers=_int_field(text, "num_hidden_layers", path),
        num_attention_heads=attention_heads,
        num_key_value_heads=_int_field(text, "num_key_value_heads", path, default=attention_heads),
        intermediate_size=_int_field(text, "intermediate_size", path),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        dtype=text.get("torch_dtype") or config.get("torch_dtype"),
    )


# --- tensor metadata -------------------------------------------------------------------------


def read_safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes and shapes from a safetensors header; checks the file is complete."""
    file = Path(path)
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise UserError(f"{file} is truncated ({size} bytes, no safetensors header); download it again")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise UserError(f"{file} is truncated or not a safetensors file: its header claims {header_len} "
                                f"bytes but the file has {size}; download it again")
            header = json.loads(fh.read(header_len))
    except FileNotFoundError:
        raise UserError(f"{file} is missing; fetch the checkpoint again") from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{file} has a corrupt safetensors header; download it again") from None
    if not isinstance(header, dict):
        raise UserError(f"{file} has a corrupt safetensors header; download it again")
    header.pop("__metadata__", None)
    tensors: dict[str, TensorInfo] = {}
    data_end = 0
    for name, entry in header.items():
        try:
            start, end = entry["data_offsets"]
            tensors[name] = TensorInfo(SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"].lower()),
                                       tuple(int(d) for d in entry["shape"]))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{file} has a corrupt entry for tensor {name!r}; download it again") from None
        data_end = max(data_end, int(end))
    available = size - 8 - header_len
    if data_end > available:
        raise UserError(f"{file} is truncated: its tensors need {data_end} bytes of data but the file holds "
                        f"{available}; download it again")
    return tensors


def require_torch():
    try:
        import torch
    except ImportError:
        raise UserError("reading .pt checkpoints needs PyTorch, which this image lacks; "
                        "convert the heads to safetensors") from None
    return torch


def load_pt_state(path: Path) -> dict[str, Any]:
    torch = require_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; fetch the checkpoint again") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"{path} cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
                        "download it again or export it as safetensors") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict of tensors; export the heads' state_dict()")
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def _pt_header(path: Path) -> dict[str, TensorInfo]:
    return {name: TensorInfo(str(t.dtype).removeprefix("torch."), tuple(t.shape))
            for name, t in load_pt_state(path).items()}


def find_head_files(heads_dir: str | Path) -> tuple[list[Path], str]:
    """The checkpoint files holding the heads and their format (safetensors or pt)."""
    folder = Path(heads_dir)
    if not folder.is_dir():
        raise UserError(f"the heads folder {folder} does not exist; fetch the Medusa heads first")
    for name in HEAD_FILES:
        if (folder / name).is_file():
            return [folder / name], name.rsplit(".", 1)[1]
    candidates = sorted(folder.glob("*.safetensors"))
    with_heads = [p for p in candidates if any(n.startswith(PREFIXES) for n in read_safetensors_header(p))]
    if with_heads:
        return with_heads, "safetensors"
    pts = sorted(folder.glob("*.pt"))
    if len(pts) == 1:
        return pts, "pt"
    raise UserError(f"no Medusa head checkpoint in {folder}: expected medusa_lm_head.safetensors, "
                    "medusa_lm_head.pt, or safetensors files with medusa_heads.* tensors")


def _head_tensor_table(files: list[Path], file_format: str) -> dict[str, TensorInfo]:
    table: dict[str, TensorInfo] = {}
    for file in files:
        table.update(read_safetensors_header(file) if file_format == "safetensors" else _pt_header(file))
    return table


def canonical_names(names: list[str]) -> tuple[str, dict[str, str]]:
    """Pick the prefix the head tensors use; returns it and canonical name -> stored name."""
    for prefix in PREFIXES:
        if any(n.startswith(prefix) for n in names):
            return prefix, {n[len(prefix):]: n for n in names if n.startswith(prefix)}
    return "", {n: n for n in names}


def _dominant(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0] if values else "unknown"


def describe_heads(heads_dir: str | Path) -> HeadsInfo:
    """Detect the layout and count heads and layers from the tensors; reads no tensor data."""
    folder = Path(heads_dir)
    files, file_format = find_head_files(folder)
    table = _head_tensor_table(files, file_format)
    prefix, canonical = canonical_names(sorted(table))
    residual: dict[tuple[int, int], dict[str, TensorInfo]] = {}
    outputs: dict[tuple[int, int], TensorInfo] = {}
    scales = 0
    for name, stored in canonical.items():
        info = table[stored]
        if m := RESIDUAL_TENSOR.match(name):
            residual.setdefault((int(m[1]), int(m[2])), {})[m[3]] = info
        elif m := OUTPUT_TENSOR.match(name):
            outputs[(int(m[1]), int(m[2]))] = info
        elif _SCALE.match(name):
            scales += 1
    if not residual:
        raise UserError(f"{files[0]} holds no Medusa head tensors (names like 0.0.linear.weight); "
                        "check that it is a Medusa head checkpoint")
    heads = sorted({h for h, _ in residual})
    if heads != list(range(len(heads))):
        raise UserError(f"the heads in {folder} are numbered {heads}; expected 0 to {len(heads) - 1} without gaps")
    layers_per_head = {h: sorted(l for hh, l in residual if hh == h) for h in heads}
    num_layers = len(layers_per_head[0])
    for h, layers in layers_per_head.items():
        if layers != list(range(num_layers)):
            raise UserError(f"head {h} in {folder} has residual layers {layers} but head 0 has "
                            f"{list(range(num_layers))}; every head needs the same layers")
    hidden_sizes = set()
    for (h, l), parts in sorted(residual.items()):
        weight = parts.get("weight")
        if weight is None:
            raise UserError(f"head {h} layer {l} in {folder} has no linear.weight tensor; the checkpoint is incomplete")
        if len(weight.shape) != 2 or weight.shape[0] != weight.shape[1]:
            raise UserError(f"head {h} layer {l} has a {list(weight.shape)} weight but residual layers must be "
                            "square [hidden, hidden]; the checkpoint is not in a Medusa layout")
        hidden_sizes.add(weight.shape[1])
    if len(hidden_sizes) != 1:
        raise UserError(f"the heads in {folder} mix hidden sizes {sorted(hidden_sizes)}; the checkpoint is inconsistent")
    hidden = hidden_sizes.pop()
    has_bias = all("bias" in parts for parts in residual.values())
    output_heads = sorted(h for h, l in outputs if l == num_layers)
    vocab = None
    if output_heads:
        if output_heads != heads:
            raise UserError(f"only heads {output_heads} of {heads} in {folder} have an output layer; "
                            "every head needs one or none")
        vocab_sizes = {outputs[(h, num_layers)].shape[0] for h in heads}
        out_hidden = {outputs[(h, num_layers)].shape[-1] for h in heads}
        if len(vocab_sizes) != 1 or out_hidden != {hidden}:
            raise UserError(f"the heads' output layers in {folder} have shapes that disagree "
                            f"(vocabulary {sorted(vocab_sizes)}, hidden {sorted(out_hidden)} vs {hidden})")
        vocab = vocab_sizes.pop()
    dtype = _dominant([parts["weight"].dtype for parts in residual.values()])
    layout = "modelopt" if prefix == "medusa_heads." and file_format == "safetensors" and \
        not (folder / HEAD_FILES[0]).is_file() else ("per-head-output" if vocab else "shared-lm-head")
    info = HeadsInfo(path=str(folder), files=[f.name for f in files], file_format=file_format, layout=layout,
                     prefix=prefix, num_heads=len(heads), num_layers=num_layers, hidden_size=hidden,
                     vocab_size=vocab, dtype=dtype, has_bias=has_bias, quantized=scales > 0)
    _compare_config_claims(folder, info)
    return info


def _compare_config_claims(folder: Path, info: HeadsInfo) -> None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        info.warnings.append(f"{config_path} is not valid JSON; it was ignored (counts come from the tensors)")
        return
    medusa = config.get("medusa") if isinstance(config.get("medusa"), dict) else {}
    claims = {
        "numHeads": config.get("medusa_num_heads", medusa.get("num_medusa_heads")),
        "numLayers": config.get("medusa_num_layers", medusa.get("num_medusa_layers")),
        "baseModel": config.get("base_model_name_or_path"),
    }
    info.config_claims = {k: v for k, v in claims.items() if v is not None}
    for key, actual in (("numHeads", info.num_heads), ("numLayers", info.num_layers)):
        claimed = info.config_claims.get(key)
        if claimed is not None and claimed != actual:
            noun = "heads" if key == "numHeads" else "layers per head"
            info.warnings.append(f"config.json claims {claimed} {noun} but the tensors hold {actual}; "
                                 f"using {actual}")


# --- compatibility ---------------------------------------------------------------------------


def compatibility_problems(base: BaseInfo, heads: HeadsInfo, expected_heads: int | None = None,
                           expected_layers: int | None = None) -> list[str]:
    """Every reason the heads cannot serve with this base model, one sentence each."""
    problems = []
    if base.family not in SUPPORTED_FAMILIES:
        problems.append(f"the base model family {base.family!r} is not supported; supported families are "
                        f"{', '.join(SUPPORTED_FAMILIES)}.")
    if heads.hidden_size != base.hidden_size:
        problems.append(f"the heads have hidden size {heads.hidden_size} but the base model has hidden size "
                        f"{base.hidden_size}.")
    if heads.vocab_size is not None and heads.vocab_size != base.vocab_size:
        problems.append(f"the heads' output layers have vocabulary size {heads.vocab_size} but the base model "
                        f"has vocabulary size {base.vocab_size}.")
    if expected_heads is not None and expected_heads != heads.num_heads:
        problems.append(f"the spec declares {expected_heads} heads but the checkpoint holds {heads.num_heads} heads.")
    if expected_layers is not None and expected_layers != heads.num_layers:
        problems.append(f"the spec declares {expected_layers} residual layers per head but the checkpoint's heads "
                        f"have {heads.num_layers}.")
    if heads.dtype in FP8_DTYPES and not heads.quantized:
        problems.append(f"the heads are stored as {heads.dtype} without scaling factors; export them with their "
                        "weight_scale and input_scale tensors or in float16.")
    elif heads.dtype not in READABLE_HEAD_DTYPES | FP8_DTYPES:
        problems.append(f"the heads are stored as {heads.dtype}, which cannot be converted; export them as "
                        "float16, bfloat16 or float32.")
    return problems


def inspect(base_dir: str | Path, heads_dir: str | Path, expected_heads: int | None = None,
            expected_layers: int | None = None) -> dict[str, Any]:
    """Full report; raises UserError (carrying the report) when the pair is incompatible."""
    base = read_base_config(base_dir)
    heads = describe_heads(heads_dir)
    problems = compatibility_problems(base, heads, expected_heads, expected_layers)
    report = {
        "base": base.to_json(),
        "heads": heads.to_json(),
        "numHeads": heads.num_heads,
        "numLayers": heads.num_layers,
        "compatible": not problems,
        "problems": problems,
        "warnings": heads.warnings,
    }
    for warning in heads.warnings:
        log.warning("%s", warning)
    if problems:
        error = UserError(" ".join(p[0].upper() + p[1:] for p in problems))
        error.result = {"compatible": False, "problems": problems, "numHeads": heads.num_heads,
                        "numLayers": heads.num_layers}
        raise error
    return report


def inspect_base(base_dir: str | Path) -> dict[str, Any]:
    """Report on a base model alone (for the baseline engine); refuses unsupported families."""
    base = read_base_config(base_dir)
    if base.family not in SUPPORTED_FAMILIES:
        raise UserError(f"the base model family {base.family!r} is not supported; supported families are "
                        f"{', '.join(SUPPORTED_FAMILIES)}")
    return {"base": base.to_json(), "heads": None, "numHeads": 0, "numLayers": 0, "compatible": True,
            "problems": [], "warnings": []}
