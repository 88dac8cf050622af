"""The reference backend's "engine": the checked base model, heads and tree, side by side."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

from medusa_common.files import link_or_copy

from .. import storage
from .entry import write_tree


def build_reference_entry(*, base_dir: str | Path, heads_dir: str | Path | None, work_dir: str | Path,
                          tree: Sequence[Sequence[int]], dry_run: bool = False) -> tuple[Path, float]:
    """The entry folder (``base/``, ``heads/``, ``tree.json``) and the seconds it took; the base
    model alone when ``heads_dir`` is None."""
    entry = Path(work_dir) / "entry"
    if dry_run:
        return entry, 0.0
    started = time.monotonic()
    shutil.rmtree(entry, ignore_errors=True)
    for name, source in (("base", base_dir), ("heads", heads_dir)):
        if source is None:
            continue
        for rel in storage.local_files(source):
            link_or_copy(Path(source) / rel, entry / name / rel)
    write_tree(entry, tree)
    return entry, time.monotonic() - started
