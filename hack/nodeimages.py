"""Container images the local cluster's real node needs, built here with no registry and no image
builder: the pod sandbox ("pause"), CoreDNS, and a small test image.

Each image is written as a docker-archive tarball (the layout `docker save` writes: manifest.json
with the image's tag, the image config and uncompressed layer tars), which
`ctr -n k8s.io images import` loads under its tag. Archives are cached under
``$MEDUSA_CACHE/images`` and named by a key over everything that goes into them, so a second
build is a file lookup and a changed input makes a new tag.

    python hack/nodeimages.py          # build (or find) every image; prints ref and archive

Image names live under ``localhost/``: were a pull ever attempted for one, it could only go to
this machine's loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MEDUSA_CACHE", Path.home() / ".cache" / "medusa-operator"))
IMAGE_CACHE = CACHE / "images"
REGISTRY = "localhost/medusa"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: a shell and core utilities, one static file
# Bump when the archive layout written here changes, so cached archives are rebuilt.
ARCHIVE_FORMAT = "docker-archive/1"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    ref: str  # the tag pods name, e.g. localhost/medusa/pause:0123456789ab
    archive: Path  # docker-archive tarball for LocalCluster.load_image


class ImageError(RuntimeError):
    pass


# -- the images ---------------------------------------------------------------------------------


def pause_image() -> Image:
    """The sandbox image: hack/pause/pause.c compiled static (gcc -static)."""
    source = HACK / "pause" / "pause.c"
    compiler = subprocess.run(["gcc", "--version"], check=True, capture_output=True, text=True).stdout
    key = _key(ARCHIVE_FORMAT, source.read_bytes(), compiler)

    def build() -> tuple[list[bytes], dict]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "pause"
            proc = subprocess.run(["gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                                   str(source)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise ImageError(f"compiling {source} failed (gcc -static needs libc6-dev):\n{proc.stderr}")
            layer = layer_tar([("pause", out.read_bytes(), 0o755)])
        return [layer], {"Entrypoint": ["/pause"], "User": "65535:65535"}

    return _cached("pause", key, build)


def coredns_image(bin_dir: Path) -> Image:
    """CoreDNS, the binary built from tools/coredns by hack/build-binaries.sh."""
    binary = (bin_dir / "coredns").read_bytes()
    key = _key(ARCHIVE_FORMAT, binary)
    return _cached("coredns", key, lambda: (
        [layer_tar([("coredns", binary, 0o755)])],
        {"Entrypoint": ["/coredns"], "Env": [PATH_ENV]},
    ))


def probe_image(bin_dir: Path) -> Image:
    """The test image: busybox (a shell and core utilities) and probe (tools/probe), an HTTP
    client and server that resolves names with its own resolver, so it works against the
    cluster's DNS without a C library in the image."""
    if not BUSYBOX.exists():
        raise ImageError(f"{BUSYBOX} is missing: install Debian's busybox-static (hack/system-deps.sh)")
    busybox = BUSYBOX.read_bytes()
    probe = (bin_dir / "probe").read_bytes()
    key = _key(ARCHIVE_FORMAT, busybox, probe)

    def build() -> tuple[list[bytes], dict]:
        applets = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True,
                                 text=True).stdout.split()
        entries: list[tuple] = [("bin/busybox", busybox, 0o755), ("bin/probe", probe, 0o755),
                                ("tmp", None, 0o1777), ("etc", None, 0o755)]
        entries += [(applet, "/bin/busybox") for applet in applets if applet != "bin/busybox"]
        return [layer_tar(entries)], {"Entrypoint": [], "Cmd": ["/bin/sh"], "Env": [PATH_ENV]}

    return _cached("probe", key, build)


def all_images(bin_dir: Path) -> list[Image]:
    return [pause_image(), coredns_image(bin_dir), probe_image(bin_dir)]


# -- archives -----------------------------------------------------------------------------------


def _key(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:12]


def _cached(name: str, key: str, build) -> Image:
    ref = f"{REGISTRY}/{name}:{key}"
    archive = IMAGE_CACHE / f"{name}-{key}.tar"
    if not archive.exists():
        layers, config = build()
        write_docker_archive(archive, ref, layers, config)
    return Image(ref, archive)


def layer_tar(entries: Iterable[tuple]) -> bytes:
    """An uncompressed layer tar, byte-for-byte reproducible. Entries: (path, bytes, mode) for a
    file, (path, None, mode) for a directory, (path, target) for a symlink. Parent directories
    are added as needed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        items = sorted(entries, key=lambda e: e[0])

        def add_dirs(path: str) -> None:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    tar.addfile(_info(d, tarfile.DIRTYPE, 0o755))

        for entry in items:
            path = entry[0].strip("/")
            add_dirs(path)
            if len(entry) == 2:
                info = _info(path, tarfile.SYMTYPE, 0o777)
                info.linkname = entry[1]
                tar.addfile(info)
            elif entry[1] is None:
                if path not in seen:
                    seen.add(path)
                    tar.addfile(_info(path, tarfile.DIRTYPE, entry[2]))
            else:
                info = _info(path, tarfile.REGTYPE, entry[2])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def _info(path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
    return info


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def write_docker_archive(path: Path, ref: str, layers: list[bytes], config: dict) -> None:
    """Write a docker-archive tarball: manifest.json naming the tag, the image config and one
    uncompressed tar per layer, each stored under its sha256. Written to a temporary file and
    renamed, so a reader never sees half an archive."""
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    image_config = {
        "architecture": _architecture(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    layer_names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": layer_names}]).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(config_name, config_bytes), *zip(layer_names, layers), ("manifest.json", manifest)]:
            info = _info(name, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


def archive_image_names(archive: Path) -> list[str]:
    """The image names an archive carries, as `ctr images import` stores them: the RepoTags of
    a docker-archive, normalized (docker.io/library/ implied); the name annotations of an OCI
    layout's index as they are, when they are full names."""
    with tarfile.open(archive) as tar:
        names: list[str] = []
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        if "index.json" in members and "oci-layout" in members:
            index = json.load(tar.extractfile(members["index.json"]))
            for m in index.get("manifests", []):
                ann = m.get("annotations", {})
                name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name", "")
                if any(c in name for c in "/:@"):
                    names.append(name)
        elif "manifest.json" in members:
            for m in json.load(tar.extractfile(members["manifest.json"])):
                names += [normalize_image_name(t) for t in m.get("RepoTags") or []]
    if not names:
        raise ImageError(f"{archive} names no image (a docker-archive needs RepoTags, an OCI layout "
                         "full names in its index's io.containerd.image.name annotations)")
    return names


def normalize_image_name(name: str) -> str:
    """The full name containerd stores: docker.io and library/ are implied, like everywhere else."""
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def main() -> None:
    bin_dir = Path(subprocess.run(["bash", str(HACK / "build-binaries.sh")], check=True, stdout=subprocess.PIPE,
                                  text=True).stdout.strip().splitlines()[-1])
    try:
        for image in all_images(bin_dir):
            print(f"{image.ref} {image.archive}")
    except ImageError as exc:
        print(f"nodeimages: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
