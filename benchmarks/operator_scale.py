"""The operator at cluster scale: N MedusaModels applied at once on the local cluster.

    python benchmarks/operator_scale.py --models 100 300 1000

For each N, on a fresh local cluster (kube-apiserver, etcd, controller-manager, scheduler and
kwok; no real node), with extra kwok GPU nodes so GPUs are not the limit:

- one model first (three times, one after another): apply -> Serving, and that time less what
  the simulation scripts on its critical path: the run time of each Job on it (lookup, build,
  package, validate; the baseline's Jobs run beside them) and kwok's simulated start of each pod
  on it (those four Jobs' and the candidate's serving pod);
- N models applied at once: time until every one is Serving, the CPU each process used
  meanwhile (operator, API server, etcd, kwok, controller-manager, scheduler, and this script,
  which plays the Jobs through hack/jobscript.py), and the API server's requests: all of them
  (its own request counter) and the operator's (the audit log);
- idle: once every model is Serving and the operator has written nothing for a while (the
  control plane settles: Deployment and HPA status), the operator's API requests per minute by
  verb and resource (from the API server's audit log, the operator's ServiceAccount only), its
  writes, its CPU;
- memory: the operator's resident set at N Serving models;
- failover: a standby replica (started with the leader, caches warm) takes over when the
  leader stops (SIGTERM releases the Lease): time to the new leader's first reconcile pass and
  to its having passed every model once.

Job results are scripted (kwok completes each Job pod after ``--job-ms``); everything else is
real. Prints its figures and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE_PATHS = [str(REPO / p) for p in ("hack", "tests", "common", "operator", "builder", "runtime")]
sys.path[:0] = PACKAGE_PATHS
# The operators it starts import this checkout too, wherever the environment's editable installs
# point (another clone may have pointed them elsewhere).
os.environ["PYTHONPATH"] = os.pathsep.join(PACKAGE_PATHS + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
os.environ.setdefault("MEDUSA_CLUSTER_DIR", str(Path(tempfile.gettempdir()) / "medusa-operator-scale"))
os.environ.setdefault("MEDUSA_CLUSTER_PORT_BASE", "27000")
os.environ["MEDUSA_REAL_NODE"] = "0"

from lightkube import Client  # noqa: E402
from lightkube.codecs import from_dict  # noqa: E402
from lightkube.config.kubeconfig import KubeConfig  # noqa: E402
from lightkube.resources.apps_v1 import Deployment  # noqa: E402
from lightkube.resources.batch_v1 import Job  # noqa: E402
from lightkube.resources.core_v1 import Namespace, Pod  # noqa: E402
from lightkube.models.meta_v1 import ObjectMeta  # noqa: E402

from fixtures.manifests import model_manifest  # noqa: E402
from fixtures.operator import RELEASE, OperatorProcess, chart_rbac, service_account_kubeconfig  # noqa: E402
from jobscript import JobScripter, default_outcome  # noqa: E402
from localcluster import COMPONENTS, ClusterError, LocalCluster  # noqa: E402
from medusa_operator.controller.kube import MedusaModelResource  # noqa: E402

NAMESPACE = "scale"
GPU_NODES_PER_100_MODELS = 4
GPUS_PER_NODE = 64
# The Jobs one model's candidate waits for in turn; the baseline's lookup, build and package run
# beside the candidate's, so they add nothing to the critical path.
CRITICAL_PATH_JOBS = ("lookup", "build", "package", "validate")
# Pods on the critical path: its Jobs' and the candidate's first serving pod.
CRITICAL_PATH_PODS = len(CRITICAL_PATH_JOBS) + 1
SINGLE_RUNS = 3
# Idle is measured once the operator has written nothing (Lease aside) for this long.
SETTLED_AFTER_SECONDS = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STEPS = ("lookup", "lookup-base", "build", "build-base", "package", "package-base", "validate")


def timed(step: str, job_ms: int):
    """The Job scripter's default, successful result for ``step``, its pod running ``job_ms``."""
    return lambda pod: dataclasses.replace(default_outcome(step, pod), delay_ms=job_ms)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gpu_nodes(count: int) -> list[dict]:
    return [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": f"scale-gpu-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"kubernetes.io/hostname": f"scale-gpu-{i}", "kubernetes.io/os": "linux",
                                "type": "kwok", "nvidia.com/gpu.present": "true",
                                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                "nvidia.com/gpu.count": str(GPUS_PER_NODE)}},
        "status": {"capacity": {"cpu": "512", "memory": "4Ti", "pods": "1000", "nvidia.com/gpu": str(GPUS_PER_NODE),
                                "ephemeral-storage": "10Ti"}},
    } for i in range(count)]


