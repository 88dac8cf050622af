"""Small tools for changing this machine's state and putting it back: interfaces, sysctls,
iptables chains and nftables tables, mounts, processes. hack/realnode.py records what it needs
before it changes anything and uses these to undo it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

IPTABLES = ("iptables", "ip6tables")
BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}


class HostError(RuntimeError):
    pass


def system_path() -> str:
    return os.pathsep.join(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PATH": system_path()}, **kw)
    if check and proc.returncode != 0:
        raise HostError(f"{shlex.join(cmd)} failed: {proc.stderr.strip()}")
    return proc


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", *args], check=check)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def links_on(bridge: str) -> list[str]:
    brif = Path("/sys/class/net", bridge, "brif")
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys", name.replace(".", "/"))


def sysctl_read(name: str) -> str | None:
    try:
        return sysctl_path(name).read_text().strip()
    except OSError:
        return None


def sysctl_write(name: str, value: str) -> None:
    path = name if name.startswith("/") else sysctl_path(name)
    Path(path).write_text(value)


def cgroup_hierarchies() -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            out.append(fields[4])
    return out


def netfilter_chains() -> dict[str, dict[str, list[str]]]:
    """{family: {table: [chains]}} as iptables-save and ip6tables-save list them."""
    out: dict[str, dict[str, list[str]]] = {}
    for family in IPTABLES:
        tables: dict[str, list[str]] = {}
        table = None
        for line in run([f"{family}-save"], check=False).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                tables[table] = []
            elif line.startswith(":") and table:
                tables[table].append(line[1:].split()[0])
        out[family] = tables
    return out


def nft_tables() -> list[str] | None:
    if not shutil.which("nft", path=system_path()):
        return None
    return sorted(run(["nft", "list", "tables"], check=False).stdout.splitlines())


def restore_sysctls(items: dict[str, str]) -> None:
    """Write back recorded values (names like vm.overcommit_memory, or /proc/sys paths) that
    differ now; a value whose interface went away is skipped."""
    # ip_forward first: writing it resets every interface's forwarding switch, restored after.
    order = sorted(items, key=lambda k: (k != "net.ipv4.ip_forward", k))
    for name in order:
        path = Path(name) if name.startswith("/") else sysctl_path(name)
        try:
            if path.exists() and path.read_text().strip() != items[name]:
                path.write_text(items[name])
        except OSError:
            pass  # an interface that went away with the node


def remove_new_netfilter(before: dict[str, dict[str, list[str]]], tables_before: list[str] | None) -> None:
    """Delete every iptables chain that is not in ``before`` (netfilter_chains() taken earlier),
    after removing the rules of older chains that jump to them; then every nftables table not in
    ``tables_before`` (nft_tables() taken earlier), e.g. those iptables-nft made for the chains."""
    now = netfilter_chains()
    for family in IPTABLES:
        for table, chains in now[family].items():
            old = set(before.get(family, {}).get(table, []))
            new = [c for c in chains if c not in old]
            if not new:
                continue
            save = run([f"{family}-save", "-t", table], check=False).stdout.splitlines()
            for line in save:
                if not line.startswith("-A "):
                    continue
                args = shlex.split(line)
                chain = args[1]
                target = _rule_target(args)
                if chain not in new and target in new:
                    run([family, "-w", "-t", table, "-D", *args[1:]], check=False)
            for chain in new:
                run([family, "-w", "-t", table, "-F", chain], check=False)
            for chain in new:
                if chain not in BUILTIN_CHAINS:
                    run([family, "-w", "-t", table, "-X", chain], check=False)
    tables_now = nft_tables()
    if tables_before is not None and tables_now is not None:
        for line in tables_now:
            if line not in tables_before:  # e.g. "table ip nat", made by iptables-nft for these chains
                run(["nft", "delete", *line.split()], check=False)


def _rule_target(args: list[str]) -> str | None:
    for flag in ("-j", "-g", "--jump", "--goto"):
        if flag in args:
            i = args.index(flag)
            if i + 1 < len(args):
                return args[i + 1]
    return None


def mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix[:-1] or point.startswith(prefix):
            points.append(point)
    return points


def unmount_under(root: Path) -> None:
    """Unmount everything at or under root, deepest first, until nothing is left."""
    if not root.exists():
        return
    for _ in range(20):
        points = mounts_under(root)
        if not points:
            return
        for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
            if run(["umount", point], check=False).returncode != 0:
                run(["umount", "-l", point], check=False)
    raise HostError(f"mounts under {root} would not go away: {mounts_under(root)}")


def pids_of(binary: str | None) -> list[int]:
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


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
