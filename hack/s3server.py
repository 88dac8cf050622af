"""A local S3-compatible server (moto in server mode) that checks credentials.

The tests and `make demo` keep models, heads, datasets and engines in it. It is started with IAM
authentication switched on after the three calls that create a user, its policy and its access key,
so wrong keys are refused as a real store would. ``host`` is loopback for processes on this
machine, or the local cluster's node address when pods on the real node must reach it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key
_ALLOW_S3 = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
)


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    log_path: str = ""

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client for this server (other keys to test refusals)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key)

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and medusa-builder) at this server; the same
        keys make the credential Secret a model names."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    def upload_folder(self, folder: Path, uri: str) -> None:
        """Every file under ``folder`` to ``s3://BUCKET/PREFIX`` (the bucket is made if missing)."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder)}".lstrip("/"))


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, log_path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}: {Path(log_path).read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on {host}:{port} within {timeout} s")


@contextlib.contextmanager
def running_s3_server(host: str = "127.0.0.1", user: str = "medusa-test") -> Iterator[S3Server]:
    """A moto S3 server on a free port of ``host`` with one IAM user allowed s3:*."""
    import boto3

    port = _free_port(host)
    log_file = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_CALLS)}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_for_port(host, port, proc, log_file.name)
        endpoint = f"http://{host}:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=_ALLOW_S3)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        yield S3Server(endpoint_url=endpoint, access_key=key["AccessKeyId"],
                       secret_key=key["SecretAccessKey"], log_path=log_file.name)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_file.close()
        os.unlink(log_file.name)
