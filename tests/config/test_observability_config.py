"""The ops stack: Prometheus config and alert rules (checked and unit-tested with promtool), the Grafana
dashboard and provisioning, and the compose profile. Every metric a query names is one the app exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import Metrics
from tests.conftest import IN_CI, REPO
from tests.gateway.test_metrics import exercise_everything
from tests.support.metrics import Scrape

CONFIG = REPO / "config"
PROMETHEUS_FILE = CONFIG / "prometheus.yml"
ALERTS_FILE = CONFIG / "alerts.yml"
DASHBOARD_FILE = CONFIG / "grafana" / "dashboards" / "privaterouter-overview.json"
DATASOURCE_FILE = CONFIG / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER_FILE = CONFIG / "grafana" / "provisioning" / "dashboards" / "privaterouter.yml"
COMPOSE_FILE = REPO / "compose.yaml"

# Seed 004's twelve panels, in order.
PANEL_TITLES = [
    "Requests / s", "Error rate (5xx)", "p95 latency", "In flight",
    "Latency percentiles", "Requests / s by status class",
    "Top 10 routes by volume", "Top 10 routes by p95 latency",
    "LLM tokens / s by model and direction", "LLM spend (USD / hour) by model",
    "GPU nodes up", "GPU node utilization",
]
REQUIRED_ALERTS = {"PrivateRouterHigh5xxRate", "PrivateRouterHighLatencyP95", "PrivateRouterGpuNodeDown",
                   "PrivateRouterUsageEventFlushFailures", "PrivateRouterCostCapped"}
# Series Prometheus makes itself, not the app.
PROMETHEUS_OWN = {"up"}
# Grafana's variables, replaced by what they stand for so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(data, dict)
    return data


def panel_queries() -> dict[str, list[str]]:
    return {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in dashboard()["panels"]}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS_FILE)["groups"] for rule in group["rules"]]


def exported_names() -> set[str]:
    metrics = Metrics()
    exercise_everything(metrics)
    return Scrape.parse(metrics.render()[0]).names()


def referenced_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: every pr_* word, and any other word used as a selector."""
    names = set(re.findall(r"\bpr_[a-z0-9_]+\b", expr))
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    for word in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[)", without_strings):
        names.add(word)
    return names


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if IN_CI:
            pytest.fail("promtool is missing in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed here (Debian package `prometheus`); CI installs it")
    return path


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --- metric names ------------------------------------------------------------------------------


def test_every_alert_names_metrics_the_app_exports() -> None:
    exported = exported_names() | PROMETHEUS_OWN
    for rule in alert_rules():
        names = referenced_metrics(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)


def test_every_panel_queries_metrics_the_app_exports() -> None:
    exported = exported_names()
    for title, queries in panel_queries().items():
        assert queries, title
        for query in queries:
            names = referenced_metrics(query)
            assert names and all(name.startswith("pr_") for name in names), (title, query)
            assert names <= exported, (title, names - exported)


def test_name_extraction_sees_selectors_and_ignores_functions() -> None:
    expr = 'sum by (le) (rate(pr_a_bucket{route!~"/v1/.*"}[5m])) / up{job="x"} and on() vector(1)'
    assert referenced_metrics(expr) == {"pr_a_bucket", "up"}


# --- Prometheus --------------------------------------------------------------------------------


def test_prometheus_scrapes_the_gateway_metrics_port() -> None:
    config = load_yaml(PROMETHEUS_FILE)
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "privaterouter"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    compose = load_yaml(COMPOSE_FILE)
    assert discovery["names"] == ["api"] and "api" in compose["services"]
    assert str(discovery["port"]) == compose["x-api-env"]["METRICS_PORT"]


