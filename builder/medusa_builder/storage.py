"""Where models, heads, engines and repositories live: URI parsing and folder transfer.

Supported locations:

- ``hf://ORG/NAME`` (Hugging Face Hub, at a pinned revision; token from ``HF_TOKEN``),
- ``s3://BUCKET/PREFIX`` (any S3-compatible endpoint: ``AWS_ENDPOINT_URL`` or ``endpoint_url``),
- ``gs://BUCKET/PREFIX`` (Google Cloud Storage through its S3-compatible XML API with HMAC keys
  ``GOOGLE_HMAC_ACCESS_ID`` / ``GOOGLE_HMAC_SECRET``),
- ``pvc://CLAIM/PATH`` (a PersistentVolumeClaim that Jobs mount at ``/mnt/pvc/CLAIM``),
- ``file:///path`` and plain paths.

Downloads resume partial files, skip files already present with the right checksum and write
``.medusa-fetch.json`` (file sizes and sha256) into the destination. Uploads of a folder can hold
back some files (a cache entry's ``manifest.json``) until everything else is stored, so a reader
never mistakes a partial upload for a complete one.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from medusa_common.contract import PVC_MOUNT_ROOT, InfraError, UserError

log = logging.getLogger(__name__)

FETCH_MANIFEST = ".medusa-fetch.json"
PARTIAL_DIR = ".medusa-partial"
HF_METADATA_DIR = ".cache/huggingface"  # huggingface_hub's own download state in a local_dir
CHUNK_BYTES = 8 * 1024 * 1024
PVC_ROOT_ENV = "MEDUSA_PVC_ROOT"
DEFAULT_PVC_ROOT = PVC_MOUNT_ROOT
GCS_ENDPOINT = "https://storage.googleapis.com"
# Files one credential Secret may hold; each is one file under --credentials-dir.
CREDENTIAL_KEYS = (
    "HF_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "GOOGLE_HMAC_ACCESS_ID",
    "GOOGLE_HMAC_SECRET",
    "GCS_ENDPOINT_URL",
)
_UNAUTHORISED_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "AllAccessDisabled", "AccountProblem", "401", "403", "Forbidden",
}
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}


@dataclass(frozen=True)
class Location:
    """A parsed URI. ``scheme`` is hf, s3, gs or local; for local, ``path`` is the folder."""

    uri: str
    scheme: str
    bucket: str = ""
    key: str = ""
    path: str = ""

    @property
    def is_object_store(self) -> bool:
        return self.scheme in ("s3", "gs")


def pvc_root() -> str:
    return os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT)


def parse_uri(uri: str) -> Location:
    """Parse a location; an unknown scheme or a missing bucket is a user error."""
    if not uri or not isinstance(uri, str):
        raise UserError("a location is empty; give hf://ORG/NAME, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, "
                        "pvc://CLAIM/PATH or a path")
    if "://" not in uri:
        return Location(uri=uri, scheme="local", path=os.path.abspath(uri))
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return Location(uri=uri, scheme="local", path=os.path.abspath("/" + rest.lstrip("/")))
    if scheme in ("s3", "gs", "hf", "pvc"):
        head, _, tail = rest.partition("/")
        if not head:
            raise UserError(f"{uri} names no bucket, repository or claim after {scheme}://")
        if scheme == "pvc":
            if head in (".", "..") or ".." in tail.split("/"):
                raise UserError(f"{uri} leaves its claim: a pvc://CLAIM/PATH location must not contain '..' "
                                "segments; give the path inside the claim")
            return Location(uri=uri, scheme="local", path=os.path.join(pvc_root(), head, tail.strip("/")))
        if scheme == "hf":
            org_name, _, sub = tail.partition("/")
            if not org_name:
                raise UserError(f"{uri} must name a Hugging Face repository as hf://ORG/NAME")
            return Location(uri=uri, scheme="hf", bucket=f"{head}/{org_name}", key=sub.strip("/"))
        return Location(uri=uri, scheme=scheme, bucket=head, key=tail.lstrip("/"))
    raise UserError(f"unsupported location scheme {scheme!r} in {uri}; use hf://, s3://, gs://, pvc:// or a path")


def join_uri(uri: str, *parts: str) -> str:
    """Append path segments to a URI or path with exactly one slash between them."""
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def load_credentials(credentials_dir: str | None) -> list[str]:
    """Export the credential files of a mounted Secret into the environment; returns the key names.

    A mounted Secret is the operator's explicit choice, so its values win over the environment.
    """
    if not credentials_dir:
        return []
    folder = Path(credentials_dir)
    loaded = []
    try:
        if not folder.is_dir():
            raise UserError(f"the credentials folder {credentials_dir} does not exist; mount the credentials Secret "
                            "there")
        for key in CREDENTIAL_KEYS:
            file = folder / key
            if file.is_file():
                os.environ[key] = file.read_text(encoding="utf-8").strip()
                loaded.append(key)
    except PermissionError as exc:
        raise UserError(unreadable_credentials_message(exc.filename or credentials_dir)) from None
    log.info("loaded credentials: %s", ", ".join(loaded) or "none")
    return loaded


def unreadable_credentials_message(path: str) -> str:
    """Why a mounted credential cannot be read, and what makes it readable."""
    return (f"cannot read the credentials file {path} as uid {os.getuid()} (groups "
            f"{', '.join(str(g) for g in sorted({os.getgid(), *os.getgroups()}))}): permission denied. The step's user "
            "must be able to read the mounted Secret: give the pod an fsGroup the user belongs to and mount the "
            "Secret readable by that group (for example defaultMode 0440), as the operator's Jobs do")


def sha256_file(path: str | os.PathLike, prefix_hash: Any = None) -> str:
    digest = prefix_hash or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_files(folder: str | os.PathLike) -> list[str]:
    """Relative paths of the regular files under ``folder``, sorted, without our bookkeeping."""
    root = Path(folder)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith((PARTIAL_DIR, FETCH_MANIFEST, HF_METADATA_DIR)):
            out.append(rel)
    return sorted(out)


def _check_disk(dest: Path, needed: int) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise UserError(f"out of disk space in {dest}: {needed} bytes are needed but {free} are free; "
                        "give the Job a larger volume")


def _disk_full(exc: OSError, dest: Path) -> UserError:
    return UserError(f"out of disk space while writing into {dest} ({exc.strerror}); give the Job a larger volume")


# --- object stores (S3 and GCS's S3-compatible API) -----------------------------------------


def object_client(loc: Location, endpoint_url: str | None = None):
    """A boto3 S3 client for ``loc``: the endpoint and keys come from the environment.

    A fresh session each time, so credentials exported after the first client are honoured.
    """
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                    s3={"addressing_style": "path"})
    if loc.scheme == "gs":
        access = os.environ.get("GOOGLE_HMAC_ACCESS_ID")
        secret = os.environ.get("GOOGLE_HMAC_SECRET")
        if not access or not secret:
            raise UserError(f"no credentials for {loc.uri}: set GOOGLE_HMAC_ACCESS_ID and GOOGLE_HMAC_SECRET "
                            "(HMAC keys) in the credentials Secret")
        return boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or os.environ.get("GCS_ENDPOINT_URL", GCS_ENDPOINT),
            aws_access_key_id=access, aws_secret_access_key=secret, region_name="auto", config=config)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
                                          region_name=region, config=config)


def translate_error(exc: Exception, uri: str) -> Exception:
    """Map a boto/network exception to a user error (bad input) or an infrastructure error."""
    from botocore.exceptions import (BotoCoreError, ClientError, EndpointConnectionError,
                                     NoCredentialsError, PartialCredentialsError)

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return UserError(f"no credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
                         "credentials Secret")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _UNAUTHORISED_CODES or status in (401, 403):
            return UserError(f"access to {uri} was refused ({code or status}); check the credentials Secret "
                             "and the bucket policy")
        if code in _NOT_FOUND_CODES or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return UserError(f"{uri} was not found (no such {what}); check the location")
        return InfraError(f"the object store failed for {uri} ({code or status}); retry later")
    if isinstance(exc, EndpointConnectionError):
        return InfraError(f"cannot reach the object store for {uri} ({exc}); check AWS_ENDPOINT_URL and the network")
    if isinstance(exc, BotoCoreError):
        return InfraError(f"the transfer of {uri} failed ({exc}); retry later")
    return exc


@dataclass
class RemoteObject:
    key: str
    rel: str
    size: int
    etag: str


def _checked_rel(rel: str, key: str, uri: str) -> str:
    """``rel``, the path an object is written to inside the download folder, if it stays there."""
    if rel.startswith("/") or ".." in rel.split("/"):
        raise UserError(f"{uri} holds the object {key!r}, whose name would be written outside the download "
                        "folder ('..' segments or a leading '/'); nothing was fetched: rename or remove that object")
    return rel


def list_objects(loc: Location, client) -> list[RemoteObject]:
    """The objects under a prefix (as a folder), or the single object the key names."""
    prefix = loc.key.rstrip("/")
    folder_prefix = f"{prefix}/" if prefix else ""
    found: list[RemoteObject] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=folder_prefix):
            for item in page.get("Contents", []):
                rel = item["Key"][len(folder_prefix):]
                if rel and not rel.endswith("/"):
                    found.append(RemoteObject(item["Key"], _checked_rel(rel, item["Key"], loc.uri),
                                              int(item["Size"]), item["ETag"].strip('"')))
        if not found and prefix:
            head = client.head_object(Bucket=loc.bucket, Key=prefix)
            found.append(RemoteObject(prefix, _checked_rel(os.path.basename(prefix), prefix, loc.uri),
                                      int(head["ContentLength"]), head["ETag"].strip('"')))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated into a step error
        raise translate_error(exc, loc.uri) from None
    return sorted(found, key=lambda o: o.rel)


def listing_revision(objects: Iterable[RemoteObject]) -> str:
    """A content revision for a prefix: a digest of its keys, sizes and ETags."""
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(f"{obj.rel}\t{obj.size}\t{obj.etag}\n".encode())
    return "sha256:" + digest.hexdigest()[:32]


def partial_path(dest: str | os.PathLike, rel: str) -> Path:
    """Where an interrupted download of ``rel`` is kept until it completes."""
    return Path(dest) / PARTIAL_DIR / (hashlib.sha1(rel.encode()).hexdigest() + ".part")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json_atomic(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class _Transfer:
    downloaded: int = 0
    resumed: int = 0
    skipped: int = 0


def _download_object(client, loc: Location, obj: RemoteObject, dest: Path, stats: _Transfer,
                     attempts: int = 3) -> str:
    """Download one object into ``dest/obj.rel`` with resume; returns its sha256."""
    from botocore.exceptions import ClientError

    target = dest / obj.rel
    part = partial_path(dest, obj.rel)
    marker = part.with_suffix(".json")
    part.parent.mkdir(parents=True, exist_ok=True)
    if part.exists() and _read_json(marker).get("etag") != obj.etag:
        part.unlink()
    _write_json_atomic(marker, {"etag": obj.etag, "rel": obj.rel})
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.exists() else 0
        if offset > obj.size:
            part.unlink()
            offset = 0
        digest = hashlib.sha256()
        if offset:
            sha256_file(part, digest)
            stats.resumed += 1
            log.info("resuming %s at byte %d of %d", obj.rel, offset, obj.size)
        try:
            if offset < obj.size:
                kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": obj.key, "IfMatch": f'"{obj.etag}"'}
                if offset:
                    kwargs["Range"] = f"bytes={offset}-"
                body = client.get_object(**kwargs)["Body"]
                with open(part, "ab") as fh:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        fh.write(chunk)
                        digest.update(chunk)
                        stats.downloaded += len(chunk)
            elif not part.exists():
                part.touch()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(exc, dest) from None
            raise
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise InfraError(f"{loc.uri} changed while it was being downloaded ({obj.rel}); retry") from None
            raise translate_error(exc, loc.uri) from None
        except Exception as exc:  # noqa: BLE001 - a broken stream is resumed on the next attempt
            translated = translate_error(exc, loc.uri)
            if isinstance(translated, UserError) or attempt == attempts:
                raise translated from None
            log.warning("download of %s interrupted (%s); resuming", obj.rel, exc)
            continue
        size = part.stat().st_size
        if size == obj.size:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            marker.unlink(missing_ok=True)
            return digest.hexdigest()
        log.warning("%s has %d bytes after download, expected %d; retrying", obj.rel, size, obj.size)
        part.unlink()
    raise InfraError(f"could not download {obj.rel} from {loc.uri} completely after {attempts} attempts; retry")


def _excluded(rel: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in exclude)


def _fetch_object_store(loc: Location, dest: Path, revision: str | None, endpoint_url: str | None,
                        exclude: Sequence[str]) -> dict:
    client = object_client(loc, endpoint_url)
    objects = list_objects(loc, client)
    if not objects:
        raise UserError(f"nothing found at {loc.uri}; check the bucket and prefix")
    found_revision = listing_revision(objects)
    if revision and revision.startswith("sha256:") and revision != found_revision:
        raise UserError(f"{loc.uri} is at revision {found_revision} but {revision} was pinned; "
                        "pin the current revision or restore the pinned objects")
    objects = [o for o in objects if not _excluded(o.rel, exclude)]
    previous = {f["path"]: f for f in _read_json(dest / FETCH_MANIFEST).get("files", [])}
    stats = _Transfer()
    todo, files = [], []
    for obj in objects:
        target = dest / obj.rel
        known = previous.get(obj.rel, {})
        if (target.is_file() and target.stat().st_size == obj.size and known.get("etag") == obj.etag
                and known.get("sha256") == sha256_file(target)):
            stats.skipped += 1
            files.append(known)
        else:
            todo.append(obj)
    _check_disk(dest, sum(o.size - (partial_path(dest, o.rel).stat().st_size
                                    if partial_path(dest, o.rel).exists() else 0) for o in todo))
    for obj in todo:
        log.info("downloading %s (%d bytes)", obj.rel, obj.size)
        sha = _download_object(client, loc, obj, dest, stats)
        files.append({"path": obj.rel, "size": obj.size, "sha256": sha, "etag": obj.etag})
    shutil.rmtree(dest / PARTIAL_DIR, ignore_errors=True)
    return _finish(loc, dest, revision or found_revision, files, stats)


# --- Hugging Face Hub ------------------------------------------------------------------------


def _fetch_hf(loc: Location, dest: Path, revision: str | None, exclude: Sequence[str]) -> dict:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    if not revision:
        log.warning("no revision pinned for %s; fetching 'main', which may change", loc.uri)
    try:
        snapshot_download(repo_id=loc.bucket, revision=revision or "main", local_dir=str(dest),
                          allow_patterns=[f"{loc.key}/*"] if loc.key else None, ignore_patterns=list(exclude) or None,
                          token=os.environ.get("HF_TOKEN") or None)
    except GatedRepoError:
        raise UserError(f"{loc.uri} is gated; accept its licence on the Hub and give an HF_TOKEN that may read it") from None
    except RepositoryNotFoundError:
        raise UserError(f"{loc.uri} was not found or HF_TOKEN may not read it; check the name and the token") from None
    except RevisionNotFoundError:
        raise UserError(f"revision {revision} of {loc.uri} does not exist; pin an existing commit") from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            raise UserError(f"access to {loc.uri} was refused ({status}); check HF_TOKEN") from None
        raise InfraError(f"the Hugging Face Hub failed for {loc.uri} ({exc}); retry later") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(exc, dest) from None
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InfraError(f"downloading {loc.uri} failed ({reason}); retry later") from None
    files = [{"path": rel, "size": (dest / rel).stat().st_size, "sha256": sha256_file(dest / rel)}
             for rel in local_files(dest)]
    return _finish(loc, dest, revision or "main", files, _Transfer(downloaded=sum(f["size"] for f in files)))


# --- local folders and PVCs ------------------------------------------------------------------


def _fetch_local(loc: Location, dest: Path, exclude: Sequence[str]) -> dict:
    source = Path(loc.path)
    if not source.exists():
        raise UserError(f"{loc.uri} does not exist ({source}); check the path or the PVC mount")
    rels = [source.name] if source.is_file() else local_files(source)
    root = source.parent if source.is_file() else source
    if not rels:
        raise UserError(f"{loc.uri} is an empty folder; check the path")
    rels = [rel for rel in rels if not _excluded(rel, exclude)]
    stats = _Transfer()
    files = []
    if root.resolve() == dest.resolve():
        for rel in rels:
            files.append({"path": rel, "size": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)})
        return _finish(loc, dest, None, files, stats)
    _check_disk(dest, sum((root / r).stat().st_size for r in rels))
    for rel in rels:
        src, dst = root / rel, dest / rel
        sha = sha256_file(src)
        if dst.is_file() and dst.stat().st_size == src.stat().st_size and sha256_file(dst) == sha:
            stats.skipped += 1
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dst)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _disk_full(exc, dest) from None
                raise
            stats.downloaded += src.stat().st_size
        files.append({"path": rel, "size": src.stat().st_size, "sha256": sha})
    return _finish(loc, dest, None, files, stats)


def _finish(loc: Location, dest: Path, revision: str | None, files: list[dict], stats: _Transfer) -> dict:
    files = sorted(files, key=lambda f: f["path"])
    manifest = {"uri": loc.uri, "revision": revision, "files": files,
                "totalBytes": sum(f["size"] for f in files)}
    _write_json_atomic(dest / FETCH_MANIFEST, manifest)
    return {
        "uri": loc.uri,
        "revision": revision,
        "dest": str(dest),
        "files": len(files),
        "bytes": manifest["totalBytes"],
        "bytesDownloaded": stats.downloaded,
        "skipped": stats.skipped,
        "resumed": stats.resumed,
        "manifest": str(dest / FETCH_MANIFEST),
    }


def download(uri: str, dest: str | os.PathLike, *, revision: str | None = None,
             endpoint_url: str | None = None, exclude: Sequence[str] = ()) -> dict:
    """Fetch ``uri`` (a folder or one file) into the folder ``dest``; returns a summary.
    Files whose path inside the folder matches a glob in ``exclude`` are left behind."""
    loc = parse_uri(uri)
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    if loc.is_object_store:
        return _fetch_object_store(loc, target, revision, endpoint_url, exclude)
    if loc.scheme == "hf":
        return _fetch_hf(loc, target, revision, exclude)
    return _fetch_local(loc, target, exclude)


# --- uploads and small documents -------------------------------------------------------------


def _ordered(files: Sequence[str], last: Sequence[str]) -> list[str]:
    held = [f for f in files if f in last]
    return [f for f in files if f not in last] + sorted(held, key=list(last).index)


def upload_dir(src: str | os.PathLike, uri: str, *, last: Sequence[str] = (),
               endpoint_url: str | None = None) -> dict:
    """Copy a folder to ``uri``; files named in ``last`` are written after all the others."""
    root = Path(src)
    files = _ordered(local_files(root), last)
    loc = parse_uri(uri)
    total = 0
    if loc.scheme == "hf":
        raise UserError(f"cannot write to {uri}: Hugging Face locations are read-only here; use s3://, gs://, "
                        "pvc:// or a path for artifacts")
    if loc.is_object_store:
        client = object_client(loc, endpoint_url)
        prefix = loc.key.rstrip("/")
        for rel in files:
            key = f"{prefix}/{rel}" if prefix else rel
            extra = {"Metadata": {"sha256": sha256_file(root / rel)}}
            try:
                client.upload_file(str(root / rel), loc.bucket, key, ExtraArgs=extra)
            except Exception as exc:  # noqa: BLE001 - translated into a step error
                raise translate_error(exc, uri) from None
            total += (root / rel).stat().st_size
    else:
        dest = Path(loc.path)
        for rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.uploading")
            try:
                shutil.copyfile(root / rel, tmp)
                os.replace(tmp, target)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _disk_full(exc, dest) from None
                raise InfraError(f"writing {target} failed ({exc.strerror}); check the volume") from None
            total += target.stat().st_size
    log.info("uploaded %d files (%d bytes) to %s", len(files), total, uri)
    return {"uri": uri, "files": len(files), "bytes": total}


def read_json(uri: str, *, endpoint_url: str | None = None) -> dict | None:
    """Read a small JSON document; ``None`` when it does not exist."""
    loc = parse_uri(uri)
    if loc.is_object_store:
        from botocore.exceptions import ClientError

        client = object_client(loc, endpoint_url)
        try:
            body = client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise translate_error(exc, uri) from None
        except Exception as exc:  # noqa: BLE001 - translated into a step error
            raise translate_error(exc, uri) from None
    elif loc.scheme == "local":
        try:
            body = Path(loc.path).read_bytes()
        except FileNotFoundError:
            return None
    else:
        raise UserError(f"cannot read {uri} as a document; use s3://, gs://, pvc:// or a path")
    try:
        return json.loads(body)
    except ValueError:
        raise UserError(f"{uri} is not a JSON document; remove or repair it") from None


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """A cheap content revision of a local folder: the fetch manifest's checksums when present,
    else every file's size and modification time."""
    root = Path(folder)
    fetched = _read_json(root / FETCH_MANIFEST).get("files")
    if fetched:
        rows = [f"{f['path']}\t{f['size']}\t{f['sha256']}" for f in fetched]
    else:
        rows = [f"{rel}\t{(root / rel).stat().st_size}\t{(root / rel).stat().st_mtime_ns}" for rel in local_files(root)]
    return "sha256:" + hashlib.sha256("\n".join(rows).encode()).hexdigest()[:32]


def iter_manifest_files(folder: str | os.PathLike) -> Iterator[dict]:
    """Sizes and sha256 of every file in a local folder (for engine manifests)."""
    root = Path(folder)
    for rel in local_files(root):
        yield {"path": rel, "size": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)}


@dataclass(frozen=True)
class StorageSettings:
    """Where credentials and the S3 endpoint come from (the steps' --credentials-dir and --s3-endpoint)."""

    credentials_dir: str | None = None
    s3_endpoint: str | None = None

    def apply(self) -> None:
        """Export the credentials and the endpoint for this process's transfers."""
        load_credentials(self.credentials_dir)
        if self.s3_endpoint:
            os.environ["AWS_ENDPOINT_URL"] = self.s3_endpoint
