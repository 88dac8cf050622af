"""hack/venv.sh keys the development environment by every distribution's dependency lists, so a
dependency changed in any pyproject.toml (the root's, common/, runtime/ or builder/) gives a new
environment, and other edits reuse the one there is."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECTS = ["pyproject.toml", "common/pyproject.toml", "runtime/pyproject.toml", "builder/pyproject.toml"]


def _where(checkout: Path, cache: Path) -> str:
    done = subprocess.run(["bash", str(checkout / "hack" / "venv.sh"), "--where"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cache), "MEDUSA_CACHE": str(cache)}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    for name in ["hack/venv.sh", *PYPROJECTS]:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    return copy


@pytest.mark.parametrize("pyproject", PYPROJECTS)
def test_a_changed_dependency_in_any_pyproject_gives_a_new_environment(checkout: Path, tmp_path: Path,
                                                                      pyproject: str) -> None:
    before = _where(checkout, tmp_path / "cache")
    path = checkout / pyproject
    text = path.read_text()
    path.write_text(re.sub(r"^dependencies = \[", 'dependencies = [\n  "example-added-dependency>=1",', text,
                           count=1, flags=re.M))
    assert path.read_text() != text
    assert _where(checkout, tmp_path / "cache") != before
    assert not (tmp_path / "cache" / "venv").exists() or not any((tmp_path / "cache" / "venv").iterdir())


def test_other_edits_reuse_the_environment(checkout: Path, tmp_path: Path) -> None:
    before = _where(checkout, tmp_path / "cache")
    for name in PYPROJECTS:
        path = checkout / name
        path.write_text(re.sub(r'^description = ".*"$', 'description = "edited"', path.read_text(), flags=re.M))
    assert _where(checkout, tmp_path / "cache") == before
