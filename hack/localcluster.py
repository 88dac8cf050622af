"""A real, local Kubernetes control plane for tests and the demo.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes built
from their Go modules (see hack/build-binaries.sh); kwok plays fake GPU nodes and the lifecycles
of their pods (hack/kwok-stages.yaml). A real kubelet node (hack/realnode.py: containerd, runc,
CNI, kube-proxy, CoreDNS) joins beside them and runs real containers from images loaded with
``load-image``; ``MEDUSA_REAL_NODE=0`` leaves it out. The components listen on 127.0.0.1; with the
real node, the API server also answers pods on NODE_IP (see hack/realnode.py), which it advertises.
State lives under ``$MEDUSA_CLUSTER_DIR`` (default ``$MEDUSA_CACHE/cluster``, i.e.
``~/.cache/medusa-operator/cluster``): PKI, etcd data, logs, process ids, the admin kubeconfig and
the real node's files. ``MEDUSA_CLUSTER_DIR`` and ``MEDUSA_CLUSTER_PORT_BASE`` together let two
clusters run side by side (one of them with the real node).

    python hack/localcluster.py up                  # start, or reuse a healthy running cluster
    python hack/localcluster.py down                # stop, wipe the cluster's data, restore the host
    python hack/localcluster.py status
    python hack/localcluster.py load-image ARCHIVE  # import an image archive into the real node
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import realnode
from hoststate import HostError  # realnode.NodeError is one
# The real node's facts, defined in hack/realnode.py and importable from here.
from realnode import (  # noqa: F401
    CLUSTER_DNS_IP, NODE_IP, POD_CIDR, REAL_NODE_LABELS, REAL_NODE_NAME, REAL_NODE_SELECTOR,
    REAL_NODE_TAINT, REAL_NODE_TOLERATIONS, RealNode,
)

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
CACHE = Path(os.environ.get("MEDUSA_CACHE", Path.home() / ".cache" / "medusa-operator"))
HOST = "127.0.0.1"
CLUSTER_DIR = Path(os.environ.get("MEDUSA_CLUSTER_DIR", CACHE / "cluster"))
PORT_BASE = int(os.environ.get("MEDUSA_CLUSTER_PORT_BASE", "16400"))
SERVICE_CIDR = "10.96.0.0/16"
# The controllers' own request rate limits. Their defaults (20 and 50 requests/s) share a
# production API server among many clients; on this single-user cluster they, not the API
# server, would set the pace at which hundreds of Jobs and pods are created and finished.
CONTROLLER_CLIENT_LIMITS = ("--kube-api-qps=500", "--kube-api-burst=1000")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REAL_NODE = os.environ.get("MEDUSA_REAL_NODE", "1") != "0"
# Client certificates from the cluster CA: file name -> subject.
CLIENT_CERTS = {
    "admin": "/O=system:masters/CN=admin",
    "kubelet": f"/O=system:nodes/CN=system:node:{REAL_NODE_NAME}",
    "kube-proxy": "/CN=system:kube-proxy",
    # The API server's identity towards the kubelet (logs, exec, port-forward).
    "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
}


@dataclass(frozen=True)
class Ports:
    etcd_client: int = PORT_BASE + 1
    etcd_peer: int = PORT_BASE + 2
    apiserver: int = PORT_BASE + 43
    controller_manager: int = PORT_BASE + 57
    scheduler: int = PORT_BASE + 59
    kwok: int = PORT_BASE + 47
    kubelet: int = PORT_BASE + 50  # on NODE_IP
    kubelet_healthz: int = PORT_BASE + 48
    kube_proxy_healthz: int = PORT_BASE + 56
    kube_proxy_metrics: int = PORT_BASE + 49


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    def __init__(self, root: Path | None = None, ports: Ports | None = None, real_node: bool | None = None) -> None:
        self.root = root or CLUSTER_DIR
        self.ports = ports or Ports()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.kubeconfig = self.root / "kubeconfig"
        self.node = RealNode(self) if (REAL_NODE if real_node is None else real_node) else None
        self._bin: Path | None = None

    # -- binaries --------------------------------------------------------------------------

    @property
    def bin(self) -> Path:
        if self._bin is None:
            out = subprocess.run(
                ["bash", str(HACK / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
            )
            self._bin = Path(out.stdout.strip().splitlines()[-1])
        return self._bin

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.ports.apiserver}"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS + (realnode.NODE_COMPONENTS if self.node else ())

    def up(self, timeout: float = 120.0) -> None:
        if self.healthy():
            log(f"reusing the running cluster ({self.kubeconfig})")
            return
        self.down(quiet=True)
        for d in (self.pki, self.logs, self.pids, self.root / "etcd"):
            d.mkdir(parents=True, exist_ok=True)
        self._make_pki()
        self.write_kubeconfig(self.kubeconfig, "admin")
        started = time.monotonic()
        try:
            if self.node:
                self.node.prepare_host()
        except HostError as exc:
            raise ClusterError(str(exc)) from exc
        self._start("etcd", self._etcd_args())
        self._wait_http(f"http://{HOST}:{self.ports.etcd_client}/health", "etcd", timeout)
        self._start("kube-apiserver", self._apiserver_args())
        self._wait_ready(timeout)
        self._start("kube-controller-manager", self._controller_manager_args())
        self._start("kube-scheduler", self._scheduler_args())
        self._start("kwok", self._kwok_args())
        self.kubectl("apply", "-f", str(HACK / "cluster-nodes.yaml"))
        control_plane = time.monotonic() - started
        if self.node:
            try:
                self.node.start(timeout)
            except HostError as exc:
                raise ClusterError(str(exc)) from exc
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", f"--timeout={int(timeout)}s")
        self._wait_default_service_account(timeout)
        took = time.monotonic() - started
        parts = f" (control plane {control_plane:.1f}s, real node {took - control_plane:.1f}s)" if self.node else ""
        log(f"cluster up in {took:.1f}s{parts}; export KUBECONFIG={self.kubeconfig}")

    def down(self, quiet: bool = False) -> None:
        # The real node goes first (its kubelet needs nothing from the control plane to stop), and
        # is looked for even when this process was started with MEDUSA_REAL_NODE=0.
        node = self.node or RealNode(self)
        try:
            node.down()
        except HostError as exc:
            raise ClusterError(str(exc)) from exc
        # One at a time, etcd last: an API server whose etcd is gone first hangs in its shutdown.
        for name in reversed(COMPONENTS):
            self._stop(name)
        shutil.rmtree(self.root / "etcd", ignore_errors=True)
        if not quiet:
            log("cluster stopped")

    def status(self) -> dict[str, bool]:
        return {name: self._alive(name) for name in self.components}

    def load_image(self, archive: Path | str) -> list[str]:
        """Import a locally built image archive (docker-archive or OCI layout tarball) into the
        real node's containerd, where pods find it by name (use imagePullPolicy: Never or
        IfNotPresent; nothing is pulled). Skipped when the same archive (by content) was already
        imported. Returns the image names it holds."""
        if not self.node:
            raise ClusterError("this cluster runs without the real node (MEDUSA_REAL_NODE=0): nowhere to load images")
        try:
            return self.node.load_image(Path(archive))
        except HostError as exc:
            raise ClusterError(str(exc)) from exc

    def healthy(self) -> bool:
        if not self.kubeconfig.exists() or not all(self.status().values()):
            return False
        try:
            return self._get("/readyz") == "ok"
        except (OSError, urllib.error.URLError, ClusterError):
            return False

    # -- helpers for callers ---------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def env(self) -> dict[str, str]:
        """Environment for child processes that talk to this cluster (kubectl, helm, operator)."""
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    # -- internals -------------------------------------------------------------------------

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.pids / name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, name: str) -> bool:
        pid = self._pid(name)
        return pid is not None and _alive(pid)

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.logs / f"{name}.log", "ab") as logfile:
            proc = subprocess.Popen(
                [self.tool(name), *args], stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.root, env=env,
            )
        (self.pids / name).write_text(str(proc.pid))
        time.sleep(0.2)
        if proc.poll() is not None:
            raise ClusterError(f"{name} exited at start; see {self.logs / (name + '.log')}")

    def _stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM the process group started as ``name``, SIGKILL it after ``grace`` seconds."""
        pid = self._pid(name)
        if pid is not None and _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        (self.pids / name).unlink(missing_ok=True)

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.pki)

    def _make_pki(self) -> None:
        """A throwaway CA, SA keys, the API server's serving cert (re-signed when its names
        change) and the client certs of CLIENT_CERTS. Kept across down/up."""
        if not (self.pki / "ca.crt").exists():
            self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-keyout", "ca.key",
                          "-out", "ca.crt", "-subj", "/CN=medusa-local-ca")
            self._openssl("genrsa", "-out", "sa.key", "2048")
            self._openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        san = (f"subjectAltName=IP:127.0.0.1,IP:{NODE_IP},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
               "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
               "extendedKeyUsage=serverAuth\n")
        san_file = self.pki / "san.cnf"
        if not (self.pki / "apiserver.crt").exists() or not san_file.exists() or san_file.read_text() != san:
            san_file.write_text(san)
            self._sign("apiserver", "/CN=kube-apiserver", "san.cnf")
        (self.pki / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
        for name, subject in CLIENT_CERTS.items():
            if not (self.pki / f"{name}.crt").exists():
                self._sign(name, subject, "client.cnf")

    def _sign(self, name: str, subject: str, extfile: str) -> None:
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                      "-subj", subject)
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                      "-CAcreateserial", "-days", "3650", "-out", f"{name}.crt", "-extfile", extfile)

    def write_kubeconfig(self, path: Path, user: str) -> None:
        """A kubeconfig for the client certificate ``user`` (a key of CLIENT_CERTS)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "medusa-local", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": user, "user": {
                "client-certificate": str(self.pki / f"{user}.crt"), "client-key": str(self.pki / f"{user}.key")}}],
            "contexts": [{"name": "medusa-local", "context": {"cluster": "medusa-local", "user": user}}],
            "current-context": "medusa-local",
        }
        path.write_text(json.dumps(config, indent=2))

    def _etcd_args(self) -> list[str]:
        p = self.ports
        return [
            "--name=local", f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls=http://{HOST}:{p.etcd_client}",
            f"--advertise-client-urls=http://{HOST}:{p.etcd_client}",
            f"--listen-peer-urls=http://{HOST}:{p.etcd_peer}",
            f"--initial-advertise-peer-urls=http://{HOST}:{p.etcd_peer}",
            f"--initial-cluster=local=http://{HOST}:{p.etcd_peer}",
            "--listen-metrics-urls=", "--log-level=warn", "--quota-backend-bytes=4294967296",
            "--unsafe-no-fsync",
        ]

    def _apiserver_args(self) -> list[str]:
        pki, p = self.pki, self.ports
        if self.node:
            # Pods reach the API server through the kubernetes Service, whose endpoint is the
            # advertised address; host clients keep 127.0.0.1. The node's guard lets only this
            # machine and its pods connect.
            listen = ["--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}",
                      f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                      f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                      # The real node's name resolves nowhere; its InternalIP is NODE_IP.
                      "--kubelet-preferred-address-types=InternalIP,Hostname"]
        else:
            listen = [f"--bind-address={HOST}", f"--advertise-address={HOST}"]
        return [
            f"--etcd-servers=http://{HOST}:{p.etcd_client}",
            *listen, f"--secure-port={p.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            # Front proxy for aggregated APIs (custom metrics through prometheus-adapter).
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-allowed-names=front-proxy-client,admin",
            f"--proxy-client-cert-file={pki / 'admin.crt'}", f"--proxy-client-key-file={pki / 'admin.key'}",
            "--enable-aggregator-routing=true",
            # Like hardened clusters: setting blockOwnerDeletion needs the owner's finalizers update right.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            # What ServiceAccounts did, so tests can check an operator used every right it was granted.
            f"--audit-policy-file={self._write_audit_policy()}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
            "--v=1",
        ]

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per request made by a ServiceAccount (metadata only, no bodies)."""
        return self.logs / "audit.log"

    def _write_audit_policy(self) -> Path:
        policy = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                  "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}]}
        path = self.root / "audit-policy.json"
        path.write_text(json.dumps(policy))
        return path

    def _component_common(self, port: int) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--bind-address={HOST}", f"--secure-port={port}",
            "--leader-elect=false", "--v=1",
        ]

    def _controller_manager_args(self) -> list[str]:
        pki = self.pki
        return [
            *self._component_common(self.ports.controller_manager),
            "--controllers=*",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=false",
            # Quick reactions for tests: HPA every 5 s, scale-down after 30 s of calm.
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--horizontal-pod-autoscaler-downscale-stabilization=30s",
            "--concurrent-job-syncs=10",
            *CONTROLLER_CLIENT_LIMITS,
        ]

    def _scheduler_args(self) -> list[str]:
        return [*self._component_common(self.ports.scheduler), *CONTROLLER_CLIENT_LIMITS]

    def _kwok_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={HACK / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            f"--node-ip={HOST}", "--cidr=10.244.0.0/16",
            f"--server-address={HOST}:{self.ports.kwok}",
        ]

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.server + path, context=self._ssl_context(), timeout=5) as resp:
            return resp.read().decode()

    def _wait_http(self, url: str, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
        raise ClusterError(f"{what} did not become healthy in {timeout:.0f}s; see {self.logs}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(self._pid("kube-apiserver") or -1):
                raise ClusterError(f"kube-apiserver exited; see {self.logs / 'kube-apiserver.log'}")
            try:
                if self._get("/readyz") == "ok":
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise ClusterError(f"kube-apiserver not ready in {timeout:.0f}s; see {self.logs}")

    def _wait_default_service_account(self, timeout: float) -> None:
        """Pods need the namespace's default ServiceAccount, made by the controller-manager."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise ClusterError("the controller-manager did not create the default ServiceAccount")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def log(message: str) -> None:
    print(f"localcluster: {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "load-image"])
    parser.add_argument("archive", nargs="?", help="load-image: the image archive to import")
    args = parser.parse_args()
    cluster = LocalCluster()
    try:
        if args.command == "load-image":
            if not args.archive:
                parser.error("load-image needs the path of an image archive")
            for name in cluster.load_image(args.archive):
                print(name)
        elif args.command == "up":
            cluster.up()
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            print(f"export PATH={cluster.bin}:$PATH")
        elif args.command == "down":
            cluster.down()
        else:
            for name, running in cluster.status().items():
                print(f"{name:24s} {'running' if running else 'stopped'}")
            sys.exit(0 if cluster.healthy() else 1)
    except ClusterError as exc:
        log(f"error: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
