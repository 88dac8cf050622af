"""A real kubelet node for the local cluster (hack/localcluster.py), beside kwok's fake GPU nodes.

containerd (with Debian's runc and CNI plugins), the kubelet and kube-proxy run as local processes
and join the local control plane as node ``real-node-0``; CoreDNS runs on it as a Deployment behind
the ``kube-dns`` Service. Images are never pulled: hack/nodeimages.py builds them and
``load_image`` imports archives into containerd.

The node changes the host, and ``down`` undoes every change, using what ``prepare_host`` recorded
before making any (``host-state.json`` in the node's folder):
- the interface ``medusa-node0`` holding NODE_IP, the host address pods reach the API server and
  the tests' servers on (a bridge with no ports: this kernel has no dummy interfaces), and the
  pods' bridge ``medusa-br0`` (their gateway, made by the CNI bridge plugin);
- iptables chains: kube-proxy's and the kubelet's ``KUBE-*`` and the node's own ``MEDUSA-*``
  guards (pods may reach this machine only; the API server port answers only this machine),
  and the nftables tables that iptables created for them;
- sysctls the kubelet, kube-proxy and the CNI bridge set (SYSCTLS), restored to their values;
- cgroups (``kubepods`` in every hierarchy), mounts under the node's folder, the processes of pods;
- ``/run/containerd`` (shim sockets) and ``/var/lib/cni`` (CNI's result cache), when they were
  not there before.

Only one real node can run on a machine at a time (the bridge, the address and kube-proxy's chains
are host-wide); a second cluster's ``up`` says which cluster holds it.
"""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import nodeimages

if TYPE_CHECKING:
    from localcluster import LocalCluster

# -- the node's public facts (tests, the chart's values and the demo use these) -------------------

# The host address of the node: it sits on the pods' bridge, the API server advertises it (and
# has it in its serving certificate), and servers the pods must reach (S3, Prometheus) listen on
# it. From TEST-NET-2 (RFC 5737), a documentation range routed nowhere, so holding it takes no
# address that exists elsewhere.
NODE_IP = "198.51.100.10"
# The pods' addresses: clear of kwok's 10.244.0.0/16 and the Service range 10.96.0.0/16.
POD_CIDR = "10.210.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_IP = "10.96.0.10"  # the kube-dns Service; inside the Service range
REAL_NODE_NAME = "real-node-0"
REAL_NODE_LABELS = {"type": "real"}  # kwok's nodes carry type=kwok
REAL_NODE_TAINT = {"key": "medusa.dev/real-node", "value": "true", "effect": "NoSchedule"}
# What a pod meant for the real node carries (nodeSelector and tolerations).
REAL_NODE_SELECTOR = dict(REAL_NODE_LABELS)
REAL_NODE_TOLERATIONS = [{"operator": "Equal", **REAL_NODE_TAINT}]

BRIDGE = "medusa-br0"  # the pods' bridge; the CNI bridge plugin allows it one IPv4 address
HOST_LINK = "medusa-node0"  # holds NODE_IP
CNI_NETWORK = "medusa-pods"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
GUARD_FORWARD = "MEDUSA-NODE-FORWARD"
GUARD_INPUT = "MEDUSA-NODE-INPUT"
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")
# Host-wide places containerd and CNI use whatever their configuration says.
CONTAINERD_RUN = Path("/run/containerd")  # shim sockets (/run/containerd/s)
CNI_CACHE = Path("/var/lib/cni")  # results of CNI ADD, read back at DEL
# Sysctls the node's components set: the kubelet (memory overcommit, panics, key quotas),
# the CNI bridge as the pods' gateway (forwarding) and kube-proxy (route_localnet). The bridge
# netfilter switches must be on for Service traffic between pods on one bridge; the node turns
# them on when they are off. Per-interface forwarding switches follow ip_forward and are restored
# after it.
SYSCTLS = (
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
)
FORWARDING_GLOBS = ("net/ipv4/conf/*/forwarding", "net/ipv6/conf/*/forwarding")
IPTABLES = ("iptables", "ip6tables")
BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
HOST_OWNER = Path("/run/medusa-real-node.owner")  # which cluster folder holds the real node


