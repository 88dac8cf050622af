"""The reference runtime's repository, written by medusa_runtime (imported only here, lazily)."""

from __future__ import annotations

from pathlib import Path

from medusa_common.contract import InfraError

from .config import parse_model_config


def write_reference(out_dir: str | Path, entry_dir: str | Path, *, tree: list[list[int]] | None,
                    max_batch_size: int, device: str, draft_vocab: int | None = None) -> list[str]:
    """The reference runtime's repository for an entry holding base/, heads/ and tree.json
    (base/ alone, and no tree, for the base model's own entry); ``draft_vocab``: the draft
    vocabulary the entry's tree was calibrated for."""
    try:
        from medusa_runtime.serving.triton_repo import write_reference_repository
    except ImportError as exc:
        raise InfraError(f"the reference runtime is not installed in this image ({exc}); "
                         "run package in the builder image") from None
    entry = Path(entry_dir)
    heads = entry / "heads"
    write_reference_repository(str(out_dir), base_dir=str(entry / "base"), heads_dir=str(heads) if tree else None,
                               tree=tree, max_batch_size=max_batch_size, model_name="ensemble", device=device,
                               draft_vocab=draft_vocab if tree else None)
    for config in sorted(Path(out_dir).glob("*/config.pbtxt")):
        parse_model_config(config.read_text(encoding="utf-8"), str(config.relative_to(out_dir)))
    return sorted(p.parent.name for p in Path(out_dir).glob("*/config.pbtxt"))
