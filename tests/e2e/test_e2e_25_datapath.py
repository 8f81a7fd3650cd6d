"""The data path through the cluster (external mode only: on the local control plane pods are
simulated by kwok and execute nothing; there the data path is covered by tests/system, which runs the
real binaries with the configuration the operator renders). On kind after `make up`: POST /ping
through ingress-nginx on localhost:80 (or a port-forward to the Services), then GET /pong."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import requests

from e2e_helpers import Cluster, eventually, stack_doc, terminate, unique

BASE_URL = os.environ.get("E2E_BASE_URL", "http://localhost")


def _port_forward(cluster: Cluster, ns: str, service: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(["kubectl", "-n", ns, "port-forward", f"service/{service}", ":80"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"127\.0\.0\.1:(\d+)", line)
    assert match, f"port-forward to {service} did not start: {line}"
    return proc, int(match.group(1))


def test_ping_then_pong_through_the_route(cluster: Cluster, ns: str) -> None:
    if cluster.local:
        pytest.skip("pods are simulated on the local cluster; tests/system covers the data path")
    host = f"{ns}.localhost"
    cluster.apply(stack_doc("e2e", {"rabbitmq": {"storage": {"ephemeral": True}},
                                    "ingress": {"enabled": True, "host": host}}), ns)
    cluster.wait_ready(ns, "e2e", timeout=600)
    msg = unique("e2e-message")
    procs = []
    try:
        try:
            requests.get(f"{BASE_URL}/pong", headers={"Host": host}, timeout=5)
            ping, pong, headers = f"{BASE_URL}/ping", f"{BASE_URL}/pong", {"Host": host}
        except requests.ConnectionError:
            (p1, port1), (p2, port2) = _port_forward(cluster, ns, "e2e-ping"), _port_forward(cluster, ns, "e2e-pong")
            procs = [p1, p2]
            ping, pong, headers = f"http://127.0.0.1:{port1}/ping", f"http://127.0.0.1:{port2}/pong", {}
        deadline = time.monotonic() + 60
        while True:
            r = requests.post(ping, json={"msg": msg}, headers=headers, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert r.status_code == 200, r.text
        eventually("the message in GET /pong",
                   lambda: msg in requests.get(pong, headers=headers, timeout=10).text, timeout=60)
    finally:
        for proc in procs:
            terminate(proc)
