"""`fetch` against a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from medusa_builder import cli, storage
from medusa_common.contract import UserError

pytestmark = pytest.mark.s3

FILES = {
    "config.json": b'{"medusa_num_heads": 3}',
    "medusa_lm_head.safetensors": os.urandom(3 * 1024 * 1024 + 17),
    "nested/notes.txt": b"heads trained for 2 epochs\n",
}


@pytest.fixture
def heads_prefix(s3_server, s3_bucket):
    client = s3_server.client()
    for rel, data in FILES.items():
        client.put_object(Bucket=s3_bucket, Key=f"models/heads/{rel}", Body=data)
    client.put_object(Bucket=s3_bucket, Key="models/heads-other/ignored.bin", Body=b"x")
    return f"s3://{s3_bucket}/models/heads"


def fetch(uri, dest, tmp_path, *extra):
    result_file = tmp_path / "result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["fetch", uri, "--dest", str(dest), "--result", str(result_file), *extra])
    return stop.value.code, json.loads(result_file.read_text())


def test_download_writes_files_and_manifest(tmp_path, s3_env, heads_prefix):
    dest = tmp_path / "heads"
    code, doc = fetch(heads_prefix, dest, tmp_path)
    assert code == 0
    result = doc["result"]
    assert result["files"] == 3 and result["bytes"] == sum(len(d) for d in FILES.values())
    assert result["bytesDownloaded"] == result["bytes"] and result["skipped"] == 0
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data
    assert not (dest / "ignored.bin").exists(), "a sibling prefix is not part of the folder"
    manifest = json.loads((dest / storage.FETCH_MANIFEST).read_text())
    by_path = {f["path"]: f for f in manifest["files"]}
    for rel, data in FILES.items():
        assert by_path[rel]["size"] == len(data)
        assert by_path[rel]["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["revision"].startswith("sha256:")


def test_excluded_files_are_left_behind(tmp_path, s3_env, heads_prefix):
    dest = tmp_path / "heads"
    result = storage.download(heads_prefix, dest, exclude=("*.safetensors",))
    assert result["files"] == 2 and result["bytes"] == len(FILES["config.json"]) + len(FILES["nested/notes.txt"])
    assert (dest / "nested" / "notes.txt").is_file() and not (dest / "medusa_lm_head.safetensors").exists()
    local = storage.download(str(dest), tmp_path / "copy", exclude=("nested/*",))
    assert local["files"] == 1 and (tmp_path / "copy" / "config.json").is_file()


def test_second_fetch_skips_files_with_the_right_checksum(tmp_path, s3_env, heads_prefix):
    dest = tmp_path / "heads"
    fetch(heads_prefix, dest, tmp_path)
    (dest / "nested" / "notes.txt").write_bytes(b"tampered locally\n")
    code, doc = fetch(heads_prefix, dest, tmp_path)
    assert code == 0
    assert doc["result"]["skipped"] == 2
    assert doc["result"]["bytesDownloaded"] == len(FILES["nested/notes.txt"])
    assert (dest / "nested" / "notes.txt").read_bytes() == FILES["nested/notes.txt"]


def test_partial_download_resumes_from_where_it_stopped(tmp_path, s3_env, heads_prefix, s3_server):
    dest = tmp_path / "heads"
    rel = "medusa_lm_head.safetensors"
    data = FILES[rel]
    head = s3_server.client().head_object(Bucket=heads_prefix.split("/")[2], Key=f"models/heads/{rel}")
    part = storage.partial_path(dest, rel)
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1_000_000])
    part.with_suffix(".json").write_text(json.dumps({"etag": head["ETag"].strip('"'), "rel": rel}))
    summary = storage.download(heads_prefix, dest)
    assert summary["resumed"] == 1
    assert summary["bytesDownloaded"] == sum(len(d) for d in FILES.values()) - 1_000_000
    assert (dest / rel).read_bytes() == data
    assert not part.exists()


def test_partial_download_of_a_changed_object_starts_over(tmp_path, s3_env, heads_prefix):
    dest = tmp_path / "heads"
    rel = "medusa_lm_head.safetensors"
    part = storage.partial_path(dest, rel)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes of an older upload")
    part.with_suffix(".json").write_text(json.dumps({"etag": "0123456789abcdef", "rel": rel}))
    summary = storage.download(heads_prefix, dest)
    assert summary["resumed"] == 0
    assert (dest / rel).read_bytes() == FILES[rel]


def test_single_object_uri(tmp_path, s3_env, heads_prefix):
    summary = storage.download(f"{heads_prefix}/config.json", tmp_path / "one")
    assert summary["files"] == 1
    assert (tmp_path / "one" / "config.json").read_bytes() == FILES["config.json"]


def test_pinned_revision_is_verified(tmp_path, s3_env, heads_prefix):
    first = storage.download(heads_prefix, tmp_path / "a")
    again = storage.download(heads_prefix, tmp_path / "b", revision=first["revision"])
    assert again["revision"] == first["revision"]
    code, doc = fetch(heads_prefix, tmp_path / "c", tmp_path, "--revision", "sha256:" + "0" * 32)
    assert code == 2
    assert "was pinned" in doc["error"]["message"]


def test_wrong_credentials_are_a_user_error(tmp_path, s3_env, heads_prefix, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    code, doc = fetch(heads_prefix, tmp_path / "heads", tmp_path)
    assert code == 2
    assert doc["error"]["kind"] == "user"
    assert "was refused" in doc["error"]["message"] and "credentials" in doc["error"]["message"]
    assert "not-the-secret" not in json.dumps(doc)


def test_credentials_from_a_mounted_secret_folder(tmp_path, s3_server, heads_prefix, monkeypatch):
    secret = tmp_path / "secret"
    secret.mkdir()
    for key, value in s3_server.env().items():
        monkeypatch.delenv(key, raising=False)  # also undoes what load_credentials exports
        (secret / key).write_text(value + "\n")
    code, doc = fetch(heads_prefix, tmp_path / "heads", tmp_path, "--credentials-dir", str(secret))
    assert code == 0 and doc["result"]["files"] == 3


def test_missing_key_is_a_user_error(tmp_path, s3_env, s3_bucket):
    code, doc = fetch(f"s3://{s3_bucket}/no/such/prefix", tmp_path / "x", tmp_path)
    assert code == 2
    assert "was not found" in doc["error"]["message"]


def test_missing_bucket_is_a_user_error(tmp_path, s3_env):
    with pytest.raises(UserError, match="no such bucket"):
        storage.download("s3://bucket-that-does-not-exist/heads", tmp_path / "x")


def test_unreachable_endpoint_is_an_infrastructure_error(tmp_path, s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, doc = fetch("s3://bucket/heads", tmp_path / "x", tmp_path)
    assert code == 3
    assert doc["error"]["kind"] == "infrastructure"


def test_not_enough_disk_space_is_reported_before_downloading(tmp_path, s3_env, heads_prefix, monkeypatch):
    import shutil as real_shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError, match="out of disk space"):
        storage.download(heads_prefix, tmp_path / "heads")
    assert storage.shutil is real_shutil
    assert not (tmp_path / "heads" / "medusa_lm_head.safetensors").exists()


def test_local_and_pvc_sources(tmp_path, monkeypatch):
    source = tmp_path / "pvcs" / "models" / "heads"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    monkeypatch.setenv(storage.PVC_ROOT_ENV, str(tmp_path / "pvcs"))
    summary = storage.download("pvc://models/heads", tmp_path / "copy")
    assert summary["files"] == 1 and (tmp_path / "copy" / "config.json").read_text() == "{}"
    again = storage.download(str(source), tmp_path / "copy")
    assert again["skipped"] == 1
    with pytest.raises(UserError, match="does not exist"):
        storage.download("pvc://models/missing", tmp_path / "none")


@pytest.mark.parametrize("uri, message", [
    ("ftp://host/x", "unsupported location scheme"),
    ("s3://", "names no bucket"),
    ("hf://only-org", "hf://ORG/NAME"),
])
def test_bad_uris_are_user_errors(uri, message):
    with pytest.raises(UserError, match=message):
        storage.parse_uri(uri)


def test_gs_uses_the_s3_compatible_api_with_hmac_keys(tmp_path, s3_server, heads_prefix, monkeypatch):
    """gs:// goes through the same S3-compatible code path; here the loopback server stands in for GCS."""
    monkeypatch.setenv("GCS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("GOOGLE_HMAC_ACCESS_ID", s3_server.access_key)
    monkeypatch.setenv("GOOGLE_HMAC_SECRET", s3_server.secret_key)
    summary = storage.download(heads_prefix.replace("s3://", "gs://"), tmp_path / "heads")
    assert summary["files"] == 3
    monkeypatch.delenv("GOOGLE_HMAC_SECRET")
    with pytest.raises(UserError, match="GOOGLE_HMAC_SECRET"):
        storage.download(heads_prefix.replace("s3://", "gs://"), tmp_path / "again")


# -- hostile object names and paths (issue 22, "Path traversal") ---------------------------------

@pytest.mark.parametrize("hostile", ["../../escaped.txt", "nested/../../../escaped.txt", "/escaped.txt"])
def test_object_keys_that_leave_the_download_folder_are_refused(tmp_path, s3_env, s3_server, s3_bucket, hostile):
    """The real server stores such keys as they are; fetching the prefix must not write outside DEST."""
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="models/heads/config.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key=f"models/heads/{hostile}", Body=b"planted")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert f"models/heads/{hostile}" in keys, f"the server did not keep the key as written: {keys}"
    sandbox = tmp_path / "a" / "b"
    dest = sandbox / "heads"
    code, doc = fetch(f"s3://{s3_bucket}/models/heads", dest, tmp_path)
    assert code == 2 and doc["error"]["kind"] == "user"
    message = doc["error"]["message"]
    assert f"models/heads/{hostile}" in message and "outside the download folder" in message
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"planted"]
    assert written == [] and not (dest / "config.json").exists(), "nothing is fetched once a key is refused"


def test_a_single_object_named_dot_dot_is_refused(tmp_path, s3_env, s3_server, s3_bucket):
    s3_server.client().put_object(Bucket=s3_bucket, Key="models/..", Body=b"planted")
    with pytest.raises(UserError, match="outside the download folder"):
        storage.download(f"s3://{s3_bucket}/models/..", tmp_path / "a" / "dest")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("uri", ["pvc://claim/../../x", "pvc://claim/a/../../other-claim/x", "pvc://../etc",
                                 "pvc://claim/.."])
def test_pvc_paths_that_leave_their_claim_are_refused(tmp_path, monkeypatch, uri):
    monkeypatch.setenv(storage.PVC_ROOT_ENV, str(tmp_path / "pvcs"))
    (tmp_path / "x").write_text("outside every claim")
    with pytest.raises(UserError, match="must not contain '..' segments"):
        storage.download(uri, tmp_path / "copy")
    with pytest.raises(UserError, match="must not contain '..' segments"):
        storage.upload_dir(tmp_path / "pvcs", uri)
