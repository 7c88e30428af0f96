"""deploy/: the Grafana dashboard and Prometheus alerts against the service's own /metrics, and the
Kubernetes base rendered and validated offline against the API schemas."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml

from app.core.config import SECRETS_DIR, Settings
from tests import tools
from tests.conftest import Api

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "bookings-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
# Grafana's variables, replaced by what Grafana would put there before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable, value in GRAFANA_VARIABLES.items():
        queries = [query.replace(variable, value) for query in queries]
    return queries


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def metric_names(query: str) -> set[str]:
    """Every series name a PromQL expression selects (by name or by `__name__`)."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

    promql_parser.walk(promql_parser.parse(query), pre_visit=visit)
    return names


def exported_series(exposition: str) -> set[str]:
    """The series names /metrics can answer, from its TYPE lines (unobserved labelled series included)."""
    series = set()
    for line in exposition.splitlines():
        match = re.fullmatch(r"# TYPE (\S+) (\w+)", line)
        if match:
            name, kind = match.groups()
            base = name.removesuffix("_total") if kind == "counter" else name
            series.add(name)
            series.update(base + suffix for suffix in SUFFIXES.get(kind, ()))
    return series


def test_metric_names_are_read_from_promql() -> None:
    query = 'sum(rate(a_total{x="1"}[5m])) / on() group_left histogram_quantile(0.9, b_bucket) + {__name__="c"}'
    assert metric_names(query) == {"a_total", "b_bucket", "c"}


async def test_dashboard_and_alerts_use_only_metrics_the_service_exports(api: Api) -> None:
    response = await api.client.get("/metrics")
    exported = exported_series(response.text)
    assert {"http_requests_total", "http_request_duration_seconds_bucket", "booking_batch_size_sum"} <= exported
    assert "http_request_total" not in exported
    used_by_dashboard = set().union(*(metric_names(query) for query in dashboard_queries()))
    used_by_alerts = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    assert used_by_dashboard - exported == set()
    assert used_by_alerts - exported == set()
    # What operators asked to see, each at least once.
    assert {
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "bookings_total",
        "booking_batch_size_bucket",
        "event_lock_wait_seconds_bucket",
        "event_lock_acquisitions_total",
        "outbox_backlog",
        "outbox_oldest_age_seconds",
        "redis_circuit_open",
        "db_pool_connections_in_use",
        "db_pool_size",
        "sse_clients",
    } <= used_by_dashboard
    assert {
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "outbox_oldest_age_seconds",
        "redis_circuit_open",
        "event_lock_acquisitions_total",
        "health_status",
    } <= used_by_alerts


async def test_health_status_is_exported_for_the_unhealthy_alert(api: Api) -> None:
    assert (await api.client.get("/api/v1/health")).status_code == 200
    exposition = (await api.client.get("/metrics")).text
    assert 'health_status{status="healthy"} 1.0' in exposition
    assert 'health_status{status="unhealthy"} 0.0' in exposition


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run([tools.promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


def rendered_base() -> list[dict[str, Any]]:
    """The base as `kubectl kustomize` renders it, or its listed files where no kustomize is found."""
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(K8S)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(K8S)]
    else:
        return [doc for name in kustomization()["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in rendered_base()}


def test_kustomization_lists_every_manifest() -> None:
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(manifests)


def test_kubernetes_base_is_valid_against_the_api_schemas(resources: dict[str, dict[str, Any]]) -> None:
    assert set(resources) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for resource in resources.values():
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_catches_a_mistake(resources: dict[str, dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(resources["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8002]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def pod_of(resource: dict[str, Any]) -> dict[str, Any]:
    return dict(resource["spec"]["template"]["spec"])


def test_deployment_probes_security_and_shutdown(resources: dict[str, dict[str, Any]]) -> None:
    pod = pod_of(resources["Deployment"])
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True and isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts[str(SECRETS_DIR)]]["secret"]["secretName"] == "bookings-secrets"
    # The service may take SHUTDOWN_TIMEOUT_SECONDS after the preStop pause: the kubelet must wait longer.
    shutdown = float(resources["ConfigMap"]["data"]["SHUTDOWN_TIMEOUT_SECONDS"])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > shutdown + pause
    assert pod["automountServiceAccountToken"] is False  # /var/run/secrets would shadow nothing, but keep it empty


def test_config_names_only_settings(resources: dict[str, dict[str, Any]]) -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for name in resources["ConfigMap"]["data"]:
        assert name in settings or name.startswith("OTEL_"), f"{name} is not a setting"


def test_service_hpa_pdb_and_job_point_at_the_deployment(resources: dict[str, dict[str, Any]]) -> None:
    deployment = resources["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = pod_of(deployment)["containers"]
    port_names = {port["name"] for port in container["ports"]}
    service = resources["Service"]["spec"]
    assert service["selector"].items() <= pod_labels.items()
    assert {port["targetPort"] for port in service["ports"]} <= port_names
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (migrate,) = pod_of(resources["Job"])["containers"]
    assert migrate["command"] == ["python", "migrate.py", "upgrade"]
    assert migrate["image"] == container["image"]
    assert migrate["envFrom"] == container["envFrom"]
