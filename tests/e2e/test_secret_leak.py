"""Credential values never reach an output (issue 22, "Logs, events, status and termination
messages never carry credential values").

A recognisable value is planted in the credentials a model's Secret holds. The real builder steps
then fail against the real S3 server (moto on loopback) with those credentials, run with exactly
the arguments the operator renders for its Jobs: a fetch whose S3 secret key and session token
are the planted value, and a build whose Medusa heads sit behind a gs:// HMAC secret that is the
planted value (the store lookup and the base model download work; the heads download is refused).
What the steps report becomes the termination messages of the model's Job pods (kwok plays the
pods; hack/jobscript.py hands them the real steps' results), so the operator turns the failure
into status, conditions and events. Every output is then searched for the planted value: the
steps' stdout, stderr and results, the operator's log, the model, its Events, Jobs and Pods.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from fixtures.cluster import wait_for
from jobscript import Outcome
from localcluster import LocalCluster
from medusa_operator.api.v1alpha1 import MedusaModelSpec
from medusa_operator.config import OperatorConfig
from medusa_operator.render import jobs, serving
from medusa_operator.render.context import ModelRef, RenderContext
from medusa_operator.revision import engine_cache_key, revision_of

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# The images the operator fixture runs with: the rendered arguments (cache keys) depend on them.
CONFIG = OperatorConfig(builder_image="example.invalid/medusa-builder:test",
                        serving_image="example.invalid/tritonserver:test")


def run_step(argv: list[str], credentials: Path, work: Path, log: Path) -> tuple[int, str]:
    """Run `medusa-builder ARGV` as its container would, with the rendered arguments pointed at
    local folders; returns the exit code and the result document, and keeps stdout and stderr."""
    argv = [credentials.as_posix() if a == jobs.CREDENTIALS_DIR else work.as_posix() if a == jobs.WORK_DIR else a
            for a in argv]
    result = log.with_suffix(".result.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "GCS_", "HF_"))}
    env["PYTHONPATH"] = os.pathsep.join(str(REPO / p) for p in ("common", "operator", "builder", "runtime"))
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "medusa_builder", *argv, "--result", str(result)],
                              stdout=out, stderr=subprocess.STDOUT, env=env, timeout=300)
    return proc.returncode, result.read_text()


def spec(bucket: str) -> dict[str, Any]:
    store = {"credentialsSecretRef": {"name": "store"}}
    return {"baseModel": {"uri": f"s3://{bucket}/models/base/", **store},
            "medusa": {"uri": f"gs://{bucket}/models/heads/", "tree": {"preset": "medusa2_16"}, **store},
            "engine": {"backend": "reference", "gpu": {"count": 0}},
            "artifacts": {"uri": f"s3://{bucket}/engines/", **store},
            "validation": {"baseline": "none"}}


def credentials_folder(folder: Path, values: dict[str, str]) -> Path:
    folder.mkdir()
    for key, value in values.items():
        (folder / key).write_text(value)
    return folder


def test_a_planted_credential_appears_in_no_output(local_cluster: LocalCluster, kube: Client, namespace: str,
                                                   s3_server, s3_bucket: str, operator_factory, scripter,
                                                   tmp_path: Path) -> None:
    planted = f"PLANTED{secrets.token_hex(12)}"
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="models/base/config.json", Body=b'{"model_type": "llama"}')
    client.put_object(Bucket=s3_bucket, Key="models/heads/config.json", Body=b'{"medusa_num_heads": 2}')
    values = {  # one Secret for the model's three locations, as the CRD requires
        "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_REGION": s3_server.region,
        "GOOGLE_HMAC_ACCESS_ID": s3_server.access_key, "GOOGLE_HMAC_SECRET": planted,
        "GCS_ENDPOINT_URL": s3_server.endpoint_url,
    }
    ctx = RenderContext(ModelRef("smol", namespace, "uid"), MedusaModelSpec.model_validate(spec(s3_bucket)), CONFIG)
    rev, key = revision_of(ctx.spec, ctx.builder_image, ctx.serving_image), engine_cache_key(ctx.spec, ctx.builder_image)

    def args(manifest: dict) -> list[str]:
        pod = manifest["spec"]["template"]["spec"]
        return (pod.get("initContainers") or pod["containers"])[0]["args"]

    logs = tmp_path / "logs"
    logs.mkdir()
    # The failing fetch: the serving pod's copy of the model repository, with a planted S3 secret
    # key and session token.
    fetch_credentials = credentials_folder(tmp_path / "fetch-credentials", {
        **values, "AWS_SECRET_ACCESS_KEY": planted, "AWS_SESSION_TOKEN": planted})
    fetch_argv = args(serving.deployment(ctx, rev, f"s3://{s3_bucket}/models/heads"))
    fetch_code, fetch_result = run_step(fetch_argv, fetch_credentials, tmp_path / "fetch-work", logs / "fetch.log")
    assert fetch_code == 2 and "was refused" in fetch_result, fetch_result
    # The lookup (it works: a miss) and the failing build, with the Secret's values.
    credentials = credentials_folder(tmp_path / "credentials", values)
    lookup_code, lookup_result = run_step(args(jobs.lookup_job(ctx, rev, key)), credentials, tmp_path / "lookup-work",
                                          logs / "lookup.log")
    assert lookup_code == 0 and '"cacheHit":false' in lookup_result, lookup_result
    build_code, build_result = run_step(args(jobs.build_job(ctx, rev, key)), credentials, tmp_path / "build-work",
                                        logs / "build.log")
    assert build_code == 2 and f"access to gs://{s3_bucket}/models/heads/ was refused" in build_result, build_result

    # The operator meets the same failures through its Jobs' termination messages.
    kube.create(Secret(metadata=ObjectMeta(name="store"), stringData=values), namespace=namespace)
    scripter.script("lookup", Outcome(exit_code=lookup_code, raw_message=lookup_result))
    scripter.script("build", Outcome(exit_code=build_code, raw_message=build_result))
    operator = operator_factory("--no-leader-elect")
    local_cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "inference.medusa.dev/v1alpha1", "kind": "MedusaModel", "metadata": {"name": "smol"},
        "spec": spec(s3_bucket)}))

    def model() -> dict:
        return json.loads(local_cluster.kubectl("get", "mm", "smol", "-n", namespace, "-o", "json").stdout)

    wait_for(lambda: model().get("status", {}).get("phase") == "Failed", timeout=90,
             what=lambda: f"the model to fail; status now {model().get('status')}")
    operator.stop()

    outputs = {path.name: path.read_text(errors="replace") for path in logs.iterdir()}
    outputs["operator log"] = operator.log_path.read_text(errors="replace")
    outputs["model"] = json.dumps(model())
    for kind in ("events", "jobs", "pods"):
        outputs[kind] = local_cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
    # The failure itself is there to be read (so the search below looks at the right things)...
    for where in ("build.log", "build.result.json", "model", "events", "pods"):
        assert f"gs://{s3_bucket}/models/heads/ was refused" in outputs[where], where
    assert "was refused" in outputs["fetch.result.json"] and "was refused" in outputs["fetch.log"]
    # ...and the planted value is nowhere, though the cluster holds it.
    stored = local_cluster.kubectl("get", "secret", "store", "-n", namespace, "-o",
                                   "jsonpath={.data.GOOGLE_HMAC_SECRET}").stdout
    assert base64.b64decode(stored).decode() == planted
    leaked = [where for where, text in outputs.items() if planted in text]
    assert leaked == [], f"the planted credential appears in: {leaked}"
