"""A real kubelet node for the local cluster (hack/localcluster.py), beside kwok's fake GPU nodes.

containerd (with Debian's runc and CNI plugins), the kubelet and kube-proxy run as local processes
and join the local control plane as node ``real-node-0``; CoreDNS runs on it as a Deployment behind
the ``kube-dns`` Service. Images are never pulled: hack/nodeimages.py builds them and
``load_image`` imports archives into containerd. hack/nodeconfig.py writes containerd's and
CoreDNS's configuration; hack/hoststate.py holds the tools that change the host and put it back.

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
- ``/run/containerd`` (shim sockets), ``/var/lib/cni`` (CNI's result cache), ``/var/lib/kubelet``
  and ``/var/log/containers`` (the kubelet's device plugin socket and container log links, which
  no setting moves), when they were not there before.

Only one real node can run on a machine at a time (the bridge, the address and kube-proxy's chains
are host-wide); a second cluster's ``up`` says which cluster holds it.
"""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import hoststate
import nodeconfig
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
# Host-wide places containerd, CNI and the kubelet use whatever their configuration says.
CONTAINERD_RUN = Path("/run/containerd")  # shim sockets (/run/containerd/s)
CNI_CACHE = Path("/var/lib/cni")  # results of CNI ADD, read back at DEL
KUBELET_DEFAULT_ROOT = Path("/var/lib/kubelet")  # its device-plugins/kubelet.sock, whatever --root-dir says
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # a link per running container's log
# Those ``down`` removes when they were not there before ``up``.
HOST_WIDE_DIRS = (CONTAINERD_RUN, CNI_CACHE, KUBELET_DEFAULT_ROOT, CONTAINER_LOG_LINKS)
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
HOST_OWNER = Path("/run/medusa-real-node.owner")  # which cluster folder holds the real node


