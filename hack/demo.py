"""`make demo`: the operator on the embedded local cluster, from `kubectl apply` to Serving.

By default everything runs for real on the local cluster's real node (hack/realnode.py): the
operator's and the reference runtime's images are built here from the repo's Dockerfiles and
loaded into the node's containerd; the operator is installed with `helm install` (its chart's
ServiceAccount, RBAC, two replicas, leader election); every Job's container runs its
`medusa-builder` step; Triton serves SmolLM2-135M-Instruct with Medusa heads on the CPU; the
validation Job measures accuracy and tokens/s against the base model through Service DNS names;
the model namespace enforces the `restricted` Pod Security Standard.

`--simulated` runs the older path instead: the operator as a local process, kwok playing the GPU
nodes and pods, and scripted Job results (hack/jobscript.py): what GPU and TensorRT-LLM scenarios
look like without a GPU.
"""

from __future__ import annotations

import argparse
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
REAL_PIPELINE_TIMEOUT = 1800


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: LocalCluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    print(cluster.kubectl(*args, check=False).stdout.rstrip(), flush=True)


def main_simulated() -> None:
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


def watch_phases(cluster: LocalCluster, name: str, timeout: float = PHASE_TIMEOUT) -> None:
    seen: str | None = None
    deadline = time.monotonic() + timeout
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
    raise SystemExit(f"the demo model did not reach Serving in {timeout:.0f}s")


def main_real() -> None:
    import realstack
    from s3server import running_s3_server

    cluster = LocalCluster()
    say("Starting the local control plane and its real node (binaries are built once and cached)")
    cluster.up()
    show(cluster, "get", "nodes", "-o", "wide")

    say("Building the operator and reference images from the repo's Dockerfiles (cached by content)")
    images = realstack.load_images(cluster)
    print(f"operator image:          {images.operator}\nreference builder image: {images.reference_builder}\n"
          f"reference serving image: {images.reference_serving}", flush=True)

    say(f"Namespace {NAMESPACE}, enforcing the restricted Pod Security Standard")
    cluster.kubectl("delete", "medusamodel", "--all", "-n", NAMESPACE, "--wait=true", check=False)
    realstack.create_namespace(cluster, NAMESPACE)

    with running_s3_server(realstack.NODE_IP) as s3:
        say(f"An S3-compatible store on the node address ({s3.endpoint_url}): SmolLM2-135M-Instruct, "
            "its Medusa heads (trained once on the CPU, cached) and a small MMLU-format question set")
        realstack.upload_model_inputs(s3)
        realstack.credentials_secret(cluster, NAMESPACE, s3)

        say("helm install charts/medusa-operator (two replicas, leader election, the chart's RBAC)")
        realstack.install_operator(cluster, images, [NAMESPACE])
        show(cluster, "get", "pods", "-n", realstack.OPERATOR_NAMESPACE, "-o", "wide")

        say("Refused by the API server itself: a tree with both a preset and explicit choices")
        bad = realstack.reference_model("smollm2-medusa")
        bad["spec"]["medusa"]["tree"] = {"preset": "mc_sim_7b_63", "choices": [[0], [1]]}
        print(cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(bad), check=False).stderr.strip())

        manifest = realstack.reference_model("smollm2-medusa", **realstack.CPU_GATES)
        say(f"kubectl apply: {EXAMPLE.relative_to(REPO)}, pointed at the local store and placed on the real node")
        realstack.apply_model(cluster, NAMESPACE, manifest)
        watch_phases(cluster, "smollm2-medusa", timeout=REAL_PIPELINE_TIMEOUT)

        say("The result: every step ran in a container on the real node")
        show(cluster, "get", "medusamodels", "-n", NAMESPACE)
        show(cluster, "get", "pods", "-n", NAMESPACE, "-o", "wide")
        print("$ kubectl get pods -n medusa-demo -o custom-columns=POD:.metadata.name,NODE:.spec.nodeName,"
              "CONTAINER:.status.containerStatuses[0].containerID")
        print(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "custom-columns=POD:.metadata.name,"
                              "NODE:.spec.nodeName,CONTAINER:.status.containerStatuses[0].containerID").stdout.rstrip())
        status = realstack.model_status(cluster, NAMESPACE, "smollm2-medusa")
        print("measured by the validation Job:", json.dumps(
            {k: status.get("validation", {}).get(k) for k in
             ("passed", "accuracy", "baseAccuracy", "tokensPerSecond", "baseTokensPerSecond", "speedup")}))
        if status.get("phase") != "Serving":
            raise SystemExit(f"the demo model ended {status.get('phase')}: {status.get('message', '')}")

        say(f"A request through the stable Service ({status['endpoint']}) from a pod")
        reply = realstack.generate(cluster, NAMESPACE, images.reference_serving, status["endpoint"])
        print(f"text_output: {reply['text_output']!r}")
    say("Inspect it yourself (the cluster and the operator keep running; the demo's S3 store has "
        "stopped, so new pods cannot fetch; `make cluster-down` stops everything)")
    print(f"export KUBECONFIG={cluster.kubeconfig}\nexport PATH={cluster.bin}:$PATH\n"
          f"kubectl get mm,pods -n {NAMESPACE} -o wide\n"
          f"kubectl get mm smollm2-medusa -n {NAMESPACE} -o jsonpath='{{.status.validation}}'\n"
          f"kubectl logs -n {realstack.OPERATOR_NAMESPACE} -l app.kubernetes.io/instance={realstack.RELEASE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulated", action="store_true",
                        help="kwok pods and scripted Job results instead of real containers")
    args = parser.parse_args()
    main_simulated() if args.simulated else main_real()


if __name__ == "__main__":
    try:
        main()
    except (ApiError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"demo failed: {exc}") from None