class NodeError(RuntimeError):
    pass


class RealNode:
    """The real node of one LocalCluster. Its files live in ``<cluster>/node``."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.root = cluster.root / "node"
        self.state_file = self.root / "host-state.json"
        self.containerd_root = self.root / "containerd"
        self.containerd_state = self.root / "containerd-state"
        self.socket = self.root / "containerd.sock"
        self.kubelet_root = self.root / "kubelet"
        self.cni_conf_dir = self.root / "cni" / "net.d"
        self.cni_ipam_dir = self.root / "cni" / "ipam"
        self.loaded_dir = self.root / "loaded-images"

    # -- lifecycle -----------------------------------------------------------------------------

    def prepare_host(self) -> None:
        """Record the host's state, then create the bridge holding NODE_IP and the guards.
        Runs before the API server starts, since it listens for pods on NODE_IP."""
        self._preflight()
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.state_file.exists():  # a half-finished earlier up keeps its first record
            HOST_OWNER.write_text(str(self.cluster.root))
            self.state_file.write_text(json.dumps({**_host_snapshot(), "bin": str(self.cluster.bin)}, indent=1))
        if not _link_exists(HOST_LINK):
            _ip("link", "add", HOST_LINK, "type", "bridge")
        _ip("addr", "replace", f"{NODE_IP}/32", "dev", HOST_LINK)
        _ip("link", "set", HOST_LINK, "up")
        for name, value in _record(self.state_file)["sysctl_needed"].items():
            _sysctl_write(name, value)
        self._install_guards()

    def start(self, timeout: float) -> None:
        """Start containerd, the kubelet and kube-proxy; load the node's images; run CoreDNS.
        Returns once the node is Ready and CoreDNS answers."""
        c = self.cluster
        images = nodeimages.all_images(c.bin)
        pause = images[0]
        for d in (self.containerd_root, self.containerd_state, self.kubelet_root, self.cni_conf_dir,
                  self.cni_ipam_dir, self.loaded_dir, self.root / "pod-logs", self.root / "registry"):
            d.mkdir(parents=True, exist_ok=True)
        self._write_configs(pause.ref)
        c._start("containerd", [f"--config={self.root / 'containerd.toml'}"], env=self._env())
        _wait(lambda: self._ctr("version", check=False).returncode == 0, timeout,
              f"containerd did not answer; see {c.logs / 'containerd.log'}")
        # The kubelet registers the node while the images load; no pod is bound to it before
        # CoreDNS, which comes after them.
        c._start("kubelet", self._kubelet_args(), env=self._env())
        c._start("kube-proxy", [f"--config={self.root / 'kube-proxy.json'}", "--v=1"], env=self._env())
        for image in images:
            self.load_image(image.archive)
        c.kubectl("apply", "-f", "-", input=json.dumps(coredns_manifests(images[1].ref)))
        _wait(lambda: _http_ok(f"http://127.0.0.1:{c.ports.kube_proxy_healthz}/healthz"), timeout,
              f"kube-proxy did not become healthy; see {c.logs / 'kube-proxy.log'}")
        self._install_guards()  # kube-proxy put its FORWARD jump first; the guard goes before it
        _wait(self._ready, timeout, f"node {REAL_NODE_NAME} did not become Ready; see {c.logs / 'kubelet.log'}")
        c.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", f"--timeout={int(timeout)}s")

    def _ready(self) -> bool:
        proc = self.cluster.kubectl("get", "node", REAL_NODE_NAME, "-o", "json", check=False)
        if proc.returncode != 0:
            return False  # not registered yet
        conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def down(self) -> None:
        """Stop everything the node started and give the host back as ``prepare_host`` found it.
        Safe to run again, and after a partial start."""
        if not self.state_file.exists():
            return
        record = _record(self.state_file)
        c = self.cluster
        bin_dir = Path(record["bin"])
        c._stop("kubelet")  # first, or it restarts the containers stopped next
        c._stop("kube-proxy")
        if c._alive("containerd"):
            self._remove_containers(bin_dir)
        c._stop("containerd")
        for pid in _pids_of(str(bin_dir / "containerd-shim-runc-v2")):
            _kill(pid)
        self._kill_pod_processes(record)
        _unmount_under(self.root)
        if (bin_dir / "kube-proxy").exists():  # kube-proxy's own cleanup first, then whatever is left
            _run([str(bin_dir / "kube-proxy"), "--cleanup", "--v=0"], check=False, timeout=60)
        _remove_new_netfilter(record)
        for veth in _links_on(BRIDGE):
            _ip("link", "del", veth, check=False)
        _ip("link", "del", BRIDGE, check=False)
        _ip("link", "del", HOST_LINK, check=False)
        _restore_sysctls(record)
        self._remove_cgroups(record)
        for path, existed in ((CONTAINERD_RUN, record["containerd_run"]), (CNI_CACHE, record["cni_cache"])):
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
        if record["cni_cache"]:
            for f in glob.glob(str(CNI_CACHE / "results" / f"{CNI_NETWORK}-*")):
                Path(f).unlink(missing_ok=True)
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        if HOST_OWNER.exists() and HOST_OWNER.read_text().strip() == str(c.root):
            HOST_OWNER.unlink()

    def load_image(self, archive: Path) -> list[str]:
        """Import an image archive (docker-archive or OCI layout tarball) into containerd's k8s.io
        namespace, where the kubelet finds it; returns its image names. Does nothing when this
        archive (by content) was imported before and its images are still there."""
        archive = Path(archive).resolve()
        if not archive.is_file():
            raise NodeError(f"no image archive at {archive}")
        if not self.cluster._alive("containerd"):
            raise NodeError("the real node is not running (make cluster-up starts it)")
        digest = self._archive_digest(archive)
        record = self.loaded_dir / f"{digest}.json"
        if record.exists():
            names = json.loads(record.read_text())
            if set(names) <= set(self._ctr("images", "ls", "-q").stdout.split()):
                return names
        names = archive_image_names(archive)
        proc = self._ctr("images", "import", "--local", str(archive), check=False)
        if proc.returncode != 0:
            raise NodeError(f"importing {archive} failed: {proc.stderr.strip()}")
        record.write_text(json.dumps(names))
        return names

    # -- pieces --------------------------------------------------------------------------------

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise NodeError("the real node needs root (network, cgroups, mounts); "
                            "MEDUSA_REAL_NODE=0 starts the cluster without it")
        needed = ["ip", "iptables", "iptables-save", "ip6tables", "ip6tables-save", "runc", "mount", "umount"]
        missing = [t for t in needed if not shutil.which(t, path=_system_path())]
        missing += [str(CNI_BIN_DIR / p) for p in ("bridge", "host-local", "loopback") if not (CNI_BIN_DIR / p).exists()]
        if missing:
            raise NodeError(f"missing for the real node: {', '.join(missing)} (hack/system-deps.sh installs them)")
        owner = HOST_OWNER.read_text().strip() if HOST_OWNER.exists() else None
        if owner and owner != str(self.cluster.root):
            raise NodeError(f"the cluster in {owner} runs this machine's real node; stop it first "
                            f"(MEDUSA_CLUSTER_DIR={owner} python hack/localcluster.py down), "
                            f"or set MEDUSA_REAL_NODE=0")
        for link in (BRIDGE, HOST_LINK):
            if _link_exists(link) and owner is None:
                raise NodeError(f"interface {link} exists but no local cluster claims it; "
                                f"remove it (ip link del {link}) if it is left over")
        if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
            raise NodeError("bridge netfilter (br_netfilter) is missing: Service traffic between pods "
                            "on one bridge needs it")
        ours = {ipaddress.ip_network(POD_CIDR), ipaddress.ip_network(f"{NODE_IP}/32")}
        for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
            dst = route.get("dst", "")
            if dst in ("default", "") or route.get("dev") in (BRIDGE, HOST_LINK):
                continue
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
            if any(net.overlaps(o) for o in ours) and not net.is_loopback:
                raise NodeError(f"this machine already routes {dst} (dev {route.get('dev')}), which overlaps "
                                f"the real node's {POD_CIDR} or {NODE_IP}; change them in hack/realnode.py")

    def _install_guards(self) -> None:
        """Pods reach this machine only: forwarded traffic from the pod range must leave on the
        bridge, and nothing forwarded from elsewhere enters it. The API server listens on every
        address (pods reach it on NODE_IP, host clients on 127.0.0.1); its port answers only
        loopback and the bridge. Each guard chain is (re)hooked in first place."""
        api = str(self.cluster.ports.apiserver)
        rules = {
            GUARD_FORWARD: [["-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "DROP"],
                            ["-d", POD_CIDR, "!", "-i", BRIDGE, "-j", "DROP"]],
            GUARD_INPUT: [["-p", "tcp", "--dport", api, "-i", "lo", "-j", "RETURN"],
                          ["-p", "tcp", "--dport", api, "-i", BRIDGE, "-j", "RETURN"],
                          ["-p", "tcp", "--dport", api, "-j", "DROP"]],
        }
        hooks = {GUARD_FORWARD: "FORWARD", GUARD_INPUT: "INPUT"}
        for family in IPTABLES:
            for chain, chain_rules in rules.items():
                if family == "ip6tables" and chain == GUARD_FORWARD:
                    continue  # the pods have no IPv6 addresses
                if _run([family, "-w", "-n", "-L", chain], check=False).returncode != 0:
                    _run([family, "-w", "-N", chain])
                    for rule in chain_rules:
                        _run([family, "-w", "-A", chain, *rule])
                while _run([family, "-w", "-D", hooks[chain], "-j", chain], check=False).returncode == 0:
                    pass
                _run([family, "-w", "-I", hooks[chain], "1", "-j", chain])

    def _env(self) -> dict[str, str]:
        # containerd finds its shim in the binaries folder, runc and iptables in the system's.
        return {**os.environ, "PATH": f"{self.cluster.bin}{os.pathsep}{_system_path()}"}

    def _ctr(self, *args: str, check: bool = True, bin_dir: Path | None = None) -> subprocess.CompletedProcess:
        ctr = (bin_dir or self.cluster.bin) / "ctr"
        proc = subprocess.run([str(ctr), "--address", str(self.socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def _archive_digest(self, archive: Path) -> str:
        """sha256 of the archive, remembered per (path, size, mtime) so a large archive is read
        once per cluster."""
        memo_file = self.loaded_dir / "digests.json"
        memo = json.loads(memo_file.read_text()) if memo_file.exists() else {}
        stat = archive.stat()
        stamp = f"{archive}|{stat.st_size}|{stat.st_mtime_ns}"
        if stamp not in memo:
            digest = hashlib.sha256()
            with archive.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            memo[stamp] = digest.hexdigest()
            memo_file.write_text(json.dumps(memo))
        return memo[stamp]

    def _remove_containers(self, bin_dir: Path) -> None:
        """Kill every container and pod sandbox, then delete them, so containerd unmounts their
        filesystems and their shims exit."""
        def ctr(*args: str) -> subprocess.CompletedProcess:
            return self._ctr(*args, check=False, bin_dir=bin_dir)

        tasks = ctr("tasks", "ls", "-q").stdout.split()
        for task in tasks:
            ctr("tasks", "kill", "-a", "-s", "SIGKILL", task)
        for task in tasks:
            ctr("tasks", "delete", "-f", task)
        containers = ctr("containers", "ls", "-q").stdout.split()
        if containers:
            ctr("containers", "delete", *containers)

    def _kill_pod_processes(self, record: dict) -> None:
        """Whatever still runs in the pods' cgroups (a container whose shim died) is killed."""
        for hierarchy in record["cgroup_hierarchies"]:
            top = Path(hierarchy) / "kubepods"
            if not top.is_dir() or str(top) in record["cgroups"]:
                continue
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids = [int(p) for p in procs.read_text().split()]
                except OSError:
                    continue
                for pid in pids:
                    _kill(pid)

    def _remove_cgroups(self, record: dict) -> None:
        for hierarchy in record["cgroup_hierarchies"]:
            top = Path(hierarchy) / "kubepods"
            if not top.is_dir() or str(top) in record["cgroups"]:
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                deadline = time.monotonic() + 5
                while d.exists():
                    try:
                        d.rmdir()
                    except OSError:
                        if time.monotonic() > deadline:
                            raise NodeError(f"cannot remove cgroup {d}: processes still in it")
                        time.sleep(0.1)

    def _kubelet_args(self) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in REAL_NODE_LABELS.items())
        return [
            f"--config={self.root / 'kubelet.json'}", f"--kubeconfig={self.root / 'kubelet.kubeconfig'}",
            f"--root-dir={self.kubelet_root}", f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--hostname-override={REAL_NODE_NAME}", f"--node-ip={NODE_IP}", f"--node-labels={labels}",
            "--v=1",
        ]

    def _write_configs(self, sandbox_image: str) -> None:
        c = self.cluster
        pki = c.pki
        runc = shutil.which("runc", path=_system_path())
        (self.root / "containerd.toml").write_text(containerd_config(
            root=self.containerd_root, state=self.containerd_state, socket=self.socket, runc=runc,
            cni_conf_dir=self.cni_conf_dir, sandbox_image=sandbox_image, registry_dir=self.root / "registry"))
        (self.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True,
                # No masquerading: pods keep their own addresses, so they can reach this machine's
                # addresses and nothing beyond it (the forward guard drops the rest).
                "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.cni_ipam_dir)},
            }],
        }, indent=1))
        # Pods with dnsPolicy Default (CoreDNS itself) get this file: no name servers, so no
        # query leaves the machine; ClusterFirst pods get CLUSTER_DNS_IP from the kubelet.
        (self.root / "resolv.conf").write_text("")
        c.write_kubeconfig(self.root / "kubelet.kubeconfig", "kubelet")
        c.write_kubeconfig(self.root / "kube-proxy.kubeconfig", "kube-proxy")
        (self.root / "kubelet.json").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": c.ports.kubelet, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": c.ports.kubelet_healthz,
            # The API server presents a client certificate from the cluster CA (system:masters).
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            # This machine kind: cgroup v1 (hybrid), no systemd, swap allowed.
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
            "clusterDNS": [CLUSTER_DNS_IP], "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(self.root / "resolv.conf"),
            "podLogsDir": str(self.root / "pod-logs"),
            "registerWithTaints": [REAL_NODE_TAINT],
            # Images are loaded by hand and can't be pulled again: never collect them, and evict
            # only when the disk is really full.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                             "nodefs.inodesFree": "2%"},
            "serializeImagePulls": False,
            "rotateCertificates": False, "serverTLSBootstrap": False,
        }, indent=1))
        (self.root / "kube-proxy.json").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.root / "kube-proxy.kubeconfig")},
            "hostnameOverride": REAL_NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": f"127.0.0.1:{c.ports.kube_proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{c.ports.kube_proxy_metrics}",
            # NodePorts open on NODE_IP only, never on this machine's other addresses.
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
            # Zero leaves the host's conntrack settings as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }, indent=1))


# -- configuration text ---------------------------------------------------------------------------


def containerd_config(*, root: Path, state: Path, socket: Path, runc: str | None, cni_conf_dir: Path,
                      sandbox_image: str, registry_dir: Path) -> str:
    if runc is None:
        raise NodeError("runc is missing (hack/system-deps.sh installs Debian's runc)")
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    cri_images = "plugins.'io.containerd.cri.v1.images'"
    return f"""version = 4
root = "{root}"
state = "{state}"
# Storage drivers and services this node does not use.
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri",
]

[plugins.'io.containerd.server.v1.grpc']
  address = "{socket}"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "{socket}.ttrpc"

[{cri_runtime}]
  # root on this machine lacks CAP_SYS_RESOURCE: runc must not try to lower oom_score_adj.
  restrict_oom_score_adj = true
  # Network namespaces are mounted in the node's folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false

[{cri_runtime}.containerd]
  default_runtime_name = "runc"

[{cri_runtime}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri_runtime}.containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{state / 'runc'}"
  SystemdCgroup = false

[{cri_runtime}.cni]
  bin_dirs = ["{CNI_BIN_DIR}"]
  conf_dir = "{cni_conf_dir}"

[{cri_images}]
  snapshotter = "overlayfs"

[{cri_images}.pinned_images]
  sandbox = "{sandbox_image}"

[{cri_images}.registry]
  # No registry configuration: every image is imported from an archive.
  config_path = "{registry_dir}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

# Paths outside the node's folder by default.
[plugins.'io.containerd.internal.v1.opt']
  path = "{root / 'opt'}"

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "{root / 'image-verifier'}"
"""


def coredns_manifests(image: str) -> dict:
    """CoreDNS behind the kube-dns Service, on the real node. It serves the cluster's names
    only: nothing is forwarded, so a query for any other name stays on the machine."""
    corefile = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loop
}}
"""
    labels = {"k8s-app": "kube-dns"}
    ns = "kube-system"
    items = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "serviceAccountName": "coredns",
                 "dnsPolicy": "Default",
                 "nodeSelector": REAL_NODE_SELECTOR,
                 "tolerations": REAL_NODE_TOLERATIONS,
                 "priorityClassName": "system-cluster-critical",
                 "containers": [{
                     "name": "coredns", "image": image, "imagePullPolicy": "Never",
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                     "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                     "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                     "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
             }},
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
         "spec": {"clusterIP": CLUSTER_DNS_IP, "selector": labels,
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def archive_image_names(archive: Path) -> list[str]:
    """The image names an archive carries, as containerd will store them: RepoTags of a
    docker-archive, or the name annotations of an OCI layout's index."""
    with tarfile.open(archive) as tar:
        names: list[str] = []
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        if "index.json" in members and "oci-layout" in members:
            index = json.load(tar.extractfile(members["index.json"]))
            for m in index.get("manifests", []):
                ann = m.get("annotations", {})
                name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
                if name:
                    names.append(normalize_image_name(name))
        elif "manifest.json" in members:
            for m in json.load(tar.extractfile(members["manifest.json"])):
                names += [normalize_image_name(t) for t in m.get("RepoTags") or []]
    if not names:
        raise NodeError(f"{archive} names no image (a docker-archive needs RepoTags, an OCI layout "
                        "an io.containerd.image.name annotation)")
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