class PhaseWatch:
    """Follows the models' phases with a watch; records when each first reached Serving."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self.serving: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for _, obj in self.client.watch(MedusaModelResource, namespace=self.namespace, server_timeout=30):
                    if (obj.get("status") or {}).get("phase") == "Serving":
                        self.serving.setdefault(obj["metadata"]["name"], time.monotonic())
                    if self.stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - watch again
                time.sleep(0.5)

    def wait(self, names: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n in self.serving for n in names):
                return True
            time.sleep(0.1)
        return False


def owner_of(pod) -> str:
    """The Job or Deployment a pod belongs to (a Deployment's pods belong to its ReplicaSet,
    named after it plus a hash)."""
    ref = (pod.metadata.ownerReferences or [None])[0]
    if ref is None:
        return ""
    return ref.name.rsplit("-", 1)[0] if ref.kind == "ReplicaSet" else ref.name


class Timeline:
    """When each Job, Deployment and pod of the namespace was first seen created, bound to a
    node, Ready and finished (from watches): splits one model's apply -> Serving into the
    operator's reactions and the control plane's work."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self.seen: dict[tuple[str, str], float] = {}  # (object name, milestone) -> first time
        self.owner: dict[str, str] = {}  # pod -> its Job or Deployment
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._follow, args=(kind,), daemon=True)
                        for kind in (Job, Deployment, Pod)]
        for thread in self.threads:
            thread.start()

    def mark(self, name: str, milestone: str) -> None:
        self.seen.setdefault((name, milestone), time.monotonic())

    def _follow(self, kind) -> None:
        while not self.stop.is_set():
            try:
                for _, obj in self.client.watch(kind, namespace=self.namespace, server_timeout=30):
                    name = obj.metadata.name
                    self.mark(name, "created")
                    if kind is Pod:
                        self.owner[name] = owner_of(obj)
                        if obj.spec.nodeName:
                            self.mark(name, "bound")
                        if any(c.type == "Ready" and c.status == "True" for c in obj.status.conditions or []):
                            self.mark(name, "ready")
                        if obj.status.phase == "Succeeded":
                            self.mark(name, "done")
                    if self.stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - watch again
                time.sleep(0.5)

    def split(self, model: str, applied: float, serving: float, job_ms: int, pod_start_ms: int) -> dict | None:
        """The operator's part and the control plane's part of ``model``'s path to Serving, or
        None if the watches missed a milestone (a watch that broke and came back, say)."""
        # Copies: the watch threads go on adding while this reads (a dict's copy is atomic).
        seen, owner = self.seen.copy(), self.owner.copy()

        def last_pod(owners: list[str], milestone: str) -> float:
            """When the first pod of each owner got there, for the owner that got there last."""
            return max(min(seen[(pod, milestone)] for pod, of in owner.items() if of == o and (pod, milestone) in seen)
                       for o in owners)

        def owned(suffixes: tuple[str, ...]) -> list[str]:
            return [o for o in set(owner.values()) if o.startswith(model + "-") and o.endswith(suffixes)]

        try:
            # A step's Jobs (the candidate's and the baseline's; an engine already known needs no Job
            # of the candidate's) start together and the path goes on once both are done.
            created = {step: min(seen[(job, "created")] for job in owned((f"-{step}", f"-{step}-base")))
                       for step in CRITICAL_PATH_JOBS}
            done = {step: last_pod(owned((f"-{step}", f"-{step}-base")), "done") for step in CRITICAL_PATH_JOBS}
            deployments = [d for d in owned(("",)) if d not in owned(tuple(f"-{s}" for s in STEPS))]
            deployed = min(seen[(d, "created")] for d in deployments)
            pods_ready = last_pod(deployments, "ready")
            operator = [created["lookup"] - applied, created["build"] - done["lookup"],
                        created["package"] - done["build"], deployed - done["package"],
                        created["validate"] - pods_ready, serving - done["validate"]]
            cluster = [done[step] - created[step] for step in CRITICAL_PATH_JOBS] + [pods_ready - deployed]
            scripted = (len(CRITICAL_PATH_JOBS) * (job_ms + pod_start_ms) + pod_start_ms) / 1000
            split = {"operatorSeconds": round(sum(operator), 3), "operatorSegments": [round(t, 3) for t in operator],
                     "controlPlaneSeconds": round(sum(cluster) - scripted, 3),
                     "controlPlaneAndScriptedSegments": [round(t, 3) for t in cluster]}
        except (KeyError, ValueError) as exc:  # a missing milestone: max()/min() of nothing, or no entry
            print(f"timeline of {model} incomplete ({exc!r}): no split for it", flush=True)
            return None
        return split


