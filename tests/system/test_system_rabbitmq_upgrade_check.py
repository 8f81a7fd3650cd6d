"""`pingpong-operator rabbitmq-upgrade-check` against real RabbitMQ nodes (the installed
rabbitmq-server, a private node with the management API each): the operator's reader of
`GET /api/feature-flags` and `GET /api/deprecated-features/used` (404 before RabbitMQ 3.13: none
to report) and its verdict on a version step.

- A new node (every stable feature flag enabled at first boot): the next series is OK, a skipped
  series is refused naming the series to take first, a patch release of the same series is OK.
- A new node that enabled only `quorum_queue` at first boot (RABBITMQ_FEATURE_FLAGS): the next
  series is refused naming the disabled flags and `rabbitmqctl enable_feature_flag all`; after
  that command it is OK."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from system_helpers import PrivateBroker, binaries, base_env


def _operator() -> Path:
    operator = binaries()["pong"].parent / "pingpong-operator"
    if not os.access(operator, os.X_OK):
        pytest.fail(f"missing {operator}: build it with `cargo build -p pingpong-operator`", pytrace=False)
    return operator


def _check(broker: PrivateBroker, from_image: str, to_image: str) -> tuple[int, dict[str, Any], str]:
    env = {**base_env(), "BROKER_USERNAME": "guest", "BROKER_PASSWORD": "guest"}
    result = subprocess.run([str(_operator()), "rabbitmq-upgrade-check",
                             "--management-url", f"http://127.0.0.1:{broker.management_port}",
                             "--from", from_image, "--to", to_image],
                            capture_output=True, text=True, env=env, timeout=60)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no report (exit {result.returncode}): {result.stderr}"
    return result.returncode, json.loads(lines[-1]), result.stderr


def _series() -> str:
    """The installed broker's `major.minor` (the checks step from it)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                         capture_output=True, text=True).stdout.strip()
    major, minor = out.split(".")[:2]
    return f"{major}.{minor}"


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(management=True, env=getattr(request, "param", None))
    try:
        broker.start()
        yield broker
    finally:
        broker.destroy()


def test_a_new_node_takes_the_next_series_and_refuses_a_skip(node: PrivateBroker) -> None:
    major, minor = (int(p) for p in _series().split("."))
    running = f"localhost/rabbitmq:{major}.{minor}.8"
    code, report, _ = _check(node, running, f"rabbitmq:{major}.{minor + 1}-management")
    assert code == 0 and report["ok"], report
    assert report["step"] == "Supported"
    assert report["disabledFeatureFlags"] == [] and report["deprecatedFeaturesInUse"] == []

    code, report, stderr = _check(node, running, f"rabbitmq:{major}.{minor + 2}-management")
    assert code == 1 and not report["ok"], report
    assert report["step"] == "Skips" and f"move to {major}.{minor + 1} first" in report["message"]
    assert "the change must wait" in stderr

    code, report, _ = _check(node, running, f"rabbitmq:{major}.{minor}.9")
    assert (code, report["step"], report["ok"]) == (0, "SameSeries", True), report


@pytest.mark.parametrize("node", [{"RABBITMQ_FEATURE_FLAGS": "quorum_queue"}], indirect=True)
def test_disabled_feature_flags_refuse_the_next_series_until_enabled(node: PrivateBroker) -> None:
    major, minor = (int(p) for p in _series().split("."))
    running, target = f"rabbitmq:{major}.{minor}", f"rabbitmq:{major}.{minor + 1}"
    listed = node.ctl("-q", "list_feature_flags", "name", "state", "stability", "--no-table-headers")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines() if line.strip()]
    disabled = sorted(row[0] for row in rows
                      if len(row) == 3 and row[1] != "enabled" and row[2] != "experimental")
    assert disabled, f"the node enabled every flag despite RABBITMQ_FEATURE_FLAGS:\n{listed.stdout}"

    code, report, _ = _check(node, running, target)
    assert code == 1 and not report["ok"], report
    # The broker's own view, as rabbitmqctl shows it.
    assert report["disabledFeatureFlags"] == disabled, (report, listed.stdout)
    assert "rabbitmqctl enable_feature_flag all" in report["message"], report

    enabled = node.ctl("enable_feature_flag", "all")
    assert enabled.returncode == 0, enabled.stderr
    code, report, _ = _check(node, running, target)
    assert code == 0 and report["ok"] and report["disabledFeatureFlags"] == [], report
