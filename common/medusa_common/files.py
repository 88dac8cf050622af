"""Small file helpers shared by the builder's steps and the runtime's repository writer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Place ``source`` at ``target`` as a hard link (no extra space, no copy time) where both lie
    on one filesystem that allows it, else as a copy."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
