"""The project's container images, built on this machine from the repository's own files.

    python hack/images.py            # build what is missing; one line per image
    python hack/images.py --json     # the same, then the manifest (JSON) on stdout
    python hack/images.py --plan     # keys and references only, builds nothing
    python hack/images.py --lock     # re-pin the Python distributions the images install

No container registry is contacted. The base is a Debian root filesystem made with mmdebstrap
from the Debian mirror, imported as an image and given to each Dockerfile as ``BASE_IMAGE``
(users building with docker keep the Dockerfiles' public default). buildah builds into a store
of its own under ``$MEDUSA_CACHE/images/storage``; each image is saved as a docker-archive that
``podman load`` and ``ctr -n k8s.io images import`` accept, and its reference keeps the tag.

An image's key hashes its Dockerfile, every file its COPY instructions take from the context (the
pinned requirements included), the base's key and the build arguments; a key that has an archive
is not built again. An image built on another of these images (its ``parent``: the reference
builder image on the reference serving image) gets the parent's reference as ``BASE_IMAGE``, so
its key follows the parent's, and its pinned requirements are only what it adds to the parent's.
The pinned wheels are downloaded once into ``$MEDUSA_CACHE/images/wheels`` by
this machine's pip (so its cache serves what the project's virtual environment already fetched)
and lent read-only to the builds, which run without network.

Tests and scripts use ``ensure_images()`` (builds what is missing, returns ``Image`` records),
``plan()`` (keys and references without building), ``container_command()`` with
``container_env()`` (podman on the images' store with hack/containers.conf, the settings this
kind of machine needs) and ``ensure_loaded()``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
CACHE = Path(os.environ.get("MEDUSA_CACHE", Path.home() / ".cache" / "medusa-operator")) / "images"
STORAGE = CACHE / "storage"
CONTAINERS_CONF = HACK / "containers.conf"
REGISTRY_PREFIX = "localhost/medusa"  # a name no registry answers for; pods must not pull it
ARCHIVE_FORMAT = "docker-archive"
KEY_LENGTH = 16
ARCHIVES_KEPT = 1  # per image: the reference images are gigabytes, and a rebuild after a source change reuses its dependency layer
LOGS = CACHE / "logs"  # every build's full output, one file per image key
TRANSCRIPT_TAIL_LINES = 40

DEBIAN_SUITE = "bookworm"  # Python 3.11, what the project requires and python:3.11-slim carries
DEBIAN_MIRROR = os.environ.get("MEDUSA_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY_MIRROR = os.environ.get("MEDUSA_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
# python3-venv: the images install into a virtual environment (Debian's python is externally
# managed); libpython3.11: Triton's Python backend stub embeds the interpreter.
BASE_PACKAGES = ("python3", "python3-venv", "libpython3.11", "ca-certificates", "netbase")
BASE_EXCLUDED_PATHS = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")

# Every pinned wheel, downloaded once by the host's pip (through its own cache) and lent to the
# builds, which then need no network. Images run Python 3.11 on glibc 2.36 (Debian 12).
WHEELS = CACHE / "wheels"
BUILD_WHEELS = "/var/cache/medusa-build/wheels"  # where the RUN steps see it
IMAGE_PYTHON = "3.11"
IMAGE_GLIBC = (2, 36)


@dataclass(frozen=True)
class Recipe:
    name: str
    dockerfile: str  # relative to the repository root, which is the build context
    lock: str  # the pinned closure the Dockerfile installs
    requirements: tuple[str, ...]  # what the lock pins (with its dependencies), local distributions by path
    purpose: str
    parent: str | None = None  # the recipe whose image this one is built on (else the Debian base)


# The project's distributions are named by path (none is on PyPI); a recipe lists each one it
# installs, medusa-common included, so that pip resolves them here.
RECIPES = (
    Recipe("operator", "Dockerfile", "operator/requirements.txt", ("./common", "."),
           "the controller (medusa-operator), no ML stack"),
    Recipe("reference-serving", "runtime/Dockerfile", "runtime/requirements.txt",
           ("./common", "./runtime", "nvidia-pytriton"),
           "the PyTorch reference runtime and tritonserver: the Triton container of the reference backend's "
           "serving pods (no builder steps, no operator)"),
    Recipe("reference-builder", "builder/reference.Dockerfile", "builder/reference-requirements.txt",
           ("./builder[runtime]",),
           "the reference serving image plus the medusa-builder steps: the reference backend's Jobs and the "
           "serving pods' fetch init container", parent="reference-serving"),
)
NOT_BUILT = {
    "builder": "builder/Dockerfile (TensorRT-LLM builder) is not built here: its base image comes from "
               "nvcr.io (NGC), which this machine cannot reach, and its engines need NVIDIA GPUs",
}


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    name: str
    key: str
    reference: str  # what a pod's `image:` names; the archive carries this tag
    archive: str
    archive_format: str
    dockerfile: str
    size_bytes: int | None = None  # of the archive, once it exists
    build_seconds: float | None = None  # set when this call built it

    @property
    def exists(self) -> bool:
        return Path(self.archive).is_file()


# ---------------------------------------------------------------------------------------------
# Keys


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def base_key() -> str:
    recipe = {"suite": DEBIAN_SUITE, "mirrors": _debian_sources(), "packages": BASE_PACKAGES,
              "excluded": BASE_EXCLUDED_PATHS, "variant": "minbase"}
    return _sha256(json.dumps(recipe, sort_keys=True).encode())[:KEY_LENGTH]


def base_reference() -> str:
    return f"{REGISTRY_PREFIX}/debian-base:{base_key()}"


def _debian_sources() -> list[str]:
    return [f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main", f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main",
            f"deb {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main"]


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths a Dockerfile's COPY/ADD instructions take (not those from other stages)."""
    lines, pending = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    sources: list[str] = []
    for line in lines:
        words = line.split(None, 1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        rest = words[1].strip()
        if rest.startswith("["):
            args = json.loads(rest)
        else:
            args = shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        if words[0].upper() == "ADD" and any("://" in p for p in paths[:-1]):
            raise ImageError(f"{dockerfile}: ADD from a URL cannot be keyed by content; copy a file from the context")
        sources += paths[:-1]
    return sources


def context_files(sources: list[str]) -> list[str]:
    """The files under ``sources`` a build sees: what git tracks or would track (ignored files such
    as __pycache__ stay out), so the key and the context are the same set."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                              "--", *sources], check=True, capture_output=True).stdout
        names = sorted({n for n in out.decode().split("\0") if n and (REPO / n).is_file()})
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but build output
        names = sorted(str(p.relative_to(REPO)) for s in sources for p in
                       ([REPO / s] if (REPO / s).is_file() else (REPO / s).rglob("*"))
                       if p.is_file() and p.suffix != ".pyc"
                       and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts))
    missing = [s for s in sources if not (REPO / s).exists()]
    if missing:
        raise ImageError(f"the Dockerfile copies {', '.join(missing)}, which the repository lacks")
    return names


def _build_args(recipe: Recipe, planned: dict[str, Image]) -> dict[str, str]:
    # Every Dockerfile starts FROM ${BASE_IMAGE}: the Debian base, or the parent image.
    return {"BASE_IMAGE": planned[recipe.parent].reference if recipe.parent else base_reference()}


def _image_key(recipe: Recipe, files: list[str], build_args: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"recipe": recipe.name, "build_args": build_args, "format": ARCHIVE_FORMAT},
                             sort_keys=True).encode())
    for name in [recipe.dockerfile, *files]:
        digest.update(name.encode() + b"\0" + _sha256((REPO / name).read_bytes()).encode() + b"\n")
    return digest.hexdigest()[:KEY_LENGTH]


def plan(names: list[str] | None = None) -> dict[str, Image]:
    """Key, reference and archive path of each image for this checkout, built or not (``names``
    and the images they are built on)."""
    out: dict[str, Image] = {}
    for recipe in _recipes(names):
        dockerfile = REPO / recipe.dockerfile
        files = context_files(copy_sources(dockerfile))
        if recipe.lock not in files:
            raise ImageError(f"{recipe.dockerfile} must COPY its pinned requirements {recipe.lock}")
        key = _image_key(recipe, files, _build_args(recipe, out))
        archive = CACHE / f"{recipe.name}-{key}.tar"
        size = archive.stat().st_size if archive.is_file() else None
        out[recipe.name] = Image(recipe.name, key, f"{REGISTRY_PREFIX}/{recipe.name}:{key}", str(archive),
                                 ARCHIVE_FORMAT, recipe.dockerfile, size)
    return out


def _recipes(names: list[str] | None) -> list[Recipe]:
    """The recipes of ``names`` (all when empty) and of the images they are built on, parents
    first (RECIPES lists a parent before its children)."""
    known = {r.name: r for r in RECIPES}
    for name in names or []:
        if name in NOT_BUILT:
            raise ImageError(NOT_BUILT[name])
        if name not in known:
            raise ImageError(f"unknown image {name!r}; known: {', '.join(known)}")
    wanted = set(names or known)
    for recipe in reversed(RECIPES):
        if recipe.name in wanted and recipe.parent:
            wanted.add(recipe.parent)
    return [r for r in RECIPES if r.name in wanted]


def _parents(recipe: Recipe) -> list[Recipe]:
    """The recipes ``recipe`` is built on, nearest first."""
    known = {r.name: r for r in RECIPES}
    chain = []
    while recipe.parent:
        recipe = known[recipe.parent]
        chain.append(recipe)
    return chain


# ---------------------------------------------------------------------------------------------
# Container tools


def _require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise ImageError(f"{', '.join(missing)} not found; run hack/system-deps.sh (it installs buildah, "
                         "podman, mmdebstrap and runc from Debian)")
    if os.geteuid() != 0:
        raise ImageError("the local image build runs buildah and mmdebstrap as root; elsewhere build the "
                         "Dockerfiles with docker (docs/images.md)")


def _runroot() -> Path:
    # Runtime state (locks, mounts) belongs on a filesystem a reboot clears.
    run = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    return run / f"medusa-images-{_sha256(str(STORAGE).encode())[:8]}"


def _store_options() -> list[str]:
    return ["--root", str(STORAGE), "--runroot", str(_runroot()), "--storage-driver", "overlay"]


def _environment() -> dict[str, str]:
    # hack/containers.conf: the OCI runtime and cgroup manager this kind of machine needs.
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def container_command() -> list[str]:
    """``podman`` on the images' store; run it with ``env=container_env()``. Containers get no
    network unless asked for one (hack/containers.conf)."""
    _require_tools("podman")
    return ["podman", *_store_options()]


def container_env() -> dict[str, str]:
    return _environment()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(command: list[str], transcript: Path) -> None:
    """Run ``command`` with its output appended to ``transcript``; a failure quotes its end."""
    transcript.parent.mkdir(parents=True, exist_ok=True)
    with open(transcript, "a") as out:
        out.write("+ " + shlex.join(command) + "\n")
        out.flush()
        returncode = subprocess.run(command, env=_environment(), stdout=out, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        tail = "\n".join(transcript.read_text(errors="replace").splitlines()[-TRANSCRIPT_TAIL_LINES:])
        raise ImageError(f"{command[0]} failed with exit code {returncode}; the end of {transcript}:\n{tail}")


def _image_present(reference: str) -> bool:
    return subprocess.run(["podman", *_store_options(), "image", "exists", reference], env=_environment(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def ensure_loaded(image: Image) -> None:
    """Make ``image`` runnable with ``container_command()`` (loads its archive if the store lacks it)."""
    _require_tools("podman")
    if not _image_present(image.reference):
        if not image.exists:
            raise ImageError(f"{image.name}: no archive at {image.archive}; run hack/images.py")
        _run(["podman", *_store_options(), "load", "--input", image.archive],
             LOGS / f"load-{image.name}-{image.key}.log")


# ---------------------------------------------------------------------------------------------
# Building


def _ensure_base() -> str:
    reference = base_reference()
    rootfs = CACHE / "base" / f"debian-{base_key()}.tar"
    transcript = LOGS / f"base-{base_key()}.log"
    if not rootfs.is_file():
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        partial = rootfs.with_suffix(".partial.tar")
        started = time.monotonic()
        _run(["mmdebstrap", "--mode=root", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
              "--aptopt=Acquire::Languages \"none\"",
              *(f"--dpkgopt=path-exclude={p}" for p in BASE_EXCLUDED_PATHS),
              DEBIAN_SUITE, str(partial), *_debian_sources()], transcript)
        partial.rename(rootfs)
        _say(f"base root filesystem: {rootfs} ({time.monotonic() - started:.0f} s)")
    if not _image_present(reference):
        _run(["podman", *_store_options(), "import", "--change", 'CMD ["/bin/bash"]', str(rootfs), reference],
             transcript)
    return reference


def _pins(lock: Path) -> list[tuple[str, str]]:
    pins = []
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ImageError(f"{lock}: {line!r} is not pinned as name==version; run hack/images.py --lock")
            pins.append((name.strip(), version.strip()))
    return pins


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _ensure_wheels(recipe: Recipe, transcript: Path) -> None:
    """Download the recipe's pinned wheels for the images' interpreter that the wheelhouse lacks."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    have = {(_normalised(w.name.split("-")[0]), w.name.split("-")[1]) for w in WHEELS.glob("*.whl")}
    lock = REPO / recipe.lock
    if all((_normalised(name), version) in have for name, version in _pins(lock)):
        return
    arch = platform.machine()
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(IMAGE_GLIBC[1], 4, -1)]
    platforms += [f"manylinux2014_{arch}"]  # pip adds manylinux2010 and manylinux1 to it
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
          "--python-version", IMAGE_PYTHON, *(a for p in platforms for a in ("--platform", p)),
          "--dest", str(WHEELS), "--requirement", str(lock)], transcript)