class NodeError(hoststate.HostError):
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
        if not hoststate.link_exists(HOST_LINK):
            hoststate.ip("link", "add", HOST_LINK, "type", "bridge")
        hoststate.ip("addr", "replace", f"{NODE_IP}/32", "dev", HOST_LINK)
        hoststate.ip("link", "set", HOST_LINK, "up")
        for name, value in _record(self.state_file)["sysctl_needed"].items():
            hoststate.sysctl_write(name, value)
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
        coredns = nodeconfig.coredns_manifests(images[1].ref, domain=CLUSTER_DOMAIN, service_ip=CLUSTER_DNS_IP,
                                               node_selector=REAL_NODE_SELECTOR, tolerations=REAL_NODE_TOLERATIONS)
        c.kubectl("apply", "-f", "-", input=json.dumps(coredns))
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
        for pid in hoststate.pids_of(str(bin_dir / "containerd-shim-runc-v2")):
            hoststate.kill(pid)
        self._kill_pod_processes(record)
        hoststate.unmount_under(self.root)
        if (bin_dir / "kube-proxy").exists():  # kube-proxy's own cleanup first, then whatever is left
            hoststate.run([str(bin_dir / "kube-proxy"), "--cleanup", "--v=0"], check=False, timeout=60)
        hoststate.remove_new_netfilter(record["netfilter"], record["nft_tables"])
        for veth in hoststate.links_on(BRIDGE):
            hoststate.ip("link", "del", veth, check=False)
        hoststate.ip("link", "del", BRIDGE, check=False)
        hoststate.ip("link", "del", HOST_LINK, check=False)
        hoststate.restore_sysctls(record["sysctls"])
        self._remove_cgroups(record)
        existed = record.get("host_wide_dirs", {})  # a record without it: leave them all
        for path in HOST_WIDE_DIRS:
            if not existed.get(str(path), True):
                shutil.rmtree(path, ignore_errors=True)
        for link in CONTAINER_LOG_LINKS.glob("*.log"):  # where it was there before: only the node's links
            if link.is_symlink() and Path(os.readlink(link)).is_relative_to(self.root):
                link.unlink(missing_ok=True)
        if existed.get(str(CNI_CACHE), True):
            for f in glob.glob(str(CNI_CACHE / "results" / f"{CNI_NETWORK}-*")):
                Path(f).unlink(missing_ok=True)
        hoststate.unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        if real_node_owner() is None:
            HOST_OWNER.unlink(missing_ok=True)

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
        names = nodeimages.archive_image_names(archive)
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
        missing = [t for t in needed if not shutil.which(t, path=hoststate.system_path())]
        missing += [str(CNI_BIN_DIR / p) for p in ("bridge", "host-local", "loopback") if not (CNI_BIN_DIR / p).exists()]
        if missing:
            raise NodeError(f"missing for the real node: {', '.join(missing)} (hack/system-deps.sh installs them)")
        owner = real_node_owner()
        if owner and owner != str(self.cluster.root):
            raise NodeError(f"the cluster in {owner} runs this machine's real node; stop it first "
                            f"(MEDUSA_CLUSTER_DIR={owner} python hack/localcluster.py down), "
                            f"or set MEDUSA_REAL_NODE=0")
        for link in (BRIDGE, HOST_LINK):
            if hoststate.link_exists(link) and owner is None:
                raise NodeError(f"interface {link} exists but no local cluster claims it; "
                                f"remove it (ip link del {link}) if it is left over")
        if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
            raise NodeError("bridge netfilter (br_netfilter) is missing: Service traffic between pods "
                            "on one bridge needs it")
        ours = {ipaddress.ip_network(POD_CIDR), ipaddress.ip_network(f"{NODE_IP}/32")}
        for route in json.loads(hoststate.ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
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
        for family in hoststate.IPTABLES:
            for chain, chain_rules in rules.items():
                if family == "ip6tables" and chain == GUARD_FORWARD:
                    continue  # the pods have no IPv6 addresses
                if hoststate.run([family, "-w", "-n", "-L", chain], check=False).returncode != 0:
                    hoststate.run([family, "-w", "-N", chain])
                    for rule in chain_rules:
                        hoststate.run([family, "-w", "-A", chain, *rule])
                while hoststate.run([family, "-w", "-D", hooks[chain], "-j", chain], check=False).returncode == 0:
                    pass
                hoststate.run([family, "-w", "-I", hooks[chain], "1", "-j", chain])

    def _env(self) -> dict[str, str]:
        # containerd finds its shim in the binaries folder, runc and iptables in the system's.
        return {**os.environ, "PATH": f"{self.cluster.bin}{os.pathsep}{hoststate.system_path()}"}

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
                    hoststate.kill(pid)

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
        runc = shutil.which("runc", path=hoststate.system_path())
        if runc is None:
            raise NodeError("runc is missing (hack/system-deps.sh installs Debian's runc)")
        (self.root / "containerd.toml").write_text(nodeconfig.containerd_config(
            root=self.containerd_root, state=self.containerd_state, socket=self.socket, runc=runc,
            cni_bin_dir=CNI_BIN_DIR, cni_conf_dir=self.cni_conf_dir, sandbox_image=sandbox_image,
            registry_dir=self.root / "registry"))
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
            # only when the disk is really full. Absolute sizes, not shares: a share of a large
            # disk is gigabytes, which writing one image archive can dip under for a moment, and
            # the pressure taint would then hold pods back for minutes.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi",
                             "nodefs.inodesFree": "2%"},
            "evictionPressureTransitionPeriod": "30s",
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


def real_node_owner() -> str | None:
    """The folder of the cluster holding this machine's real node, if one does. A claim whose
    cluster kept no record (its folder was deleted) holds nothing that down could restore."""
    try:
        owner = HOST_OWNER.read_text().strip()
    except FileNotFoundError:
        return None
    return owner if (Path(owner) / "node" / "host-state.json").exists() else None


def _host_snapshot() -> dict:
    """What ``down`` needs to give the host back: taken before the node changes anything."""
    hierarchies = hoststate.cgroup_hierarchies()
    sysctls = {name: hoststate.sysctl_read(name) for name in SYSCTLS}
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
        "netfilter": hoststate.netfilter_chains(),
        "nft_tables": hoststate.nft_tables(),
        "cgroup_hierarchies": hierarchies,
        "cgroups": [str(Path(h) / "kubepods") for h in hierarchies if (Path(h) / "kubepods").exists()],
        "host_wide_dirs": {str(path): path.exists() for path in HOST_WIDE_DIRS},
    }


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


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