def component_pids(cluster: LocalCluster) -> dict[str, int]:
    return {name: int((cluster.pids / name).read_text()) for name in COMPONENTS if (cluster.pids / name).exists()}


def audit_counts(log: Path, user: str, since_offset: int) -> tuple[Counter, int]:
    counts: Counter = Counter()
    with open(log, "rb") as fh:
        fh.seek(since_offset)
        for line in fh:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != user:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            code = (event.get("responseStatus") or {}).get("code", 0)
            counts[(event.get("verb") + (f" ({code})" if code >= 400 else ""), resource)] += 1
    return counts, log.stat().st_size


def kwok_pod_start_ms() -> int:
    """How long kwok takes to start a pod (its pod-ready stage's delay): part of what the
    simulation scripts, like a Job's run time."""
    stages = yaml.safe_load_all((REPO / "hack" / "kwok-stages.yaml").read_text())
    ready = next(s for s in stages if s and s["kind"] == "Stage" and s["metadata"]["name"] == "pod-ready")
    return int(ready["spec"]["delay"]["durationMilliseconds"])


def apiserver_requests(cluster: LocalCluster) -> float:
    """Requests the API server has served since it started, from every client."""
    return metric(cluster.kubectl("get", "--raw", "/metrics").stdout, "apiserver_request_total{")


def operator_writes(counts: Counter) -> int:
    return sum(n for (verb, resource), n in counts.items()
               if verb.split()[0] in ("create", "update", "patch", "delete") and resource != "leases")


def scrape(operator: OperatorProcess) -> str:
    for attempt in range(5):  # a busy operator may answer late
        try:
            return operator.metrics()
        except OSError:
            if attempt == 4:
                raise
            time.sleep(1)
    return ""