def _stage_context(recipe: Recipe, files: list[str], target: Path) -> None:
    for name in [recipe.dockerfile, *files]:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination)


def _build(recipe: Recipe, image: Image, build_args: dict[str, str]) -> float:
    started = time.monotonic()
    transcript = LOGS / f"{image.name}-{image.key}.log"
    _say(f"building {image.reference} from {recipe.dockerfile} (output: {transcript})")
    files = context_files(copy_sources(REPO / recipe.dockerfile))
    _ensure_wheels(recipe, transcript)
    phases = {"wheels": time.monotonic() - started}
    with tempfile.TemporaryDirectory(prefix=f"context-{recipe.name}-", dir=CACHE) as tmp:
        context = Path(tmp) / "context"
        _stage_context(recipe, files, context)
        # pip inside the build reads this file: it installs from the wheelhouse only, so the build
        # runs without network. Neither the file nor the wheels end up in the image.
        pip_conf = Path(tmp) / "pip.conf"
        pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {BUILD_WHEELS}\n")
        volumes = ["--volume", f"{WHEELS}:{BUILD_WHEELS}:ro", "--volume", f"{pip_conf}:/etc/pip.conf:ro"]
        arguments = [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
        _run(["buildah", *_store_options(), "build", "--pull=never", "--network=none", "--layers",
              *arguments, *volumes, "--file", str(context / recipe.dockerfile),
              "--tag", image.reference, str(context)], transcript)
    phases["build"] = time.monotonic() - started - sum(phases.values())
    partial = Path(image.archive + ".partial")
    partial.unlink(missing_ok=True)
    _run(["podman", *_store_options(), "save", "--format", ARCHIVE_FORMAT, "--output", str(partial),
          image.reference], transcript)
    partial.rename(image.archive)
    phases["save"] = time.monotonic() - started - sum(phases.values())
    _say(f"{image.reference}: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
    return time.monotonic() - started


def _prune(recipe: Recipe, keep: Image) -> None:
    # The key's exact length: "reference-serving-<key>" is not an older "reference" image.
    archives = sorted((p for p in CACHE.glob(f"{recipe.name}-*.tar")
                       if re.fullmatch(rf"{re.escape(recipe.name)}-[0-9a-f]{{{KEY_LENGTH}}}\.tar", p.name)),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[ARCHIVES_KEPT:]:
        if str(old) == keep.archive:
            continue
        reference = f"{REGISTRY_PREFIX}/{recipe.name}:{old.stem.removeprefix(recipe.name + '-')}"
        _say(f"removing the older {recipe.name} image {reference}")
        old.unlink()
        subprocess.run(["podman", *_store_options(), "rmi", "--ignore", reference], env=_environment(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ensure_images(names: list[str] | None = None) -> dict[str, Image]:
    """Build the images (all, or ``names``) whose archive is missing and return every one's record.
    One build at a time per cache: concurrent callers wait and reuse the result."""
    wanted = plan(names)
    if all(image.exists for image in wanted.values()):
        _write_index(wanted)
        return wanted
    _require_tools("buildah", "podman", "mmdebstrap", "runc")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = plan(names)
        durations = {}
        for recipe in _recipes(names):
            image = wanted[recipe.name]
            if image.exists:
                continue
            _ensure_base()
            if recipe.parent:
                # Built FROM the parent, which must be in the store: its archive may be all there is.
                ensure_loaded(wanted[recipe.parent])
            durations[recipe.name] = _build(recipe, image, _build_args(recipe, wanted))
            _prune(recipe, image)
        built = plan(names)
        for name, seconds in durations.items():
            built[name] = Image(**{**asdict(built[name]), "build_seconds": round(seconds, 1)})
        _write_index(built)
        return built


def manifest(images: dict[str, Image]) -> dict:
    return {
        "base": {"reference": base_reference(), "key": base_key(),
                 "rootfs": str(CACHE / "base" / f"debian-{base_key()}.tar"), "suite": DEBIAN_SUITE},
        "images": {name: {**asdict(image), "built": image.build_seconds is not None}
                   for name, image in images.items()},
        "not_built": NOT_BUILT,
    }


def _write_index(images: dict[str, Image]) -> None:
    """$MEDUSA_CACHE/images/index.json: the manifest of the latest run (of any checkout)."""
    index = CACHE / "index.json"
    partial = index.with_suffix(f".{os.getpid()}")
    partial.write_text(json.dumps(manifest(images), indent=2) + "\n")
    partial.rename(index)


# ---------------------------------------------------------------------------------------------
# Pinning


def _build_system_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]


def lock_requirements(recipe: Recipe) -> list[str]:
    """What the recipe's lock is the closure of: its parents' requirements and its own, pip and the
    project's build requirements (the Dockerfiles install from the lock with --no-build-isolation)."""
    inherited = [r for parent in reversed(_parents(recipe)) for r in parent.requirements]
    return [*dict.fromkeys([*inherited, *recipe.requirements]), "pip", *_build_system_requirements()]


def write_lock(recipe: Recipe) -> Path:
    """Resolve the recipe's requirements (with pip and the project's build requirements, which
    the Dockerfiles install first) for this interpreter and write them pinned. An image built on
    another pins only what it adds: its closure is resolved with the parents' requirements and
    their pins as constraints (so a shared dependency keeps the parent's version), and the
    parents' pins are left out. Lock the parents first (``--lock`` does, in RECIPES order)."""
    if sys.version_info[:2] != (3, 11) or sys.platform != "linux":
        raise ImageError("pin with Python 3.11 on Linux: the images' interpreter is 3.11 on Linux")
    parents = _parents(recipe)
    requirements = lock_requirements(recipe)
    constraints = [a for parent in parents for a in ("--constraint", str(REPO / parent.lock))]
    parent_pins = {_normalised(name) for parent in parents for name, _ in _pins(REPO / parent.lock)}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), *constraints, *requirements], cwd=REPO, check=True)
        resolved = json.loads(report.read_text())["install"]
    pins = sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in resolved
                  if not item["download_info"]["url"].startswith("file:")  # the project's own distributions
                  and _normalised(item["metadata"]["name"]) not in parent_pins)
    target = REPO / recipe.lock
    target.parent.mkdir(parents=True, exist_ok=True)
    on_top = f" on top of {', '.join(p.lock for p in parents)}" if parents else ""
    header = (f"# Pinned closure of {' '.join(requirements)} for the {recipe.name} image "
              f"({recipe.dockerfile}){on_top}.\n"
              f"# Regenerate with: python hack/images.py --lock\n")
    target.write_text(header + "".join(f"{name}=={version}\n" for name, version in pins))
    return target


# ---------------------------------------------------------------------------------------------


def _describe(images: dict[str, Image]) -> str:
    lines = []
    for image in images.values():
        size = f"{image.size_bytes / 2**30:.2f} GiB" if image.size_bytes else "no archive"
        state = (f"built in {image.build_seconds:.0f} s" if image.build_seconds is not None
                 else "cached" if image.exists else "not built yet")
        lines.append(f"{image.name:17} {image.reference}  {state}, {ARCHIVE_FORMAT} {image.archive} ({size})")
    lines += [f"{name:17} {reason}" for name, reason in NOT_BUILT.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*",
                        help=f"images to handle (default: all of {', '.join(r.name for r in RECIPES)})")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    parser.add_argument("--plan", action="store_true", help="print keys and references, build nothing")
    parser.add_argument("--lock", action="store_true", help="re-pin the requirements the images install")
    args = parser.parse_args(argv)
    try:
        if args.lock:
            for recipe in _recipes(args.names):
                print(f"pinned {write_lock(recipe)}", file=sys.stderr)
            return 0
        images = plan(args.names) if args.plan else ensure_images(args.names)
    except ImageError as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    print(_describe(images), file=sys.stderr)
    if args.json:
        print(json.dumps(manifest(images), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
