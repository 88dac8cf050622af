"""The Helm chart rendered by the real `helm` binary: lint, values checks, least-privilege RBAC,
restricted pod security, the operator's command line, monitoring objects, and the alert rules
checked and unit-tested by `promtool`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from localcluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "medusa-operator"
RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
RELEASE, NAMESPACE = "mo", "medusa-system"

NAMESPACED_RULES = {
    ("inference.medusa.dev", "medusamodels"): {"list", "watch"},
    ("inference.medusa.dev", "medusamodels/status"): {"patch"},
    ("inference.medusa.dev", "medusamodels/finalizers"): {"update"},
    ("batch", "jobs"): {"list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch", "create", "patch", "delete"},
    ("keda.sh", "scaledobjects"): {"list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get"},
}


@pytest.fixture(scope="module")
def helm() -> str:
    return LocalCluster().tool("helm")


def render(helm: str, *sets: str, chart: Path = CHART, values: Path | None = None) -> list[dict]:
    args = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(helm: str, *sets: str) -> str:
    args = [helm, "template", RELEASE, str(CHART)] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode != 0, f"helm template accepted {sets}"
    return proc.stderr


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    (obj,) = objects(docs, kind)
    return obj


def rule_map(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "resourceNames" not in rule or rule["resources"] == ["leases"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def operator_container(docs: list[dict]) -> dict:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_lint_passes_in_both_modes(helm: str) -> None:
    for sets in ([], ["watchMode=namespaced", "watchNamespaces={models,staging}"]):
        args = [helm, "lint", "--strict", str(CHART)] + [a for s in sets for a in ("--set", s)]
        proc = subprocess.run(args, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("sets", "message"), [
    (["replicaCount=2", "leaderElection.enabled=false"], "needs leaderElection.enabled=true"),
    (["watchMode=namespaced"], "needs at least one namespace in watchNamespaces"),
    (["watchNamespaces={models}"], "set watchMode=namespaced"),
    (["watchMode=everywhere"], "watchMode"),
    (["operator.logFormat=xml"], "logFormat"),
    (["unknownKey=1"], "unknownKey"),
    (["operator.healthPort=8080"], "must differ"),
])
def test_bad_values_are_refused_with_a_message(helm: str, sets: list[str], message: str) -> None:
    assert message in render_error(helm, *sets)


def test_cluster_mode_grants_exactly_the_operator_rules_cluster_wide(helm: str) -> None:
    docs = render(helm)
    assert rule_map(one(docs, "ClusterRole")["rules"]) == NAMESPACED_RULES
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mo-medusa-operator", "namespace": NAMESPACE}]
    roles = objects(docs, "Role")
    assert [r["metadata"]["name"] for r in roles] == ["mo-medusa-operator-leader-election"]


def test_namespaced_mode_grants_a_role_per_watched_namespace_only(helm: str) -> None:
    """Nothing cluster-wide: the operator follows its namespaces' objects only, and kopf (which
    serves no resource) does not follow CRDs or namespaces."""
    docs = render(helm, "watchMode=namespaced", "watchNamespaces={models,staging}")
    assert objects(docs, "ClusterRole") == [] and objects(docs, "ClusterRoleBinding") == []
    watched = {r["metadata"]["namespace"]: r for r in objects(docs, "Role")
               if r["metadata"]["name"] == "mo-medusa-operator"}
    assert set(watched) == {"models", "staging"}
    for role in watched.values():
        assert rule_map(role["rules"]) == NAMESPACED_RULES
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in objects(docs, "RoleBinding")}
    assert bindings == {("models", "mo-medusa-operator"), ("staging", "mo-medusa-operator"),
                        (NAMESPACE, "mo-medusa-operator-leader-election")}
    assert operator_container(docs)["args"][:3] == ["run", "--namespace=models", "--namespace=staging"]


def test_leader_election_role_is_limited_to_the_operator_lease(helm: str) -> None:
    docs = render(helm, "leaderElection.leaseName=medusa-leader", "leaderElection.leaseNamespace=ops")
    role = next(r for r in objects(docs, "Role") if r["metadata"]["name"].endswith("leader-election"))
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["medusa-leader"],
         "verbs": ["get", "update"]},
    ]
    args = operator_container(docs)["args"]
    assert {"--leader-elect", "--lease-name=medusa-leader", "--lease-namespace=ops"} <= set(args)


def test_operator_command_line_and_probes(helm: str) -> None:
    docs = render(helm, "operator.builderImage=reg.example/builder:1", "operator.servingImage=reg.example/triton:2",
                  "operator.logFormat=text", "operator.metricsPort=9090", "operator.healthPort=9091")
    container = operator_container(docs)
    assert container["args"] == [
        "run", "--all-namespaces", "--metrics-port=9090", "--health-port=9091", "--leader-elect",
        "--lease-name=mo-medusa-operator", f"--lease-namespace={NAMESPACE}",
        "--builder-image=reg.example/builder:1", "--serving-image=reg.example/triton:2", "--log-format=text",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 9091}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert one(docs, "Deployment")["spec"]["replicas"] == 2


def test_single_replica_without_leader_election_never_overlaps(helm: str) -> None:
    docs = render(helm, "replicaCount=1", "leaderElection.enabled=false")
    assert "--no-leader-elect" in operator_container(docs)["args"]
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [r for r in objects(docs, "Role") if "leader-election" in r["metadata"]["name"]]
    assert not objects(docs, "PodDisruptionBudget")


def test_pod_meets_the_restricted_pod_security_standard(helm: str) -> None:
    docs = render(helm)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = operator_container(docs)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert operator_container(docs)["resources"]["requests"]


def test_image_tag_defaults_to_app_version_and_digest_wins(helm: str) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert operator_container(render(helm))["image"].endswith(f"medusa-operator:{app_version}")
    digest = "sha256:" + "ab" * 32
    assert operator_container(render(helm, f"image.digest={digest}"))["image"].endswith(f"@{digest}")


def test_crd_is_a_kept_template_identical_to_the_generated_file(helm: str) -> None:
    crd = one(render(helm), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    generated = yaml.safe_load((CHART / "files" / "medusamodels.inference.medusa.dev.yaml").read_text())
    assert crd["spec"] == generated["spec"]
    assert not objects(render(helm, "crds.install=false"), "CustomResourceDefinition")
    annotated = one(render(helm, "crds.annotations.team=ml", "crds.annotations.helm\\.sh/resource-policy=delete"),
                    "CustomResourceDefinition")
    assert annotated["metadata"]["annotations"] == {"team": "ml", "helm.sh/resource-policy": "keep"}


def test_monitoring_objects_are_off_by_default_and_select_the_metrics_service(helm: str) -> None:
    assert not objects(render(helm), "ServiceMonitor") and not objects(render(helm), "PrometheusRule")
    docs = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
                  "metrics.serviceMonitor.labels.release=prom")
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    # The rules select job="medusa-operator", the value the ServiceMonitor's jobLabel yields.
    assert labels[monitor["spec"]["jobLabel"]] == "medusa-operator"
    rules = one(docs, "PrometheusRule")["spec"]["groups"]
    assert rules == yaml.safe_load(RULES_FILE.read_text())["groups"]


def test_prometheus_rule_appends_extra_groups(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"metrics": {"prometheusRule": {"enabled": True, "extraGroups": [
        {"name": "site", "rules": [{"record": "site:up:sum", "expr": "sum(up)"}]}]}}}))
    out = subprocess.run([helm, "template", RELEASE, str(CHART), "-f", str(values)],
                         capture_output=True, text=True, check=True).stdout
    rule = one([d for d in yaml.safe_load_all(out) if d], "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]][-1] == "site"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run hack/system-deps.sh (Debian package prometheus)"
    return path


def test_rules_file_passes_promtool_check(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_operator_down_alerts_fire_only_when_no_replica_is_up(promtool: str, tmp_path: Path) -> None:
    alerts = {r["alert"]: r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]
              if "alert" in r}
    up = 'up{job="medusa-operator",namespace="medusa-system",pod="%s"}'
    tests = {
        "rule_files": [str(RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m",
             "input_series": [{"series": up % "a", "values": "0x20"}, {"series": up % "b", "values": "1x20"}],
             "alert_rule_test": [
                 {"eval_time": "15m", "alertname": "MedusaOperatorDown", "exp_alerts": []},
                 {"eval_time": "15m", "alertname": "MedusaOperatorReplicaDown", "exp_alerts": [{
                     "exp_labels": {"severity": "warning", "job": "medusa-operator", "namespace": "medusa-system",
                                    "pod": "a"},
                     "exp_annotations": {
                         "summary": "medusa-operator pod medusa-system/a is down",
                         "description": alerts["MedusaOperatorReplicaDown"]["annotations"]["description"],
                     }}]},
             ]},
            {"interval": "1m",
             "input_series": [{"series": up % "a", "values": "0x20"}],
             "alert_rule_test": [
                 {"eval_time": "4m", "alertname": "MedusaOperatorDown", "exp_alerts": []},
                 {"eval_time": "10m", "alertname": "MedusaOperatorDown", "exp_alerts": [{
                     "exp_labels": {"severity": "critical"},
                     "exp_annotations": alerts["MedusaOperatorDown"]["annotations"]}]},
             ]},
        ],
    }
    run_promtool_tests(promtool, tmp_path, tests)


def test_leader_alerts_fire_on_no_leader_and_on_two_leaders(promtool: str, tmp_path: Path) -> None:
    leader = 'medusa_operator_leader{job="medusa-operator",namespace="%s",pod="%s"}'
    tests = {
        "rule_files": [str(RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": leader % ("healthy", "a"), "values": "1x20"},
                {"series": leader % ("healthy", "b"), "values": "0x20"},
                {"series": leader % ("leaderless", "a"), "values": "0x20"},
                {"series": leader % ("leaderless", "b"), "values": "0x20"},
                {"series": leader % ("split", "a"), "values": "1x20"},
                {"series": leader % ("split", "b"), "values": "1x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "MedusaOperatorNoLeader", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "namespace": "leaderless"},
                    "exp_annotations": expected_annotations("MedusaOperatorNoLeader", "leaderless")}]},
                {"eval_time": "10m", "alertname": "MedusaOperatorSplitBrain", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "namespace": "split"},
                    "exp_annotations": expected_annotations("MedusaOperatorSplitBrain", "split")}]},
            ],
        }],
    }
    run_promtool_tests(promtool, tmp_path, tests)


def expected_annotations(alert: str, namespace: str) -> dict[str, str]:
    rules = {r["alert"]: r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]
             if "alert" in r}
    return {k: v.replace("{{ $labels.namespace }}", namespace) for k, v in rules[alert]["annotations"].items()}


def run_promtool_tests(promtool: str, tmp_path: Path, tests: dict) -> None:
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("sets", [(), ("watchMode=namespaced", "watchNamespaces={models,staging}"),
                                  ("imagePolicy.allowedImages={registry.example.com/ml}",),
                                  ("replicaCount=1", "leaderElection.enabled=false")])
def test_the_operator_accepts_the_arguments_the_chart_gives_it(helm: str, sets: tuple[str, ...]) -> None:
    from medusa_operator.cli import build_parser, config_from_args

    args = build_parser().parse_args(operator_container(render(helm, *sets))["args"])
    config = config_from_args(args)
    assert config.leader_elect == ("leaderElection.enabled=false" not in sets)
    assert config.all_namespaces == ("watchMode=namespaced" not in sets)
    policy = ("registry.example.com/ml",) if "imagePolicy.allowedImages={registry.example.com/ml}" in sets else ()
    assert config.allowed_images == policy


def test_reference_images_and_job_placement_reach_the_operator_config(helm: str, tmp_path: Path) -> None:
    """The chart's values arrive in the operator's own parser as the same objects."""
    from medusa_operator.cli import build_parser, config_from_args

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"operator": {
        "referenceBuilderImage": "reg.example/reference-builder:3",
        "referenceServingImage": "reg.example/reference-serving:3",
        "jobs": {"nodeSelector": {"pool": "build"},
                 "tolerations": [{"key": "pool", "operator": "Equal", "value": "build", "effect": "NoSchedule"}]}}}))
    args = operator_container(render(helm, chart=CHART, values=values))["args"]
    config = config_from_args(build_parser().parse_args(args))
    assert config.reference_builder_image == "reg.example/reference-builder:3"
    assert config.reference_serving_image == "reg.example/reference-serving:3"
    assert config.job_node_selector == {"pool": "build"}
    assert config.job_tolerations == ({"key": "pool", "operator": "Equal", "value": "build", "effect": "NoSchedule"},)
    # Empty values leave the flags out: the operator's defaults apply.
    defaults = operator_container(render(helm))["args"]
    assert not [a for a in defaults if a.startswith(("--reference-", "--job-"))]


def test_the_deprecated_reference_image_value_still_sets_both_reference_images(helm: str, tmp_path: Path) -> None:
    """operator.referenceImage (one image that builds and serves) keeps working for one release;
    the two values that replace it win over it."""
    from medusa_operator.cli import build_parser, config_from_args

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"operator": {"referenceImage": "reg.example/reference:2"}}))
    config = config_from_args(build_parser().parse_args(
        operator_container(render(helm, chart=CHART, values=values))["args"]))
    assert (config.reference_builder_image, config.reference_serving_image) == ("reg.example/reference:2",) * 2
    values.write_text(yaml.safe_dump({"operator": {"referenceImage": "reg.example/reference:2",
                                                   "referenceServingImage": "reg.example/reference-serving:3"}}))
    config = config_from_args(build_parser().parse_args(
        operator_container(render(helm, chart=CHART, values=values))["args"]))
    assert (config.reference_builder_image, config.reference_serving_image) == (
        "reg.example/reference:2", "reg.example/reference-serving:3")


def test_image_policy_is_off_by_default_and_reaches_the_operator_and_the_api_server(helm: str) -> None:
    assert not objects(render(helm), "ValidatingAdmissionPolicy")
    assert not [a for a in operator_container(render(helm))["args"] if a.startswith("--allowed-image")]
    digest = "sha256:" + "ab" * 32
    docs = render(helm, f"imagePolicy.allowedImages={{registry.example.com/ml,{digest}}}")
    assert [a for a in operator_container(docs)["args"] if a.startswith("--allowed-image")] == [
        "--allowed-image=registry.example.com/ml", f"--allowed-image={digest}"]
    policy, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    without = render(helm, "imagePolicy.allowedImages={registry.example.com/ml}", "imagePolicy.admissionPolicy=false")
    assert not objects(without, "ValidatingAdmissionPolicy")
    assert "--allowed-image=registry.example.com/ml" in operator_container(without)["args"]


def test_image_policy_binding_covers_only_the_watched_namespaces(helm: str) -> None:
    docs = render(helm, "watchMode=namespaced", "watchNamespaces={models,staging}",
                  "imagePolicy.allowedImages={registry.example.com/ml}")
    selector = one(docs, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                              "values": ["models", "staging"]}]}


@pytest.mark.parametrize("entry", ["sha256:abc", "has space", "quote'd", ""])
def test_malformed_image_policy_entries_are_refused(helm: str, entry: str) -> None:
    assert "allowedImages" in render_error(helm, f"imagePolicy.allowedImages={{{entry}}}")
