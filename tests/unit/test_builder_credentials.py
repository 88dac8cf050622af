"""Mounted credentials as an unprivileged user (issue 22, "Credential files are mounted 0400 owned
by root while the builder image runs as uid 1000").

Each case lays out a credentials folder the way the kubelet mounts a Secret (files owned by root,
the pod's fsGroup as their group, the volume's defaultMode) and runs a real `medusa-builder fetch`
in a child process that has dropped root for the pod's user, group and supplementary fsGroup, so
the kernel decides what the step may read. Needs root (to chown and to change users).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medusa_builder import cli
from medusa_builder.steps import fetch
from rendered_objects import S3_STORES, Case, render_case

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to lay out files as the kubelet does")

IMAGE_USER = 1000  # the builder image's user (builder/Dockerfile)


def run_as(uid: int, gid: int, groups: list[int], argv: list[str]) -> int:
    """Run `medusa-builder ARGV` (a storage step) in a forked child as uid:gid with ``groups``."""
    parser = argparse.ArgumentParser()
    fetch.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    pid = os.fork()
    if pid == 0:  # the child: drop root, run the step, exit with its code
        code = 99
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            code = cli.run_step("fetch", args.func, args)
        except BaseException:  # noqa: BLE001 - reported by the parent as exit code 99
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A source folder anyone may read and an output folder anyone may write, in a folder the
    unprivileged user can reach (pytest's own temporary folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="medusa-credentials-"))
    root.chmod(0o755)
    source = root / "source"
    source.mkdir()
    (source / "config.json").write_text("{}")
    out = root / "out"
    out.mkdir()
    out.chmod(0o777)
    yield root
    shutil.rmtree(root)


def mount_secret(folder: Path, values: dict[str, str], *, group: int, mode: int) -> Path:
    folder.mkdir()
    for key, value in values.items():
        path = folder / key
        path.write_text(value)
        os.chown(path, 0, group)
        path.chmod(mode)
    return folder


def fetch_argv(workspace: Path, credentials: Path) -> list[str]:
    return ["fetch", str(workspace / "source"), "--dest", str(workspace / "out" / "dest"),
            "--credentials-dir", str(credentials), "--result", str(workspace / "out" / "result.json")]


def result(workspace: Path) -> dict[str, Any]:
    return json.loads((workspace / "out" / "result.json").read_text())


def test_unreadable_credentials_are_a_clear_user_error_not_a_crash(workspace: Path) -> None:
    """The old mount: root:root 0400 and no fsGroup; the image's user cannot read it."""
    credentials = mount_secret(workspace / "credentials", {"AWS_SECRET_ACCESS_KEY": "not-readable"},
                               group=0, mode=0o400)
    code = run_as(IMAGE_USER, IMAGE_USER, [IMAGE_USER], fetch_argv(workspace, credentials))
    assert code == 2  # a user error: retrying cannot help
    doc = result(workspace)
    assert doc["ok"] is False and doc["error"]["kind"] == "user"
    message = doc["error"]["message"]
    assert str(credentials / "AWS_SECRET_ACCESS_KEY") in message and f"uid {IMAGE_USER}" in message
    assert "fsGroup" in message
    assert "not-readable" not in json.dumps(doc)


def test_the_rendered_mount_is_readable_by_the_pods_user(workspace: Path) -> None:
    """The mount as the operator renders it: the pod's fsGroup owns the files, the volume's
    defaultMode as written (without relying on the kubelet adding group bits), and the step runs
    as the pod's user with the fsGroup as a supplementary group."""
    build = next(m for m in render_case(Case("s3", {**S3_STORES, "engine": {"backend": "reference"}}))
                 if m["metadata"]["labels"].get("medusa.dev/step") == "build")
    pod = build["spec"]["template"]["spec"]
    security = pod["securityContext"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "credentials"]
    credentials = mount_secret(workspace / "credentials", {"AWS_ACCESS_KEY_ID": "id", "HF_TOKEN": "token"},
                               group=security["fsGroup"], mode=volume["projected"]["defaultMode"])
    code = run_as(security["runAsUser"], security["runAsGroup"], [security["fsGroup"]],
                  fetch_argv(workspace, credentials))
    doc = result(workspace)
    assert code == 0, doc
    assert doc["ok"] is True and doc["result"]["files"] == 1


def test_an_unwritable_destination_is_a_user_error_with_a_result(workspace: Path) -> None:
    credentials = mount_secret(workspace / "credentials", {"AWS_ACCESS_KEY_ID": "id"}, group=IMAGE_USER, mode=0o440)
    locked = workspace / "locked"
    locked.mkdir(mode=0o755)  # owned by root
    argv = fetch_argv(workspace, credentials)
    argv[argv.index("--dest") + 1] = str(locked / "dest")
    code = run_as(IMAGE_USER, IMAGE_USER, [IMAGE_USER], argv)
    assert code == 2
    doc = result(workspace)
    assert doc["error"]["kind"] == "user" and str(locked / "dest") in doc["error"]["message"]
