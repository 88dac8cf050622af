"""`build` and `build-engine` against a real S3-compatible server: cache lookup, upload, reuse.

The reference backend runs for real. For the tensorrt-llm backend, TensorRT-LLM cannot run on
this project's hardware (no NVIDIA GPU), so `test_mock_trtllm_*` install a stand-in TensorRT-LLM
1.1.0 (tests/trtllm_standin.py: its metadata, `trtllm-build` and converter scripts): they check the
cache and upload logic around the build, not the build.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builder_checkpoints import TINY_CONFIG, random_heads_state, write_tiny_base_with_weights
from trtllm_standin import activate, install_trtllm_standin

from medusa_builder import cli, storage
from medusa_builder.build.entry import lookup
from medusa_builder.build.trtllm import EXAMPLES_DIR_ENV
from medusa_common.toolchain import TRTLLM_VERSION

pytestmark = pytest.mark.s3

TREE = "[[0], [1], [0, 0]]"


@pytest.fixture
def sources(tmp_path, s3_env, s3_bucket):
    """A tiny base model and shared-lm-head heads uploaded to the bucket; returns their URIs."""
    from safetensors.torch import save_file

    base = write_tiny_base_with_weights(tmp_path / "src" / "base")
    heads = tmp_path / "src" / "heads"
    heads.mkdir()
    save_file(random_heads_state(2, 1, TINY_CONFIG["hidden_size"], None), str(heads / "medusa_lm_head.safetensors"))
    (heads / "config.json").write_text(json.dumps({"medusa_num_heads": 2, "medusa_num_layers": 1}))
    storage.upload_dir(base, f"s3://{s3_bucket}/models/base")
    storage.upload_dir(heads, f"s3://{s3_bucket}/models/heads")
    return f"s3://{s3_bucket}/models/base", f"s3://{s3_bucket}/models/heads"


def build(tmp_path, *argv, work="work"):
    result_file = tmp_path / f"result-{work}.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["build", "--work-dir", str(tmp_path / work), "--result", str(result_file), *argv])
    return stop.value.code, json.loads(result_file.read_text())


def keys(s3_server, bucket, prefix):
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"][len(prefix):]: item for item in listing.get("Contents", [])}


def test_reference_build_uploads_then_reuses(tmp_path, s3_server, s3_bucket, sources):
    base_uri, heads_uri = sources
    artifacts = f"s3://{s3_bucket}/artifacts"
    args = ["--backend", "reference", "--base-uri", base_uri, "--heads-uri", heads_uri, "--tree-choices", TREE,
            "--artifacts-uri", artifacts, "--cache-key", "ref-k1", "--num-heads", "2"]
    code, doc = build(tmp_path, *args)
    assert code == 0, doc
    result = doc["result"]
    assert result["cacheKey"] == "ref-k1" and result["cacheHit"] is False
    assert result["engineUri"] == f"{artifacts}/engines/ref-k1"
    assert (result["numHeads"], result["numLayers"], result["tree"]) == (2, 1, [[0], [1], [0, 0]])
    stored = keys(s3_server, s3_bucket, "artifacts/engines/ref-k1/")
    assert {"manifest.json", "tree.json", "base/config.json", "base/model.safetensors",
            "heads/medusa_lm_head.safetensors"} <= set(stored)
    manifest = json.loads(s3_server.client().get_object(
        Bucket=s3_bucket, Key="artifacts/engines/ref-k1/manifest.json")["Body"].read())
    assert manifest["cacheKey"] == "ref-k1" and manifest["backend"] == "reference"
    assert {f["path"]: f["size"] for f in manifest["files"]} == {
        rel: item["Size"] for rel, item in stored.items() if rel != "manifest.json"}
    assert manifest["sources"]["base"]["uri"] == base_uri
    assert stored["manifest.json"]["LastModified"] >= max(i["LastModified"] for i in stored.values())

    # The sources are gone: a cache hit must not need them.
    client = s3_server.client()
    for key in keys(s3_server, s3_bucket, "models/"):
        client.delete_object(Bucket=s3_bucket, Key=f"models/{key}")
    code, doc = build(tmp_path, *args, work="work2")
    assert code == 0, doc
    assert doc["result"]["cacheHit"] is True
    assert doc["result"]["engineUri"] == f"{artifacts}/engines/ref-k1"
    assert doc["result"]["tree"] == [[0], [1], [0, 0]]
    assert not (tmp_path / "work2" / "sources").exists()


def test_lookup_only_reports_hit_or_miss_and_builds_nothing(tmp_path, s3_server, s3_bucket, sources):
    base_uri, heads_uri = sources
    artifacts = f"s3://{s3_bucket}/artifacts"
    args = ["--backend", "reference", "--base-uri", base_uri, "--heads-uri", heads_uri, "--tree-choices", TREE,
            "--artifacts-uri", artifacts, "--cache-key", "ref-k3"]
    code, doc = build(tmp_path, *args, "--lookup-only", work="lookup1")
    assert code == 0, doc
    assert doc["result"] == {"cacheKey": "ref-k3", "cacheHit": False}
    assert not keys(s3_server, s3_bucket, "artifacts/") and not (tmp_path / "lookup1" / "sources").exists()

    assert build(tmp_path, *args)[0] == 0
    code, doc = build(tmp_path, *args, "--lookup-only", work="lookup2")
    assert code == 0 and doc["result"]["cacheHit"] is True
    assert doc["result"]["engineUri"] == f"{artifacts}/engines/ref-k3" and doc["result"]["tree"] == [[0], [1], [0, 0]]

    code, doc = build(tmp_path, "--backend", "reference", "--base-uri", base_uri, "--heads-uri", heads_uri,
                      "--cache-key", "ref-k3", "--lookup-only", work="lookup3")
    assert code == 2 and "--lookup-only needs --artifacts-uri" in doc["error"]["message"]


def test_partial_entry_without_manifest_is_not_a_hit(tmp_path, s3_server, s3_bucket, sources):
    base_uri, heads_uri = sources
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="artifacts/engines/ref-k2/base/config.json", Body=b"{}")
    code, doc = build(tmp_path, "--backend", "reference", "--base-uri", base_uri, "--heads-uri", heads_uri,
                      "--tree-choices", TREE, "--artifacts-uri", f"s3://{s3_bucket}/artifacts",
                      "--cache-key", "ref-k2")
    assert code == 0, doc
    assert doc["result"]["cacheHit"] is False
    stored = keys(s3_server, s3_bucket, "artifacts/engines/ref-k2/")
    assert "manifest.json" in stored
    assert stored["base/config.json"]["Size"] > 2, "the stale partial file was replaced"


def test_default_cache_key_covers_the_inputs(tmp_path, s3_bucket, sources):
    base_uri, heads_uri = sources
    common = ["--backend", "reference", "--base-uri", base_uri, "--heads-uri", heads_uri,
              "--artifacts-uri", f"s3://{s3_bucket}/artifacts", "--gpu-product", "NVIDIA-L4"]
    _, first = build(tmp_path, *common, "--tree-choices", TREE)
    _, again = build(tmp_path, *common, "--tree-choices", TREE, work="w2")
    _, other = build(tmp_path, *common, "--tree-choices", "[[0], [1]]", work="w3")
    assert again["result"]["cacheHit"] is True and again["result"]["cacheKey"] == first["result"]["cacheKey"]
    assert other["result"]["cacheHit"] is False and other["result"]["cacheKey"] != first["result"]["cacheKey"]


def test_source_errors_exit_2(tmp_path, s3_bucket, sources):
    base_uri, _ = sources
    code, doc = build(tmp_path, "--backend", "reference", "--base-uri", base_uri,
                      "--heads-uri", f"s3://{s3_bucket}/models/missing-heads", "--artifacts-uri",
                      f"s3://{s3_bucket}/artifacts", "--cache-key", "x1")
    assert code == 2 and "was not found" in doc["error"]["message"]
    code, doc = build(tmp_path, "--backend", "reference", "--base-uri", base_uri, "--heads-uri", sources[1],
                      "--num-heads", "3", "--artifacts-uri", f"s3://{s3_bucket}/artifacts", "--cache-key", "x2")
    assert code == 2 and "declares 3 heads but the checkpoint holds 2 heads" in doc["error"]["message"]


def test_interrupted_upload_leaves_no_manifest(tmp_path, sources):
    """A local artifact store where one file cannot be written: the entry stays incomplete."""
    base_uri, heads_uri = sources
    artifacts = tmp_path / "artifacts"
    (artifacts / "engines" / "k3" / "tree.json").mkdir(parents=True)  # a folder where a file must go
    code, doc = build(tmp_path, "--backend", "reference", "--base-uri", base_uri, "--heads-uri", heads_uri,
                      "--tree-choices", TREE, "--artifacts-uri", str(artifacts), "--cache-key", "k3")
    assert code == 3, doc
    assert not (artifacts / "engines" / "k3" / "manifest.json").exists()
    assert lookup(str(artifacts), "k3") is None


@pytest.fixture
def mock_trtllm(tmp_path, monkeypatch):
    root = install_trtllm_standin(tmp_path / "mock-trtllm")
    return activate(monkeypatch, root, tmp_path / "mock-calls.jsonl", EXAMPLES_DIR_ENV)


def test_mock_trtllm_build_uploads_engine_and_reuses_it(tmp_path, s3_server, s3_bucket, sources, mock_trtllm):
    base_uri, heads_uri = sources
    args = ["--backend", "tensorrt-llm", "--base-uri", base_uri, "--heads-uri", heads_uri, "--tree-choices", TREE,
            "--artifacts-uri", f"s3://{s3_bucket}/artifacts", "--cache-key", "trt-k1", "--gpu-product", "NVIDIA-H100"]
    code, doc = build(tmp_path, *args)
    assert code == 0, doc
    assert doc["result"]["cacheHit"] is False and doc["result"]["tensorrtLlmVersion"] == TRTLLM_VERSION
    calls = [json.loads(line) for line in mock_trtllm.read_text().splitlines()]
    assert [Path(c[0]).name for c in calls] == ["convert_checkpoint.py", "trtllm-build"]
    assert calls[1][calls[1].index("--max_draft_len") + 1] == "3"
    converter_heads = Path(calls[0][calls[0].index("--medusa_model_dir") + 1])
    assert json.loads((converter_heads / "config.json").read_text())["medusa_num_heads"] == 2
    stored = keys(s3_server, s3_bucket, "artifacts/engines/trt-k1/")
    assert {"manifest.json", "engine/rank0.engine", "engine/config.json", "tokenizer/config.json",
            "tokenizer/tokenizer_config.json", "tree.json"} <= set(stored)
    manifest = json.loads(s3_server.client().get_object(
        Bucket=s3_bucket, Key="artifacts/engines/trt-k1/manifest.json")["Body"].read())
    assert manifest["gpu"]["product"] == "NVIDIA-H100"
    assert manifest["versions"]["tensorrtLlm"] == TRTLLM_VERSION
    assert len(manifest["commands"]) == 2 and manifest["totalBytes"] > 600

    code, doc = build(tmp_path, *args, work="again")
    assert code == 0 and doc["result"]["cacheHit"] is True
    assert len(mock_trtllm.read_text().splitlines()) == 2, "a cache hit runs nothing"

    # build-engine (local folders) finds the same entry before building.
    result_file = tmp_path / "engine-result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["build-engine", "--base-dir", str(tmp_path / "work" / "sources" / "base"),
                  "--heads-dir", str(tmp_path / "work" / "sources" / "heads"), "--tree-choices", TREE,
                  "--artifacts-uri", f"s3://{s3_bucket}/artifacts", "--cache-key", "trt-k1",
                  "--work-dir", str(tmp_path / "w3"), "--result", str(result_file)])
    assert stop.value.code == 0
    assert json.loads(result_file.read_text())["result"]["cacheHit"] is True


def test_mock_trtllm_failed_build_uploads_nothing(tmp_path, s3_server, s3_bucket, sources, monkeypatch):
    root = install_trtllm_standin(tmp_path / "failing", fail_build=True)
    activate(monkeypatch, root, tmp_path / "calls.jsonl", EXAMPLES_DIR_ENV)
    base_uri, heads_uri = sources
    code, doc = build(tmp_path, "--backend", "tensorrt-llm", "--base-uri", base_uri, "--heads-uri", heads_uri,
                      "--tree-choices", TREE, "--artifacts-uri", f"s3://{s3_bucket}/artifacts",
                      "--cache-key", "trt-k2")
    assert code == 2
    assert "build failed with exit code 1" in doc["error"]["message"]
    assert "Invalid max_draft_len" in doc["error"]["message"]
    assert keys(s3_server, s3_bucket, "artifacts/engines/trt-k2/") == {}


def test_mock_trtllm_engine_packaged_into_the_store(tmp_path, s3_server, s3_bucket, sources, mock_trtllm):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    base_uri, heads_uri = sources
    artifacts = f"s3://{s3_bucket}/artifacts"
    code, built = build(tmp_path, "--backend", "tensorrt-llm", "--base-uri", base_uri, "--heads-uri", heads_uri,
                        "--tree-choices", TREE, "--artifacts-uri", artifacts, "--cache-key", "trt-k3")
    assert code == 0, built
    result_file = tmp_path / "package.json"
    output = f"{artifacts}/repositories/trt-k3"
    with pytest.raises(SystemExit) as stop:
        cli.main(["package", "--engine-uri", built["result"]["engineUri"], "--backend", "tensorrt-llm",
                  "--output-uri", output, "--work-dir", str(tmp_path / "pkg"), "--result", str(result_file)])
    doc = json.loads(result_file.read_text())
    assert stop.value.code == 0, doc
    assert doc["result"]["repositoryUri"] == output
    stored = keys(s3_server, s3_bucket, "artifacts/repositories/trt-k3/")
    assert {"repository.json", "ensemble/config.pbtxt", "ensemble/1/.keep", "tensorrt_llm/1/rank0.engine",
            "preprocessing/1/model.py", "preprocessing/1/tokenizer/tokenizer_config.json"} <= set(stored)
    assert stored["repository.json"]["LastModified"] >= max(i["LastModified"] for i in stored.values())
    text = s3_server.client().get_object(Bucket=s3_bucket, Key="artifacts/repositories/trt-k3/tensorrt_llm/config.pbtxt")
    config = text_format.Parse(text["Body"].read().decode(), model_config_pb2.ModelConfig())
    assert config.parameters["medusa_choices"].string_value == "{0}, {1}, {0, 0}"


def test_reference_base_only_build(tmp_path, s3_server, s3_bucket, sources):
    base_uri, _ = sources
    args = ["--backend", "reference", "--base-only", "--base-uri", base_uri,
            "--artifacts-uri", f"s3://{s3_bucket}/artifacts", "--cache-key", "base-k1"]
    code, doc = build(tmp_path, *args)
    assert code == 0, doc
    assert doc["result"]["numHeads"] == 0 and doc["result"]["tree"] == [] and doc["result"]["baseOnly"] is True
    stored = keys(s3_server, s3_bucket, "artifacts/engines/base-k1/")
    assert "manifest.json" in stored and "base/model.safetensors" in stored
    assert not any(k.startswith("heads/") for k in stored)
    code, doc = build(tmp_path, *args, work="again")
    assert code == 0 and doc["result"]["cacheHit"] is True