def test_required_alerts_exist_with_severity_and_summary() -> None:
    rules = alert_rules()
    assert REQUIRED_ALERTS <= {rule["alert"] for rule in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_promtool_accepts_the_config() -> None:
    assert "SUCCESS" in run_promtool("check", "config", str(PROMETHEUS_FILE))


def test_promtool_accepts_the_alert_rules() -> None:
    assert f"SUCCESS: {len(alert_rules())} rules found" in run_promtool("check", "rules", str(ALERTS_FILE))


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = []
    for number, (title, queries) in enumerate(panel_queries().items()):
        for index, query in enumerate(queries):
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            assert "$" not in query.replace("${1}", ""), (title, query)
            rules.append({"record": f"dashboard:panel{number}:query{index}", "expr": query})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run_promtool("check", "rules", str(path))


def _series(name: str, values: str, /, **labels: str) -> dict[str, str]:
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


def _alert_tests() -> list[dict[str, Any]]:
    ok = {"method": "GET", "route": "/v1/models", "status": "200"}
    failed = {**ok, "status": "500"}
    bucket = "pr_http_request_duration_seconds_bucket"
    api = {"method": "GET", "route": "/api/keys", "status": "200"}
    chat = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    return [
        {"interval": "1m",  # 10 % of 100 requests a minute fail
         "input_series": [_series("pr_http_requests_total", "0+90x30", **ok),
                          _series("pr_http_requests_total", "0+10x30", **failed)],
         "alert_rule_test": [{"eval_time": "3m", "alertname": "PrivateRouterHigh5xxRate", "exp_alerts": []},
                             {"eval_time": "15m", "alertname": "PrivateRouterHigh5xxRate",
                              "exp_alerts": [{"exp_labels": {"severity": "critical"}}]}]},
        {"interval": "1m",  # 0.5 %: below the threshold
         "input_series": [_series("pr_http_requests_total", "0+995x30", **ok),
                          _series("pr_http_requests_total", "0+5x30", **failed)],
         "alert_rule_test": [{"eval_time": "20m", "alertname": "PrivateRouterHigh5xxRate", "exp_alerts": []}]},
        {"interval": "1m",  # half the clients give up (499, client closed request): no server error
         "input_series": [_series("pr_http_requests_total", "0+50x30", **ok),
                          _series("pr_http_requests_total", "0+50x30", **{**ok, "status": "499"})],
         "alert_rule_test": [{"eval_time": "20m", "alertname": "PrivateRouterHigh5xxRate", "exp_alerts": []}]},
        {"interval": "1m",  # 10 % of the answered requests fail while as many clients give up: still 10 %
         "input_series": [_series("pr_http_requests_total", "0+90x30", **ok),
                          _series("pr_http_requests_total", "0+10x30", **failed),
                          _series("pr_http_requests_total", "0+400x30", **{**ok, "status": "499"})],
         "alert_rule_test": [{"eval_time": "15m", "alertname": "PrivateRouterHigh5xxRate",
                              "exp_alerts": [{"exp_labels": {"severity": "critical"}}]}]},
        {"interval": "1m",  # dashboard API requests all between 1 s and 2.5 s
         "input_series": [_series(bucket, "0x30", le="1.0", **api), _series(bucket, "0+10x30", le="2.5", **api),
                          _series(bucket, "0+10x30", le="+Inf", **api)],
         "alert_rule_test": [{"eval_time": "20m", "alertname": "PrivateRouterHighLatencyP95",
                              "exp_alerts": [{"exp_labels": {"severity": "warning"}}]}]},
        {"interval": "1m",  # long LLM streams are not a latency problem
         "input_series": [_series(bucket, "0x30", le="60.0", **chat), _series(bucket, "0+10x30", le="120.0", **chat),
                          _series(bucket, "0+10x30", le="+Inf", **chat)],
         "alert_rule_test": [{"eval_time": "20m", "alertname": "PrivateRouterHighLatencyP95", "exp_alerts": []}]},
        {"interval": "1m",  # gpu-1 goes down, gpu-2 stays up
         "input_series": [_series("pr_gpu_node_up", "1 1 0x10", node_id="gpu-1", name="gpu-1"),
                          _series("pr_gpu_node_up", "1x12", node_id="gpu-2", name="gpu-2")],
         "alert_rule_test": [{"eval_time": "10m", "alertname": "PrivateRouterGpuNodeDown",
                              "exp_alerts": [{"exp_labels": {"severity": "warning", "node_id": "gpu-1",
                                                             "name": "gpu-1"}}]},
                             {"eval_time": "10m", "alertname": "PrivateRouterNoGpuNodeUp", "exp_alerts": []}]},
        {"interval": "1m",  # one failed flush at minute 3, none after
         "input_series": [_series("pr_usage_events_flush_failures_total", "0 0 0 1x30", job="privaterouter")],
         "alert_rule_test": [{"eval_time": "5m", "alertname": "PrivateRouterUsageEventFlushFailures",
                              "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
                             {"eval_time": "25m", "alertname": "PrivateRouterUsageEventFlushFailures",
                              "exp_alerts": []}]},
        {"interval": "1m",  # one request of privaterouter/fast charged its hold only, at minute 2
         "input_series": [_series("pr_usage_cost_capped_total", "0 0 1x30", model="privaterouter/fast")],
         "alert_rule_test": [{"eval_time": "1m", "alertname": "PrivateRouterCostCapped", "exp_alerts": []},
                             {"eval_time": "5m", "alertname": "PrivateRouterCostCapped",
                              "exp_alerts": [{"exp_labels": {"severity": "warning",
                                                             "model": "privaterouter/fast"}}]},
                             {"eval_time": "25m", "alertname": "PrivateRouterCostCapped", "exp_alerts": []}]},
    ]


def test_alert_rules_fire_when_they_should(tmp_path: Path) -> None:
    # Annotations are for people; the unit test checks expressions, durations and labels.
    rules = load_yaml(ALERTS_FILE)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(
        {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": _alert_tests()}))
    run_promtool("test", "rules", str(tmp_path / "alerts_test.yml"))


# --- Grafana -----------------------------------------------------------------------------------


def test_dashboard_has_the_seed_title_and_twelve_panels() -> None:
    data = dashboard()
    assert data["title"] == "PrivateRouter — Overview"
    assert [panel["title"] for panel in data["panels"]] == PANEL_TITLES
    assert len({panel["id"] for panel in data["panels"]}) == 12


def test_every_panel_uses_the_provisioned_datasource() -> None:
    (source,) = load_yaml(DATASOURCE_FILE)["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in dashboard()["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_panels_do_not_overlap_on_the_grid() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, panel["title"]
        cells |= area


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    (provider,) = load_yaml(PROVIDER_FILE)["providers"]
    grafana = load_yaml(COMPOSE_FILE)["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./config/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./config/grafana/provisioning"] == "/etc/grafana/provisioning"


# --- compose -----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_observability_services_are_opt_in_and_local(service: str) -> None:
    spec = load_yaml(COMPOSE_FILE)["services"][service]
    assert spec["profiles"] == ["observability"]
    assert all(port.startswith("127.0.0.1:") for port in spec["ports"])
    for volume in spec["volumes"]:
        source = volume.split(":", 1)[0]
        if source.startswith("./"):
            assert (REPO / source).exists(), volume


def test_grafana_admin_password_comes_from_the_environment() -> None:
    environment = load_yaml(COMPOSE_FILE)["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_metrics_port_is_not_published() -> None:
    compose = load_yaml(COMPOSE_FILE)
    metrics_port = compose["x-api-env"]["METRICS_PORT"]
    assert all(not port.endswith(f":{metrics_port}") for port in compose["services"]["api"].get("ports", []))

