"""Alert rules: the operator's own (the chart's PrometheusRule) and a stack's (the PrometheusRule
the operator renders, taken from the builder golden of operator/tests/fixtures/full.yaml).

`promtool test rules` (Prometheus's own tool, built from Go modules by
scripts/observability/build.sh and cached outside git) runs the synthetic series of
tests/deploy/alerts/*.test.yaml against both: every alert fires when it should and stays quiet
when it should not. Around it: every alert has such a firing and a quiet case, a runbook section
(docs/runbooks.md) with the three parts, a dashboard panel that shows what it fires on, and reads
only metric names some process really exports.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_helpers import CHART, NAMESPACE, ROOT, find, load_yaml_docs, render_chart

ALERT_TESTS = Path(__file__).resolve().parent / "alerts"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
DASHBOARD = CHART / "dashboards" / "pingpong-operator.json"
GOLDEN = ROOT / "operator" / "tests" / "golden" / "full.yaml"
RUNBOOK_URL = "https://github.com/pingpong-operator/pingpong-operator/blob/main/docs/runbooks.md"
METRIC_LISTS = [
    ROOT / "operator" / "metrics.txt",
    ROOT / "services" / "ping" / "metrics.txt",
    ROOT / "services" / "pong" / "metrics.txt",
    Path(__file__).resolve().parent / "rabbitmq-metrics.txt",
]
# Series Prometheus itself writes for every target.
PROMETHEUS_METRICS = {"up"}

STACK_ALERTS = {
    "PingPongBacklogGrowing", "PingPongQueueNoConsumer", "PingPongPublishConfirmSlow",
    "PingPongPublishUnavailable", "PingPongDeadLetterGrowing", "PingPongBrokerMemoryAlarm",
    "PingPongBrokerDiskAlarm", "PingPongBrokerNodeDown", "PingPongBrokerPartitioned",
    "PingPongStoreErrors",
}
OPERATOR_ALERTS = {
    "PingPongOperatorDown", "PingPongOperatorNoLeader", "PingPongStackNotReady",
    "PingPongReconcileErrors",
}


def _promtool() -> Path:
    """promtool: $PROMTOOL, else the cached build of scripts/observability/build.sh. Missing
    fails under CI=true (make test builds it first) and skips otherwise."""
    if os.environ.get("PROMTOOL"):
        return Path(os.environ["PROMTOOL"])
    found = subprocess.run(
        [str(ROOT / "scripts" / "observability" / "build.sh"), "--cached", "promtool"],
        capture_output=True, text=True, check=False,
    )
    if found.returncode == 0:
        return Path(found.stdout.strip().splitlines()[-1])
    message = "promtool is not built: run scripts/observability/build.sh promtool (make test does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _stack_rule() -> dict[str, Any]:
    rules = [o for o in load_yaml_docs(GOLDEN.read_text()) if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1, "the full golden has one PrometheusRule (spec.monitoring.prometheusRule)"
    return rules[0]


def _operator_rule() -> dict[str, Any]:
    objects = render_chart({"serviceMonitor": {"enabled": True},
                            "prometheusRule": {"enabled": True}})
    (rule,) = find(objects, "PrometheusRule")
    return rule


RULES = {"stack": _stack_rule, "operator": _operator_rule}
EXPECTED = {"stack": STACK_ALERTS, "operator": OPERATOR_ALERTS}


def _alerts(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def _family(name: str) -> str:
    """The metric family of a series name: a histogram's `_bucket`/`_sum`/`_count` series belong
    to their histogram (a family whose own name ends in `_count` stays itself)."""
    return name if name in _exported() else re.sub(r"_(bucket|sum|count)$", "", name)


def _metric_names(expr: str) -> set[str]:
    """Metric families an expression reads (identifiers directly followed by `{`)."""
    return {_family(n) for n in re.findall(r"\b([a-z_][a-z0-9_]*)\{", expr)}


@functools.cache
def _exported() -> frozenset[str]:
    names = set(PROMETHEUS_METRICS)
    for path in METRIC_LISTS:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.add(line)
    return frozenset(names)


@pytest.mark.parametrize("which", sorted(RULES))
def test_promtool_rule_tests_pass(which: str, tmp_path: Path) -> None:
    """Writes the rule groups next to a copy of alerts/<which>.test.yaml and runs
    `promtool check rules` and `promtool test rules` on them."""
    promtool = _promtool()
    rule = RULES[which]()
    rules_file = tmp_path / f"{which}-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    test_file = tmp_path / f"{which}.test.yaml"
    shutil.copy(ALERT_TESTS / f"{which}.test.yaml", test_file)
    for args in (["check", "rules", str(rules_file)], ["test", "rules", str(test_file)]):
        run = subprocess.run([str(promtool), *args], capture_output=True, text=True,
                             cwd=tmp_path, check=False, timeout=300)
        assert run.returncode == 0, f"promtool {' '.join(args[:2])}:\n{run.stdout}\n{run.stderr}"


@pytest.mark.parametrize("which", sorted(RULES))
def test_every_alert_fires_and_stays_quiet_in_a_test(which: str) -> None:
    alerts = {r["alert"] for r in _alerts(RULES[which]())}
    assert alerts == EXPECTED[which]
    spec = yaml.safe_load((ALERT_TESTS / f"{which}.test.yaml").read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in spec["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts <= fires, f"no test makes these fire: {sorted(alerts - fires)}"
    assert alerts <= quiet, f"no test shows these quiet: {sorted(alerts - quiet)}"
    assert fires | quiet <= alerts, f"tests of unknown alerts: {sorted((fires | quiet) - alerts)}"


def _runbook_sections() -> dict[str, str]:
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    return sections


@pytest.mark.parametrize("which", sorted(RULES))
def test_every_alert_links_a_runbook_section(which: str) -> None:
    sections = _runbook_sections()
    for alert in _alerts(RULES[which]()):
        name = alert["alert"]
        assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"
        assert name in sections, f"docs/runbooks.md has no section '## {name}'"
        for part in ("**What it means.**", "**How to confirm.**", "**What to do.**"):
            assert part in sections[name], f"runbook {name} lacks {part}"
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


@pytest.mark.parametrize("which", sorted(RULES))
def test_every_alert_reads_exported_metrics(which: str) -> None:
    exported = _exported()
    for alert in _alerts(RULES[which]()):
        names = _metric_names(alert["expr"])
        assert names, f"{alert['alert']}: no metric found in {alert['expr']}"
        assert names <= exported, f"{alert['alert']} reads unknown metrics {names - exported}"


@pytest.mark.parametrize("which", sorted(RULES))
def test_every_alert_points_at_a_panel_that_shows_it(which: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {p["id"]: p for p in dashboard["panels"]}
    for alert in _alerts(RULES[which]()):
        url = alert["annotations"]["dashboard_url"]
        match = re.fullmatch(
            r"/d/(?P<uid>[^/]+)/[^?]+\?var-namespace=(?P<ns>[a-z0-9-]+)&viewPanel=(?P<id>\d+)", url)
        assert match, f"{alert['alert']}: dashboard_url {url}"
        assert match["uid"] == dashboard["uid"]
        panel = panels.get(int(match["id"]))
        assert panel is not None and panel["type"] != "row", f"{alert['alert']}: no panel {url}"
        shown = set().union(*(_metric_names(t["expr"]) | set(re.findall(
            r"\b(pingpong_[a-z_]+|rabbitmq_[a-z_]+)", t["expr"])) for t in panel["targets"]))
        shown = {_family(n) for n in shown}
        assert _metric_names(alert["expr"]) & shown, (
            f"{alert['alert']}: panel '{panel['title']}' shows none of its metrics")


def test_dashboard_reads_only_known_broker_metrics() -> None:
    exported = _exported()
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names = set(re.findall(r"\b(rabbitmq_[a-z_]+)", target["expr"]))
            assert names <= exported, f"panel '{panel['title']}' reads {names - exported}"


def test_operator_rule_selects_the_release() -> None:
    rule = _operator_rule()
    assert rule["metadata"]["namespace"] == NAMESPACE
    for alert in _alerts(rule):
        assert f'namespace="{NAMESPACE}"' in alert["expr"]
        assert 'job="pingpong-operator-metrics"' in alert["expr"]
    with pytest.raises(Exception, match="requires serviceMonitor.enabled"):
        render_chart({"prometheusRule": {"enabled": True}})
