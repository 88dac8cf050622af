"""`down` gives the machine back as `up` found it (issue 20, item 2: "make cluster-down stops what
it started and leaves the machine as it found it ... so a second run starts clean").

The test starts a cluster of its own (own folder, own ports) with the real node, twice, with pods
running when it is stopped, and compares what the host looks like before and after: sysctls,
iptables chains and nftables tables, network interfaces, addresses and routes, mounts, cgroups,
the host paths containerd and CNI use by default, and the node's processes. Only one real node can
run on a machine, so this test runs before the session's cluster starts one (tests/conftest.py),
and is skipped when a cluster started outside the test run holds it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import hoststate
from localcluster import REAL_NODE_NAME, LocalCluster, Ports
from realnode import real_node_owner

pytestmark = [pytest.mark.cluster, pytest.mark.host_state]

# Sysctls that change on their own from one read to the next.
VOLATILE_SYSCTLS = ("fs.dentry-state", "fs.file-nr", "fs.inode-nr", "fs.inode-state", "kernel.ns_last_pid",
                    "kernel.random.", "net.netfilter.nf_conntrack_count", "kernel.pty.nr", "fs.aio-nr",
                    "fs.quota.")
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # the kubelet's, whatever its settings say
# Where containerd, CNI and the kubelet put things when not told otherwise.
DEFAULT_PATHS = ("/run/containerd", "/var/run/netns", "/var/lib/cni", "/etc/cni", "/opt/cni", "/opt/containerd",
                 "/var/lib/containerd", "/var/lib/kubelet", "/var/log/pods", str(CONTAINER_LOG_LINKS),
                 "/etc/kubernetes", "/run/nri", "/opt/nri", "/etc/nri")
NODE_PROCESSES = ("containerd", "containerd-shim", "kubelet", "kube-proxy", "coredns", "pause", "probe", "runc")


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def host_snapshot() -> dict[str, object]:
    sysctls = {}
    for line in subprocess.run(["sysctl", "-a"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(" = ")
        if not key.startswith(VOLATILE_SYSCTLS):
            sysctls[key] = value
    chains = {}
    for family in ("iptables", "ip6tables"):
        table = None
        for line in _run(f"{family}-save").splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.setdefault(f"{family} {table}", []).append(line[1:].split()[0])
    mounts = sorted(" ".join(line.split()[4:5] + line.split(" - ")[1].split()[:1])
                    for line in Path("/proc/self/mountinfo").read_text().splitlines())
    cgroups = sorted(str(d) for line in Path("/proc/self/mountinfo").read_text().splitlines()
                     if line.split(" - ")[1].split()[0] in ("cgroup", "cgroup2")
                     for d in Path(line.split()[4]).iterdir() if d.is_dir())
    processes = sorted(comm for p in Path("/proc").iterdir() if p.name.isdigit()
                       for comm in [_comm(p)] if comm.startswith(NODE_PROCESSES))
    return {
        "sysctls": sysctls,
        "iptables chains": {k: sorted(v) for k, v in chains.items()},
        "nftables tables": sorted(_run("nft", "list", "tables").splitlines()),
        "links": sorted(link["ifname"] for link in json.loads(_run("ip", "-j", "link"))),
        "addresses": sorted(f"{a['ifname']} {i['local']}" for a in json.loads(_run("ip", "-j", "addr"))
                            for i in a.get("addr_info", [])),
        "routes": sorted(_run("ip", "route", "show", "table", "all").splitlines()),
        "mounts": mounts,
        "cgroups": cgroups,
        "default paths": [p for p in DEFAULT_PATHS if Path(p).exists()],
        "node processes": processes,
    }


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


# Containers and pods of other tools on a shared development machine come and go while the test
# runs: for these, only what is new after down counts (a leak). Sysctls, firewall chains and the
# default paths must match both ways (down must neither leave nor remove any).
CHURN = ("links", "addresses", "routes", "mounts", "cgroups", "node processes")


def _differences(before: dict, after: dict) -> dict[str, object]:
    diff = {}
    for what in before:
        b, a = before[what], after[what]
        if isinstance(b, dict):
            changed = {k: (b.get(k), a.get(k)) for k in set(b) | set(a) if b.get(k) != a.get(k)}
        else:
            changed = {"gone": [] if what in CHURN else sorted(set(b) - set(a)), "new": sorted(set(a) - set(b))}
            changed = {k: v for k, v in changed.items() if v}
        if changed:
            diff[what] = changed
    return diff


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if owner := real_node_owner():
        pytest.skip(f"a cluster started outside this test ({owner}) holds the real node")
    # Clear of the session cluster's ports, so both could run (the session's starts later).
    ports = Ports(**{f.name: getattr(Ports(), f.name) + 300 for f in dataclasses.fields(Ports)})
    cluster = LocalCluster(root=tmp_path_factory.mktemp("host-state-cluster"), ports=ports, real_node=True)
    yield cluster
    cluster.down(quiet=True)


def test_down_leaves_the_host_as_up_found_it_and_a_second_up_starts_clean(own_cluster: LocalCluster) -> None:
    before = host_snapshot()
    for _ in range(2):
        own_cluster.up()
        node = json.loads(own_cluster.kubectl("get", "node", REAL_NODE_NAME, "-o", "json").stdout)
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
        running = json.loads(own_cluster.kubectl("get", "pods", "-A", "-o", "json",
                                                 f"--field-selector=spec.nodeName={REAL_NODE_NAME}").stdout)
        # CoreDNS is running in a container when the node is stopped.
        assert [p["status"]["phase"] for p in running["items"]] == ["Running"]
        assert host_snapshot() != before  # the node did change the host
        own_cluster.down()
        assert _differences(before, host_snapshot()) == {}


def test_down_removes_its_container_log_links_from_a_folder_that_was_there(own_cluster: LocalCluster) -> None:
    """The kubelet links each container's log into /var/log/containers whatever its settings say;
    where the folder was there before (another kubelet's), down leaves it but takes the node's
    links out of it."""
    made = not CONTAINER_LOG_LINKS.exists()
    CONTAINER_LOG_LINKS.mkdir(parents=True, exist_ok=True)
    try:
        others = sorted(CONTAINER_LOG_LINKS.iterdir())
        own_cluster.up()
        assert sorted(CONTAINER_LOG_LINKS.iterdir()) != others  # CoreDNS's container log
        own_cluster.down()
        assert CONTAINER_LOG_LINKS.is_dir()
        assert sorted(CONTAINER_LOG_LINKS.iterdir()) == others
    finally:
        if made:
            shutil.rmtree(CONTAINER_LOG_LINKS, ignore_errors=True)


def test_removing_new_chains_also_deletes_the_nftables_table_iptables_made_for_them() -> None:
    """On a machine whose firewall had no tables, the node's chains bring iptables-nft to make
    them; down must delete those tables too, not only the chains (a fresh machine's failure)."""
    tables = hoststate.nft_tables()
    if tables is None:
        pytest.skip("nft is not installed")
    # A table neither kube-proxy nor the kubelet uses, so a running node is left alone.
    free = [name for name in ("raw", "security") if f"table ip {name}" not in tables]
    if not free:
        pytest.skip("this machine already has the raw and security tables")
    table = free[0]
    before = hoststate.netfilter_chains()
    hoststate.run(["iptables", "-w", "-t", table, "-N", "MEDUSA-HOST-TEST"])
    try:
        assert f"table ip {table}" in hoststate.nft_tables()
        hoststate.remove_new_netfilter(before, tables)
        assert hoststate.nft_tables() == tables
        assert hoststate.netfilter_chains() == before
    finally:
        hoststate.run(["nft", "delete", "table", "ip", table], check=False)
