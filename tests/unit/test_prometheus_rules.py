"""The tokens/second recording rules, the model and autoscaling alerts, and the prometheus-adapter
query, evaluated by the real `promtool test rules` on series shaped like the scraped ones."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "charts" / "medusa-operator" / "files"
RULES_FILE = FILES / "prometheus-rules.yaml"
ADAPTER_VALUES = FILES / "prometheus-adapter-values.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"

# A serving pod's series as Prometheus stores them: Triton's own labels (its model is "ensemble")
# plus the target labels the PodMonitor / scrape config attach.
TARGET = 'namespace="models",pod="{pod}",medusa_dev_model="{model}",medusa_dev_revision="{rev}",medusa_dev_variant="{variant}"'
TRITON = 'model="ensemble",version="1"'


def serving(metric: str, pod: str, model: str = "llama", rev: str = "r1", variant: str = "medusa",
            extra: str = "") -> str:
    labels = ",".join(x for x in (TRITON, TARGET.format(pod=pod, model=model, rev=rev, variant=variant), extra) if x)
    return f"{metric}{{{labels}}}"


def phase(name: str, value: str, namespace: str = "models") -> list[dict]:
    """medusa_model_phase series for one model: 1 for ``value``, 0 for two other phases."""
    out = []
    for candidate in ("Serving", "Failed", "Building", "Degraded"):
        series = (f'medusa_model_phase{{job="medusa-operator",namespace="{namespace}",name="{name}",'
                  f'phase="{candidate}",pod="mo-0"}}')
        out.append({"series": series, "values": f"{1 if candidate == value else 0}x200"})
    return out


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run hack/system-deps.sh (Debian package prometheus)"
    return path


def run_tests(promtool: str, tmp_path: Path, tests: list[dict], rule_files: list[Path] | None = None) -> None:
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(p) for p in (rule_files or [RULES_FILE])],
        "evaluation_interval": "15s",
        "tests": tests,
    }, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def rules_by_name() -> dict[str, dict]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {r.get("alert") or r["record"]: r for g in groups for r in g["rules"]}


def annotations(alert: str, **labels: str) -> dict[str, str]:
    out = {}
    for key, text in rules_by_name()[alert]["annotations"].items():
        for name, value in labels.items():
            text = text.replace("{{ $labels.%s }}" % name, value)
        out[key] = text
    return out


def test_rules_file_passes_promtool_check(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tokens_per_second_per_pod_and_per_model(promtool: str, tmp_path: Path) -> None:
    # Pod a emits 15 tokens per 15 s scrape (1 token/s), pod b 2 tokens/s and restarts at 2m (a
    # counter reset), the baseline pod c 0.5 tokens/s; an unrelated Triton without the medusa.dev
    # labels is ignored.
    run_tests(promtool, tmp_path, [{
        "interval": "15s",
        "input_series": [
            {"series": serving("nv_llm_output_token_len_sum", "a"), "values": "0+15x40"},
            {"series": serving("nv_llm_output_token_len_sum", "b"), "values": "0+30x7 0+30x32"},
            {"series": serving("nv_llm_output_token_len_sum", "c", variant="base"), "values": "0+7.5x40"},
            {"series": 'nv_llm_output_token_len_sum{model="other",namespace="x",pod="z"}', "values": "0+100x40"},
            {"series": serving("nv_llm_output_token_len_count", "a"), "values": "0+1x40"},
            {"series": serving("nv_llm_output_token_len_count", "b"), "values": "0+2x40"},
        ],
        "promql_expr_test": [
            {"expr": "medusa:tokens_per_second:rate1m", "eval_time": "5m", "exp_samples": [
                {"labels": 'medusa:tokens_per_second:rate1m{namespace="models",pod="a",model="llama",'
                           'revision="r1",variant="medusa"}', "value": 1},
                {"labels": 'medusa:tokens_per_second:rate1m{namespace="models",pod="b",model="llama",'
                           'revision="r1",variant="medusa"}', "value": 2},
                {"labels": 'medusa:tokens_per_second:rate1m{namespace="models",pod="c",model="llama",'
                           'revision="r1",variant="base"}', "value": 0.5},
            ]},
            {"expr": "medusa:tokens_per_second:model_rate1m", "eval_time": "5m", "exp_samples": [
                {"labels": 'medusa:tokens_per_second:model_rate1m{namespace="models",model="llama",'
                           'revision="r1",variant="medusa"}', "value": 3},
                {"labels": 'medusa:tokens_per_second:model_rate1m{namespace="models",model="llama",'
                           'revision="r1",variant="base"}', "value": 0.5},
            ]},
            {"expr": "medusa:requests_per_second:model_rate1m", "eval_time": "5m", "exp_samples": [
                {"labels": 'medusa:requests_per_second:model_rate1m{namespace="models",model="llama",'
                           'revision="r1",variant="medusa"}', "value": 0.2},
            ]},
            # The query the operator's KEDA ScaledObject sends (render/autoscaling.py).
            {"expr": 'sum(medusa:tokens_per_second:rate1m{namespace="models",model="llama",revision="r1"})',
             "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 3.5}]},
        ],
    }])


def test_accepted_tokens_per_step_and_queue(promtool: str, tmp_path: Path) -> None:
    run_tests(promtool, tmp_path, [{
        "interval": "15s",
        "input_series": [
            # 10 steps per scrape emitting 25 tokens: 2.5 tokens per step (1.5 accepted draft tokens).
            {"series": serving("medusa_tokens_per_step_sum", "a"), "values": "0+25x40"},
            {"series": serving("medusa_tokens_per_step_count", "a"), "values": "0+10x40"},
            {"series": serving("nv_inference_pending_request_count", "a"), "values": "3x40"},
            {"series": serving("nv_inference_pending_request_count", "b"), "values": "1x40"},
            {"series": serving("nv_trt_llm_request_metrics", "b", extra='request_type="waiting"'),
             "values": "4x40"},
            {"series": serving("nv_trt_llm_request_metrics", "b", extra='request_type="active"'),
             "values": "8x40"},
        ],
        "promql_expr_test": [
            {"expr": "medusa:tokens_per_step:model_mean5m", "eval_time": "8m", "exp_samples": [
                {"labels": 'medusa:tokens_per_step:model_mean5m{namespace="models",model="llama",'
                           'revision="r1",variant="medusa"}', "value": 2.5}]},
            {"expr": "medusa:queued_requests:model_sum", "eval_time": "8m", "exp_samples": [
                {"labels": 'medusa:queued_requests:model_sum{namespace="models",model="llama",'
                           'revision="r1",variant="medusa"}', "value": 8}]},
        ],
    }])


def test_no_metrics_alert_names_only_the_serving_model_without_series(promtool: str, tmp_path: Path) -> None:
    run_tests(promtool, tmp_path, [{
        "interval": "15s",
        "input_series": [
            *phase("measured", "Serving"), *phase("blind", "Serving"), *phase("building", "Building"),
            {"series": serving("nv_llm_output_token_len_sum", "a", model="measured"), "values": "0+15x200"},
            # blind's only pod is scraped but its Triton exports no token histogram.
            {"series": 'up{namespace="models",pod="x",medusa_dev_model="blind"}', "values": "1x200"},
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "MedusaModelNoMetrics", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "MedusaModelNoMetrics", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "models", "name": "blind"},
                "exp_annotations": annotations("MedusaModelNoMetrics", namespace="models", name="blind")}]},
        ],
    }])


def test_unscraped_serving_pod_alert(promtool: str, tmp_path: Path) -> None:
    up = 'up{job="medusa-serving",namespace="models",pod="%s",medusa_dev_model="llama"}'
    run_tests(promtool, tmp_path, [{
        "interval": "1m",
        "input_series": [{"series": up % "a", "values": "1x20"}, {"series": up % "b", "values": "0x20"},
                         {"series": 'up{job="other",pod="c"}', "values": "0x20"}],
        "alert_rule_test": [{"eval_time": "15m", "alertname": "MedusaServingPodNotScraped", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "job": "medusa-serving", "namespace": "models", "pod": "b",
                           "medusa_dev_model": "llama"},
            "exp_annotations": annotations("MedusaServingPodNotScraped", namespace="models", pod="b",
                                           medusa_dev_model="llama")}]}],
    }])


def hpa_series(hpa: str, current: int, maximum: int, value: float, target: float, metric: str) -> list[dict]:
    labels = f'job="kube-state-metrics",namespace="models",horizontalpodautoscaler="{hpa}"'
    target_labels = f'{labels},metric_name="{metric}",metric_target_type="average"'
    return [
        {"series": f"kube_horizontalpodautoscaler_status_current_replicas{{{labels}}}", "values": f"{current}x200"},
        {"series": f"kube_horizontalpodautoscaler_spec_max_replicas{{{labels}}}", "values": f"{maximum}x200"},
        {"series": f"kube_horizontalpodautoscaler_status_target_metric{{{target_labels}}}", "values": f"{value}x200"},
        {"series": f"kube_horizontalpodautoscaler_spec_target_metric{{{target_labels}}}", "values": f"{target}x200"},
    ]


def test_saturation_alert_fires_at_max_replicas_above_target_only(promtool: str, tmp_path: Path) -> None:
    run_tests(promtool, tmp_path, [{
        "interval": "1m",
        "input_series": [
            *phase("hot", "Serving"), *phase("cool", "Serving"), *phase("room", "Serving"),
            *phase("scaled-by-keda", "Serving"),
            *hpa_series("hot", 4, 4, 1800, 1500, "medusa_tokens_per_second"),
            *hpa_series("cool", 4, 4, 900, 1500, "medusa_tokens_per_second"),
            *hpa_series("room", 2, 4, 1800, 1500, "medusa_tokens_per_second"),
            *hpa_series("keda-hpa-scaled-by-keda", 3, 3, 2000, 1500, "s0-prometheus"),
            *hpa_series("web", 5, 5, 900, 100, "http_requests"),
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "MedusaModelSaturated", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "MedusaModelSaturated", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "namespace": "models", "name": name,
                                "horizontalpodautoscaler": hpa},
                 "exp_annotations": annotations("MedusaModelSaturated", namespace="models", name=name)}
                for name, hpa in (("hot", "hot"), ("scaled-by-keda", "keda-hpa-scaled-by-keda"))]},
        ],
    }])


def test_failed_degraded_and_validation_alerts(promtool: str, tmp_path: Path) -> None:
    validations = 'medusa_validations_total{job="medusa-operator",namespace="medusa-system",pod="mo-0",result="%s"}'
    run_tests(promtool, tmp_path, [{
        "interval": "1m",
        "input_series": [
            *phase("broken", "Failed"), *phase("limping", "Degraded"), *phase("fine", "Serving"),
            {"series": validations % "passed", "values": "0+1x100"},
            {"series": validations % "failed", "values": "0x30 1x100"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "MedusaModelFailed", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": "models", "name": "broken"},
                "exp_annotations": annotations("MedusaModelFailed", namespace="models", name="broken")}]},
            {"eval_time": "10m", "alertname": "MedusaModelDegraded", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "MedusaModelDegraded", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "models", "name": "limping"},
                "exp_annotations": annotations("MedusaModelDegraded", namespace="models", name="limping")}]},
            {"eval_time": "20m", "alertname": "MedusaValidationsFailing", "exp_alerts": []},
            {"eval_time": "40m", "alertname": "MedusaValidationsFailing", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "medusa-system"},
                "exp_annotations": annotations("MedusaValidationsFailing", namespace="medusa-system")}]},
            {"eval_time": "100m", "alertname": "MedusaValidationsFailing", "exp_alerts": []},
        ],
    }])


def adapter_rule() -> dict:
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rule


def adapter_query(rule: dict, pods: list[str]) -> str:
    """The metricsQuery as prometheus-adapter expands it for a Pods metric of ``pods``."""
    series = re.fullmatch(r"([^{]+)\{.*\}", rule["seriesQuery"]).group(1)
    matchers = f'namespace="models",pod=~"{"|".join(pods)}"'
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


def test_adapter_serves_the_per_pod_series_as_the_hpa_metric() -> None:
    from medusa_operator.config import OperatorConfig
    from medusa_operator.render.autoscaling import RECORDING_RULE

    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    assert values["rules"]["default"] is False
    rule = adapter_rule()
    assert rule["name"]["as"] == OperatorConfig().tokens_metric
    assert re.fullmatch(rule["name"]["matches"], RECORDING_RULE)
    assert rule["seriesQuery"].startswith(RECORDING_RULE + "{")
    assert {k: v["resource"] for k, v in rule["resources"]["overrides"].items()} == {"namespace": "namespace",
                                                                                    "pod": "pod"}


def test_adapter_query_answers_for_pods_with_series_and_skips_a_silent_pod(promtool: str, tmp_path: Path) -> None:
    # Pods a and b have tokens/s, pod quiet has none: the adapter's answer lists a and b only, and
    # the HPA scales on those (it counts a missing pod as idle on scale-up, at target on scale-down).
    run_tests(promtool, tmp_path, [{
        "interval": "15s",
        "input_series": [
            {"series": serving("nv_llm_output_token_len_sum", "a"), "values": "0+15x40"},
            {"series": serving("nv_llm_output_token_len_sum", "b"), "values": "0+45x40"},
        ],
        "promql_expr_test": [{"expr": adapter_query(adapter_rule(), ["a", "b", "quiet"]), "eval_time": "5m",
                              "exp_samples": [{"labels": '{pod="a"}', "value": 1}, {"labels": '{pod="b"}', "value": 3}]}],
    }])


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            expr = query["query"] if isinstance(query, dict) else query
            out.append((variable["name"], re.fullmatch(r"label_values\((.*),\s*\w+\)", expr).group(1)))
    return out


def grafana_to_promql(expr: str) -> str:
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "1m")
            .replace("$namespace", ".*").replace("$model", ".*"))


def test_dashboard_queries_are_valid_promql_over_known_series(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 8
    rules = tmp_path / "dashboard-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)} for i, (_, expr) in enumerate(queries)]}]}))
    proc = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = {r["record"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]
                if "record" in r}
    used = {name for _, expr in queries for name in re.findall(r"medusa:[a-z_:0-9]+", expr)}
    assert used and used <= recorded, f"dashboard uses unrecorded series {used - recorded}"
    titles = " ".join(title.lower() for title, _ in queries)
    for topic in ("tokens/s per model", "tokens/s per pod", "replicas", "tokens per step", "queue", "phase",
                  "validation"):
        assert topic in titles, f"the dashboard has no panel on {topic}"


def render_chart(*sets: str) -> list[dict]:
    from localcluster import LocalCluster

    args = [LocalCluster().tool("helm"), "template", "mo", str(REPO / "charts" / "medusa-operator"),
            "--namespace", "medusa-system"]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def serving_pod_template() -> dict:
    from medusa_operator.api.v1alpha1 import MedusaModelSpec
    from medusa_operator.config import OperatorConfig
    from medusa_operator.render import serving
    from medusa_operator.render.context import ModelRef, RenderContext

    doc = yaml.safe_load((REPO / "examples" / "smollm2-reference.yaml").read_text())
    ctx = RenderContext(ModelRef(doc["metadata"]["name"], "models", "uid"),
                        MedusaModelSpec.model_validate(doc["spec"]), OperatorConfig())
    return serving.deployment(ctx, "0123456789", "s3://engines/repositories/x", replicas=None)["spec"]["template"]


def test_pod_monitor_selects_the_serving_pods_and_keeps_their_medusa_labels() -> None:
    assert not [d for d in render_chart() if d["kind"] == "PodMonitor"]
    (monitor,) = [d for d in render_chart("metrics.podMonitor.enabled=true", "metrics.podMonitor.labels.release=prom")
                  if d["kind"] == "PodMonitor"]
    template = serving_pod_template()
    labels = template["metadata"]["labels"]
    spec = monitor["spec"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    assert all(e["key"] in labels for e in spec["selector"]["matchExpressions"])
    # Prometheus turns medusa.dev/model into medusa_dev_model, the label the recording rules read.
    assert {re.sub(r"[^a-zA-Z0-9_]", "_", k) for k in spec["podTargetLabels"]} == {
        "medusa_dev_model", "medusa_dev_revision", "medusa_dev_variant"}
    assert set(spec["podTargetLabels"]) <= set(labels)
    (port,) = [p for c in template["spec"]["containers"] for p in c["ports"] if p["name"] == "metrics"]
    assert spec["podMetricsEndpoints"][0]["port"] == "metrics" and port["containerPort"] == 8002
    assert spec["namespaceSelector"] == {"any": True}
    (namespaced,) = [d for d in render_chart("metrics.podMonitor.enabled=true", "watchMode=namespaced",
                                             "watchNamespaces={models,staging}") if d["kind"] == "PodMonitor"]
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["models", "staging"]}


def test_dashboard_config_map_carries_the_dashboard_and_the_sidecar_label() -> None:
    assert not [d for d in render_chart() if d["kind"] == "ConfigMap"]
    (config_map,) = [d for d in render_chart("metrics.grafanaDashboard.enabled=true",
                                             "metrics.grafanaDashboard.namespace=monitoring")
                     if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["medusa-models.json"]) == json.loads(DASHBOARD.read_text())


def test_plain_prometheus_config_is_valid_with_the_rules_it_loads(promtool: str, tmp_path: Path) -> None:
    """deploy/prometheus/prometheus.yml, checked by promtool. Debian's Prometheus is built without
    Kubernetes discovery, so each job's kubernetes_sd_configs becomes an empty static_configs;
    the relabelling, the job options and the rule file are checked as written."""
    source = REPO / "deploy" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(source.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"medusa-serving", "medusa-operator"} and jobs["medusa-operator"]["honor_labels"] is True
    serving_targets = {r.get("target_label") for r in jobs["medusa-serving"]["relabel_configs"]}
    assert {"namespace", "pod", "medusa_dev_model", "medusa_dev_revision", "medusa_dev_variant"} <= serving_targets
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": []}]
    config["rule_files"] = [str((source.parent / path).resolve()) for path in config["rule_files"]]
    assert config["rule_files"] == [str(RULES_FILE)]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    proc = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
