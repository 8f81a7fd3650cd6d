"""`make cluster` is idempotent: running scripts/cluster/up.sh again on a running local cluster
starts nothing twice (every pid file keeps its process) and still ends with a Ready sample; a
second cluster on the ports of the first (another checkout) stops at once with a clear message;
the addresses of kwok's simulated pods are unreachable from the host, never routed off it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from e2e_helpers import ROOT, Cluster, eventually, stack_doc


def _pids(cluster: Cluster) -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in sorted((cluster.state_dir / "run").glob("*.pid"))}


def test_up_twice_starts_nothing_twice(local: Cluster) -> None:
    before = _pids(local)
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
            "operator"} <= set(before), before
    # The namespace `default` runs on the real node when there is one: there the sample is the
    # one `make cluster` applies (an emptyDir broker; kwok's volumes are not writable by a pod).
    sample = "local.yaml" if local.gateway_url else "minimal.yaml"
    result = subprocess.run([str(ROOT / "scripts" / "cluster" / "up.sh")], cwd=ROOT,
                            env={**os.environ, **local.env, "CLUSTER_SAMPLE": f"manifests/samples/{sample}"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _pids(local) == before, "a second `make cluster` started processes again"
    assert result.stdout.count("already runs") >= 6, result.stdout
    assert local.condition("default", "demo", "Ready")["status"] == "True"


def test_a_second_cluster_on_busy_ports_is_a_clear_error(local: Cluster, tmp_path: Path) -> None:
    # Another checkout's `make cluster` with the same port base: the running cluster's ports.
    env = {**os.environ, "CLUSTER_DIR": str(tmp_path / "other"),
           "CLUSTER_PORT_BASE": local.env.get("CLUSTER_PORT_BASE", "16440"), "CLUSTER_SAMPLE": ""}
    result = subprocess.run([str(ROOT / "scripts" / "cluster" / "up.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "is already in use by another process" in result.stderr, result.stderr[-2000:]
    assert "CLUSTER_PORT_BASE" in result.stderr, result.stderr[-2000:]
    assert not list((tmp_path / "other" / "run").glob("*.pid")), "it started something"


def test_a_simulated_pods_address_never_leaves_the_host(local: Cluster, ns: str) -> None:
    """kwok's pods get addresses nothing answers on; as root the host routes their range as
    unreachable (scripts/cluster/up.sh), so a connection to one (the operator asking a simulated
    broker's management API) fails here instead of going out by the default route."""
    if os.geteuid() != 0:
        assert os.environ.get("CI") != "true", "CI=true runs the suite as root"
        pytest.skip("not root: up.sh routes kwok's pod range only as root")
    local.apply(stack_doc("addr", {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
    ip = eventually("a pod on a kwok node with an address",
                    lambda: next((p["status"]["podIP"] for p in local.get("pods", namespace=ns)["items"]
                                  if p["spec"].get("nodeName", "").startswith("kwok-node-")
                                  and p.get("status", {}).get("podIP")), None), timeout=120)
    route = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True, timeout=10)
    assert route.returncode != 0 and "no route to host" in route.stderr.lower(), (
        f"{ip} (a kwok pod) is routed off the host: {route.stdout}{route.stderr}")
