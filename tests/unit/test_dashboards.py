"""The Prometheus config, its rules and the Grafana dashboard, checked without servers: valid
for promtool, the alerts fire when they should, and every metric they name exists."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sentiment.json"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).is_file(), reason="promtool is not installed (.ci/run installs prometheus)"
)

# The gauges of the monitoring design (gateway/observability/live_monitor.py); with
# Prometheus's own `up`.
DESIGN = {
    "sentiment_positive_ratio",
    "sentiment_confidence_mean",
    "sentiment_known_term_ratio",
    "sentiment_drift_score",
    "sentiment_drift_detected",
    "sentiment_estimated_accuracy",
    "sentiment_window_size",
    "sentiment_feedback_accuracy",
    "sentiment_feedback_total",
    "sentiment_prediction_log_dropped_total",
}
PROMETHEUS_OWN = {"up"}
# Grafana's variables, replaced as Grafana would before a query reaches Prometheus.
GRAFANA = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$instance": ".*",
    "$model_version": ".*",
}
WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
WORDS |= {"bool", "offset", "inf", "nan"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (recording rules' names included)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        after = expr[match.end() :].lstrip()
        if match.group() in WORDS or after.startswith("("):  # a keyword or a function
            continue
        if match.start() and expr[match.start() - 1].isdigit():  # 5m, 1e3
            continue
        names.add(match.group())
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, endpoint) (rate(a_bucket{x=~"$y", e="/p"}[5m])))'
    ) == {"a_bucket"}
    assert metric_names("max by (v) (b * on (i, v) (c == 1) and on (i) d:e) > bool 0.2") == {
        "b",
        "c",
        "d:e",
    }
    assert metric_names('label_values(up{job="gateway"}, instance)') == {"up", "instance"}


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard: panels, annotations; Grafana variables replaced."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"]
        queries.append(re.fullmatch(r"label_values\((.+), \w+\)", query).group(1))
    for name, value in GRAFANA.items():
        queries = [q.replace(name, value) for q in queries]
    assert not [q for q in queries if "$" in q], "a variable the test does not know"
    return queries


def rules() -> list[dict]:
    return [
        rule
        for path in RULES
        for g in yaml.safe_load(path.read_text())["groups"]
        for rule in g["rules"]
    ]


def exposition() -> str:
    """The gateway's own /metrics, from the app as it is built (nothing started)."""

    async def scrape() -> str:
        transport = httpx.ASGITransport(app=create_app(Settings(api_keys="")))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return (await client.get("/metrics")).text

    return asyncio.run(scrape())


def exposed_names(text: str) -> set[str]:
    """Sample names of the exposition, also of series with no samples yet (from # TYPE)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind in ("histogram", "summary"):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        names.add(name)
    return names


def test_every_metric_of_the_dashboard_and_the_rules_exists():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exposed_names(exposition()) | DESIGN | PROMETHEUS_OWN | recorded
    used = {name for q in dashboard_queries() for name in metric_names(q)} - {"instance"}
    used_by_rules = {name for rule in rules() for name in metric_names(rule["expr"])}
    assert used and used_by_rules
    assert used - known == set(), "the dashboard reads series nobody exports"
    assert used_by_rules - known == set(), "the rules read series nobody exports"


def test_the_dashboard_shows_every_gauge_of_the_design_and_the_gateway_series():
    used = {name for q in dashboard_queries() for name in metric_names(q)}
    wanted = DESIGN | {
        "gateway_requests_total",
        "gateway_errors_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_model_version",
        "gateway_rollouts_total",
    }
    assert wanted - used == set()


def test_the_dashboard_is_provisionable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "sentiment-service" and "id" not in dashboard
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == provisioned, panel["title"]
        if panel["type"] != "row":
            assert panel["description"], panel["title"]


@needs_promtool
def test_promtool_accepts_the_config_and_its_rules(tmp_path):
    """As compose runs it: the rules beside it, the key in the file the secret provides."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    key = tmp_path / "metrics_api_key"
    key.write_text("a-key-of-the-operator")
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(key)
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout + checked.stderr


@needs_promtool
def test_the_alerts_fire_when_they_should_and_only_then():
    tested = promtool("test", "rules", str(PROMETHEUS / "tests" / "rules_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    covered = set(
        re.findall(r"alertname: (\w+)", (PROMETHEUS / "tests" / "rules_test.yml").read_text())
    )
    assert alerts <= covered, "every alert has a case"


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each query as the expression of a recording rule."""
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query{i}", "expr": q} for i, q in enumerate(dashboard_queries())
        ],
    }
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
