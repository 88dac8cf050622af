"""`make demo`: the operator on the embedded local cluster, from `kubectl apply` to Serving.

What is real: the Kubernetes control plane (kube-apiserver, etcd, controller-manager, scheduler),
the CRD and its validation, the operator process and everything it creates. What is simulated:
kwok plays the GPU nodes and pods, and the results the build, package and validation Jobs report
are scripted (hack/jobscript.py), because no container can run on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import yaml
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError

from jobscript import JobScripter
from localcluster import REPO, LocalCluster

NAMESPACE = "medusa-demo"
EXAMPLE = REPO / "examples" / "smollm2-reference.yaml"
PHASE_TIMEOUT = 120


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: LocalCluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    print(cluster.kubectl(*args, check=False).stdout.rstrip(), flush=True)


def main() -> None:
    cluster = LocalCluster()
    say("Starting the local control plane (binaries are built once and cached)")
    cluster.up()
    show(cluster, "get", "nodes", "-L", "nvidia.com/gpu.product", "-o", "wide")

    say("Installing the MedusaModel CRD")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/medusamodels.inference.medusa.dev")
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl("delete", "medusamodel", "--all", "-n", NAMESPACE, "--wait=true", check=False)
    # The example reads its sources through this Secret; placeholder values (nothing is fetched).
    cluster.kubectl("create", "secret", "generic", "s3-credentials", "-n", NAMESPACE,
                    "--from-literal=AWS_ACCESS_KEY_ID=demo", "--from-literal=AWS_SECRET_ACCESS_KEY=demo",
                    check=False)

    say("Refused by the API server itself: a tree with both a preset and explicit choices")
    bad = yaml.safe_load(EXAMPLE.read_text())
    bad["spec"]["medusa"]["tree"] = {"preset": "mc_sim_7b_63", "choices": [[0], [1]]}
    print(cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(bad), check=False).stderr.strip())

    say("Running the operator (medusa-operator run) against the cluster")
    log_path = cluster.root / "logs" / "demo-operator.log"
    operator = subprocess.Popen(
        [sys.executable, "-m", "medusa_operator", "run", "--namespace", NAMESPACE, "--no-leader-elect",
         "--metrics-port", "18080", "--health-port", "18081", "--bind-address", "127.0.0.1",
         "--reconcile-interval", "1"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=cluster.env(), cwd=cluster.root)
    print(f"operator log: {log_path}; metrics: http://127.0.0.1:18080/metrics")

    client = Client(config=KubeConfig.from_file(str(cluster.kubeconfig)))
    say("Job results are SIMULATED here: kwok ends each Job pod with a scripted result")
    try:
        with JobScripter(client, NAMESPACE):
            say(f"kubectl apply -f {EXAMPLE.relative_to(REPO)}")
            show(cluster, "apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
            watch_phases(cluster, "smollm2-medusa")
            time.sleep(3)  # one more pass: the finished Jobs and the baseline are cleaned up
    finally:
        operator.terminate()
        operator.wait(15)

    say("The result")
    show(cluster, "get", "medusamodels", "-n", NAMESPACE)
    show(cluster, "get", "deployments,services,hpa,jobs", "-n", NAMESPACE)
    show(cluster, "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.kind=MedusaModel",
         "--sort-by=.lastTimestamp")
    say("Inspect it yourself (the cluster keeps running; `make cluster-down` stops it)")
    print(f"export KUBECONFIG={cluster.kubeconfig}\nexport PATH={cluster.bin}:$PATH\n"
          f"kubectl get mm -n {NAMESPACE}\n"
          f"kubectl get mm smollm2-medusa -n {NAMESPACE} -o jsonpath='{{.status.validation}}'\n"
          f"kubectl describe mm smollm2-medusa -n {NAMESPACE}\n"
          "kubectl explain medusamodel.spec.medusa.tree")


def watch_phases(cluster: LocalCluster, name: str) -> None:
    seen: str | None = None
    deadline = time.monotonic() + PHASE_TIMEOUT
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "medusamodel", name, "-n", NAMESPACE, "-o", "json", check=False)
        status = json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}
        phase = status.get("phase")
        if phase != seen:
            print(f"  phase: {phase:<11} {status.get('message', '')}", flush=True)
            seen = phase
        if phase in ("Serving", "Failed"):
            return
        time.sleep(0.5)
    raise SystemExit(f"the demo model did not reach Serving in {PHASE_TIMEOUT}s")


if __name__ == "__main__":
    try:
        main()
    except (ApiError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"demo failed: {exc}") from None