def histogram(text: str, name: str) -> tuple[dict[float, float], float, float]:
    """A Prometheus histogram's cumulative buckets (upper bound -> count), sum and count."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets, metric(text, name + "_sum"), metric(text, name + "_count")


def quantile_bound(buckets: dict[float, float], q: float) -> float:
    """The smallest bucket bound that holds at least the quantile ``q`` of the observations."""
    total = max(buckets.values(), default=0.0)
    return next((bound for bound, n in sorted(buckets.items()) if n >= q * total), float("inf"))


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(count: int, job_ms: int, idle_seconds: float, converge_timeout: float, operator_args: list[str]) -> dict:
    cluster = LocalCluster()
    cluster.down(quiet=True)
    cluster.up()
    kube = Client(config=KubeConfig.from_file(str(cluster.kubeconfig)), field_manager="scale-benchmark")
    nodes = max(2, GPU_NODES_PER_100_MODELS * -(-count // 100))
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": gpu_nodes(nodes)}))
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    established = time.monotonic() + 60
    while True:  # kubectl wait fails outright on a CRD whose status is not written yet
        try:
            cluster.kubectl("wait", "--for=condition=Established", "crd/medusamodels.inference.medusa.dev",
                            "--timeout=60s")
            break
        except ClusterError:
            if time.monotonic() > established:
                raise
            time.sleep(0.5)
    kube.create(Namespace(metadata=ObjectMeta(name=NAMESPACE)))
    rbac = chart_rbac(cluster, NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))
    account = next(o for o in rbac if o["kind"] == "ServiceAccount")["metadata"]["name"]
    workdir = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, account, workdir / "operator.kubeconfig")
    user = f"system:serviceaccount:{NAMESPACE}:{account}"
    lease = ("--leader-elect", "--lease-namespace", NAMESPACE, "--lease-name", RELEASE, *operator_args)
    leader = OperatorProcess(cluster, NAMESPACE, workdir, kubeconfig, *lease, "--identity", "leader",
                             "--reconcile-interval", "5", name="leader").start()
    scripter = JobScripter(kube, NAMESPACE, {step: timed(step, job_ms) for step in STEPS}).start()
    phases = PhaseWatch(kube, NAMESPACE)
    timeline = Timeline(kube, NAMESPACE)
    figures: dict = {"models": count, "gpuNodes": nodes, "jobMs": job_ms, "operatorArgs": operator_args}
    try:
        time.sleep(3)  # the leader holds the Lease and its caches are filled
        # One model alone, a few times: apply -> Serving.
        singles, splits = [], []
        for i in range(SINGLE_RUNS):
            started = time.monotonic()
            kube.create(from_dict(model_manifest(f"single-{i}")), namespace=NAMESPACE)
            assert phases.wait([f"single-{i}"], 120), "the single model did not reach Serving"
            singles.append(phases.serving[f"single-{i}"] - started)
            time.sleep(1)  # the watches bring the last milestones
            splits.append(timeline.split(f"single-{i}", started, phases.serving[f"single-{i}"], job_ms,
                                         kwok_pod_start_ms()))
        timeline.stop.set()  # its watches would add to this process's share below
        single = sorted(singles)[len(singles) // 2]
        split = splits[singles.index(single)]
        jobs = len(CRITICAL_PATH_JOBS) * job_ms / 1000
        pod_starts = CRITICAL_PATH_PODS * kwok_pod_start_ms() / 1000
        figures["single"] = {"applyToServingSeconds": round(single, 2), "runs": [round(t, 2) for t in singles],
                             "scriptedJobSeconds": jobs, "kwokPodStartSeconds": pod_starts,
                             "beyondScriptedJobsSeconds": round(single - jobs, 2),
                             "beyondScriptedSeconds": round(single - jobs - pod_starts, 2), "split": split}
        print(f"[{count}] one model: apply -> Serving {single:.2f} s (median of {', '.join(f'{t:.2f}' for t in singles)}); "
              f"scripted on its path: Jobs {jobs:.2f} s, kwok's pod starts {pod_starts:.2f} s; beyond the Jobs "
              f"{single - jobs:.2f} s, beyond both {single - jobs - pod_starts:.2f} s", flush=True)
        if split is not None:
            print(f"[{count}] of that run's time beyond the scripted: the operator's reactions {split['operatorSeconds']:.2f} s "
                  f"(apply -> lookup Job, each step's end -> the next step's start, validation -> Serving: "
                  f"{split['operatorSegments']}), the control plane {split['controlPlaneSeconds']:.2f} s (Job or "
                  f"Deployment -> pods created, scheduled, started and finished, less kwok's scripted times)", flush=True)

        # N models at once.
        pids = {**component_pids(cluster), "operator": leader.proc.pid, "benchmark (Job scripter)": os.getpid()}
        metrics_before = scrape(leader)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        names = [f"m{i:04d}" for i in range(count)]
        offset = cluster.audit_log.stat().st_size
        served_before = apiserver_requests(cluster)
        started = time.monotonic()
        for name in names:
            kube.create(from_dict(model_manifest(name)), namespace=NAMESPACE)
        applied = time.monotonic() - started
        done = phases.wait(names, converge_timeout)
        settled = time.monotonic() - started
        cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in pids.items()}
        requests, _ = audit_counts(cluster.audit_log, user, offset)
        served = apiserver_requests(cluster) - served_before
        metrics_after = scrape(leader)
        waits_before, wait_sum_before, _ = histogram(metrics_before, "medusa_operator_queue_wait_seconds")
        waits_after, wait_sum_after, _ = histogram(metrics_after, "medusa_operator_queue_wait_seconds")
        waits = {bound: n - waits_before.get(bound, 0.0) for bound, n in waits_after.items()}
        _, pass_sum_before, passes_before = histogram(metrics_before, "medusa_operator_reconcile_duration_seconds")
        _, pass_sum_after, passes_after = histogram(metrics_after, "medusa_operator_reconcile_duration_seconds")
        passes, pass_seconds = passes_after - passes_before, pass_sum_after - pass_sum_before
        total = sum(cpu.values()) or 1.0
        times = sorted(phases.serving[n] - started for n in names if n in phases.serving)
        figures["converge"] = {
            "allServing": done, "seconds": round(settled, 1), "applySeconds": round(applied, 1),
            "serving": len(times), "medianSeconds": round(times[len(times) // 2], 1) if times else None,
            "cpuSeconds": cpu, "cpuShare": {k: round(v / total, 3) for k, v in cpu.items()},
            "cpuCoresBusy": round(total / settled, 2),
            "operatorRequests": {f"{verb} {resource}": n for (verb, resource), n in sorted(requests.items())},
            "apiServerRequests": int(served),
            "operatorPasses": int(passes),
            "operatorPassSecondsMean": round(pass_seconds / passes, 4) if passes else None,
            "operatorPassSecondsPerSecond": round(pass_seconds / settled, 3),
            "queueWaitSecondsMean": round((wait_sum_after - wait_sum_before) / passes, 4) if passes else None,
            "queueWaitSecondsP50AtMost": quantile_bound(waits, 0.5),
            "queueWaitSecondsP99AtMost": quantile_bound(waits, 0.99),
            "operatorShareOfRequests": round(sum(requests.values()) / served, 3) if served else None,
        }
        print(f"[{count}] {count} models applied in {applied:.1f} s; "
              f"{len(times)}/{count} Serving after {settled:.1f} s (median {figures['converge']['medianSeconds']} s)",
              flush=True)
        print(f"[{count}] operator requests while converging ({sum(requests.values())} in all, "
              f"{sum(requests.values()) / count:.1f} per model): {figures['converge']['operatorRequests']}", flush=True)
        print(f"[{count}] API server requests while converging, every client: {int(served)} "
              f"({served / count:.1f} per model); the operator's share {figures['converge']['operatorShareOfRequests']}",
              flush=True)
        conv = figures["converge"]
        print(f"[{count}] operator: {int(passes)} passes, {conv['operatorPassSecondsMean']} s each on average "
              f"({conv['operatorPassSecondsPerSecond']} pass-seconds per second, over its workers); a model waited "
              f"{conv['queueWaitSecondsMean']} s on average for a worker (half at most "
              f"{conv['queueWaitSecondsP50AtMost']} s, 99% at most {conv['queueWaitSecondsP99AtMost']} s)", flush=True)
        print(f"[{count}] CPU seconds while converging (share): " + ", ".join(
            f"{k} {v} ({v / total:.0%})" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])), flush=True)

        # Idle: every model Serving, the control plane settled (the operator wrote nothing lately).
        offset = cluster.audit_log.stat().st_size
        quiet_since = settling = time.monotonic()
        while time.monotonic() - quiet_since < SETTLED_AFTER_SECONDS and time.monotonic() - settling < 900:
            time.sleep(5)
            counts, offset = audit_counts(cluster.audit_log, user, offset)
            if operator_writes(counts):
                quiet_since = time.monotonic()
        figures["settleSeconds"] = round(quiet_since - settling, 1)
        print(f"[{count}] the operator's last write came {figures['settleSeconds']} s after every model was Serving",
              flush=True)
        offset = cluster.audit_log.stat().st_size
        op_cpu = cpu_seconds(leader.proc.pid)
        time.sleep(idle_seconds)
        counts, _ = audit_counts(cluster.audit_log, user, offset)
        minutes = idle_seconds / 60
        per_minute = {f"{verb} {resource}": round(n / minutes, 1) for (verb, resource), n in sorted(counts.items())}
        writes = {k: v for k, v in per_minute.items() if k.split()[0] in ("create", "update", "patch", "delete")}
        leases = sum(v for k, v in per_minute.items() if k.endswith(" leases"))
        figures["idle"] = {
            "seconds": idle_seconds, "requestsPerMinute": per_minute,
            "totalPerMinute": round(sum(per_minute.values()), 1),
            "withoutLeaderElectionPerMinute": round(sum(per_minute.values()) - leases, 1),
            "writesPerMinuteExceptLease": {k: v for k, v in writes.items() if not k.endswith(" leases")},
            "operatorCpuPercent": round(100 * (cpu_seconds(leader.proc.pid) - op_cpu) / idle_seconds, 2),
            "operatorRssMiB": round(rss_mib(leader.proc.pid), 1),
        }
        idle = figures["idle"]
        print(f"[{count}] idle {idle_seconds:.0f} s: {idle['totalPerMinute']} requests/min in all, "
              f"{idle['withoutLeaderElectionPerMinute']} besides leader election; writes besides the Lease: "
              f"{idle['writesPerMinuteExceptLease'] or 'none'}", flush=True)
        print(f"[{count}] idle requests/min by verb and resource: {per_minute}", flush=True)
        print(f"[{count}] operator idle CPU {idle['operatorCpuPercent']}% of a core; RSS {idle['operatorRssMiB']} MiB",
              flush=True)

        # Failover: a standby with warm caches takes over from a leader that stops.
        standby = OperatorProcess(cluster, NAMESPACE, workdir, kubeconfig, *lease, "--identity", "standby",
                                  "--reconcile-interval", "5", name="standby").start()
        time.sleep(max(8.0, count / 100))  # its caches fill while it waits for the Lease
        standby_rss = rss_mib(standby.proc.pid)
        stopped = time.monotonic()
        os.killpg(leader.proc.pid, signal.SIGTERM)
        first_pass = all_passed = None
        while time.monotonic() - stopped < 120 and all_passed is None:
            try:
                passes = metric(standby.metrics(), "medusa_operator_reconciles_total")
            except OSError:
                passes = 0
            now = time.monotonic() - stopped
            if passes > 0 and first_pass is None:
                first_pass = now
            if passes >= count + SINGLE_RUNS:
                all_passed = now
            time.sleep(0.05)
        figures["failover"] = {"standbyRssMiBBeforeTakeover": round(standby_rss, 1),
                               "firstReconcileSeconds": first_pass and round(first_pass, 2),
                               "everyModelPassedSeconds": all_passed and round(all_passed, 2)}
        print(f"[{count}] failover (leader SIGTERM, Lease released): new leader's first pass after "
              f"{first_pass and round(first_pass, 2)} s, every model passed after {all_passed and round(all_passed, 2)} s",
              flush=True)
        standby.stop()
    finally:
        phases.stop.set()
        timeline.stop.set()
        scripter.stop()
        leader.stop()
        figures["scripterErrors"] = len(scripter.errors)
        cluster.down()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--job-ms", type=int, default=300, help="how long each scripted Job pod runs")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--converge-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    parser.add_argument("--operator-arg", action="append", default=[], metavar="ARG",
                        help="passed on to `medusa-operator run` (repeatable), e.g. --operator-arg=--workers=16")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    report = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%d"), "runs": []}
    print(f"machine: {cpu}, {os.cpu_count()} cores", flush=True)
    for count in args.models:
        report["runs"].append(run(count, args.job_ms, args.idle_seconds, args.converge_timeout, args.operator_arg))
        if args.out:
            args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