# -- the host ---------------------------------------------------------------------------------------


def _system_path() -> str:
    return os.pathsep.join(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def _run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PATH": _system_path()}, **kw)
    if check and proc.returncode != 0:
        raise NodeError(f"{shlex.join(cmd)} failed: {proc.stderr.strip()}")
    return proc


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check=check)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _links_on(bridge: str) -> list[str]:
    brif = Path("/sys/class/net", bridge, "brif")
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys", name.replace(".", "/"))


def _sysctl_read(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def _sysctl_write(name: str, value: str) -> None:
    path = name if name.startswith("/") else _sysctl_path(name)
    Path(path).write_text(value)


def _cgroup_hierarchies() -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            out.append(fields[4])
    return out


def _netfilter_chains() -> dict[str, dict[str, list[str]]]:
    """{family: {table: [chains]}} as iptables-save and ip6tables-save list them."""
    out: dict[str, dict[str, list[str]]] = {}
    for family in IPTABLES:
        tables: dict[str, list[str]] = {}
        table = None
        for line in _run([f"{family}-save"], check=False).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                tables[table] = []
            elif line.startswith(":") and table:
                tables[table].append(line[1:].split()[0])
        out[family] = tables
    return out


def _nft_tables() -> list[str] | None:
    if not shutil.which("nft", path=_system_path()):
        return None
    return sorted(_run(["nft", "list", "tables"], check=False).stdout.splitlines())


def _host_snapshot() -> dict:
    """What ``down`` needs to give the host back: taken before the node changes anything."""
    hierarchies = _cgroup_hierarchies()
    sysctls = {name: _sysctl_read(name) for name in SYSCTLS}
    for pattern in FORWARDING_GLOBS:
        for path in glob.glob(f"/proc/sys/{pattern}"):
            sysctls[path] = Path(path).read_text().strip()
    needed = {}
    for name in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
        if sysctls.get(name) == "0":
            needed[name] = "1"
    return {
        "sysctls": {k: v for k, v in sysctls.items() if v is not None},
        "sysctl_needed": needed,
        "netfilter": _netfilter_chains(),
        "nft_tables": _nft_tables(),
        "cgroup_hierarchies": hierarchies,
        "cgroups": [str(Path(h) / "kubepods") for h in hierarchies if (Path(h) / "kubepods").exists()],
        "containerd_run": CONTAINERD_RUN.exists(),
        "cni_cache": CNI_CACHE.exists(),
    }


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


def _restore_sysctls(record: dict) -> None:
    items = record["sysctls"]
    # ip_forward first: writing it resets every interface's forwarding switch, restored after.
    order = sorted(items, key=lambda k: (k != "net.ipv4.ip_forward", k))
    for name in order:
        path = Path(name) if name.startswith("/") else _sysctl_path(name)
        try:
            if path.exists() and path.read_text().strip() != items[name]:
                path.write_text(items[name])
        except OSError:
            pass  # an interface that went away with the node


def _remove_new_netfilter(record: dict) -> None:
    """Delete every iptables chain (and nftables table) that was not there at the record, after
    removing the rules of older chains that jump to them."""
    before = record["netfilter"]
    now = _netfilter_chains()
    for family in IPTABLES:
        for table, chains in now[family].items():
            old = set(before.get(family, {}).get(table, []))
            new = [c for c in chains if c not in old]
            if not new:
                continue
            save = _run([f"{family}-save", "-t", table], check=False).stdout.splitlines()
            for line in save:
                if not line.startswith("-A "):
                    continue
                args = shlex.split(line)
                chain = args[1]
                target = _rule_target(args)
                if chain not in new and target in new:
                    _run([family, "-w", "-t", table, "-D", *args[1:]], check=False)
            for chain in new:
                _run([family, "-w", "-t", table, "-F", chain], check=False)
            for chain in new:
                if chain not in BUILTIN_CHAINS:
                    _run([family, "-w", "-t", table, "-X", chain], check=False)
    tables_before = record.get("nft_tables")
    tables_now = _nft_tables()
    if tables_before is not None and tables_now is not None:
        for line in tables_now:
            if line not in tables_before:  # e.g. "table ip nat", made by iptables-nft for these chains
                _run(["nft", "delete", *line.split()[1:]], check=False)


def _rule_target(args: list[str]) -> str | None:
    for flag in ("-j", "-g", "--jump", "--goto"):
        if flag in args:
            i = args.index(flag)
            if i + 1 < len(args):
                return args[i + 1]
    return None


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix[:-1] or point.startswith(prefix):
            points.append(point)
    return points


def _unmount_under(root: Path) -> None:
    """Unmount everything at or under root, deepest first, until nothing is left."""
    if not root.exists():
        return
    for _ in range(20):
        points = _mounts_under(root)
        if not points:
            return
        for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
            if _run(["umount", point], check=False).returncode != 0:
                _run(["umount", "-l", point], check=False)
    raise NodeError(f"mounts under {root} would not go away: {_mounts_under(root)}")


def _pids_of(binary: str | None) -> list[int]:
    if not binary:
        return []
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "exe") == binary:
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _wait(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise NodeError(message)
        time.sleep(0.1)
