"""The data path through the cluster, on pods that really run.

- Local cluster (`make cluster`, `make test`): its real node (kubelet + containerd + runc, CNI
  bridge, kube-proxy, CoreDNS) runs the stack from images built on this machine, and the HTTPRoute
  is served by the Gateway (Traefik) at the URL in <state dir>/gateway-url: POST /ping through the
  Gateway, then GET /pong.
- External (kind after `make up`): POST /ping through the Traefik Gateway (or, with
  `PINGPONG_ROUTE=ingress make up`, the Ingress) on localhost:80, or a port-forward to the
  Services when nothing answers there, then GET /pong.
The real node is on by default as root; under CI=true a local cluster without it fails the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import requests

from e2e_helpers import Cluster, eventually, stack_doc, terminate, unique

BASE_URL = os.environ.get("E2E_BASE_URL", "http://localhost")
GATEWAY = {"name": "public", "namespace": "gateway-system"}


def _port_forward(cluster: Cluster, ns: str, service: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(["kubectl", "-n", ns, "port-forward", f"service/{service}", ":80"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"127\.0\.0\.1:(\d+)", line)
    assert match, f"port-forward to {service} did not start: {line}"
    return proc, int(match.group(1))


def _post_until_accepted(url: str, msg: str, headers: dict[str, str], timeout: float) -> requests.Response:
    """POST /ping until it answers 200: the route may reach the Gateway a little after Ready."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = requests.post(url, json={"msg": msg}, headers=headers, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                return r
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)


def test_ping_then_pong_through_the_route(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    if cluster.local:
        _through_the_gateway_on_the_real_node(cluster, request.getfixturevalue("real_ns"))
    else:
        _through_the_route_on_kind(cluster, request.getfixturevalue("ns"))


def _through_the_gateway_on_the_real_node(cluster: Cluster, ns: str) -> None:
    host = f"{ns}.pingpong.test"
    cluster.apply(stack_doc("e2e", {"rabbitmq": {"image": cluster.local_image("rabbitmq"),
                                                 "storage": {"ephemeral": True}},
                                    "ingress": {"enabled": False},
                                    "gateway": {"parentRef": GATEWAY, "hostname": host}}), ns)
    cluster.wait_ready(ns, "e2e", timeout=600)
    # Every pod of the stack runs on the real node, in containerd.
    pods = cluster.get("pods", namespace=ns)["items"]
    assert len(pods) == 3, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert pod["spec"]["nodeName"] == "pingpong-node", pod["metadata"]["name"]
        statuses = pod["status"]["containerStatuses"]
        assert all(s["containerID"].startswith("containerd://") and s["ready"] for s in statuses), statuses
    url = cluster.gateway_url
    assert url is not None
    headers = {"Host": host}
    msg = unique("e2e-message")
    r = _post_until_accepted(f"{url}/ping", msg, headers, timeout=180)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == msg, r.text
    eventually("the message in GET /pong through the Gateway",
               lambda: msg in requests.get(f"{url}/pong", headers=headers, timeout=10).text, timeout=120)
    # The route is Accepted by the Gateway and its backends resolved (Traefik wrote its status).
    route = cluster.get("httproute", "e2e", ns)
    (parent,) = route["status"]["parents"]
    assert parent["controllerName"] == "traefik.io/gateway-controller", parent
    conditions = {c["type"]: c["status"] for c in parent["conditions"]}
    assert conditions.get("Accepted") == "True" and conditions.get("ResolvedRefs") == "True", parent


def _through_the_route_on_kind(cluster: Cluster, ns: str) -> None:
    """`make up`'s Gateway (Traefik, gateway-system/public) when it runs, else an Ingress
    (`PINGPONG_ROUTE=ingress make up`: ingress-nginx); both on localhost:80."""
    host = f"{ns}.localhost"
    gateway = cluster.kubectl("-n", GATEWAY["namespace"], "get", "gateway", GATEWAY["name"], check=False)
    if gateway.returncode == 0:
        route: dict[str, object] = {"ingress": {"enabled": False},
                                    "gateway": {"parentRef": GATEWAY, "hostname": host}}
    else:
        route = {"ingress": {"enabled": True, "host": host}}
    cluster.apply(stack_doc("e2e", {"rabbitmq": {"storage": {"ephemeral": True}}, **route}), ns)
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
        r = _post_until_accepted(ping, msg, headers, timeout=60)
        assert r.status_code == 200, r.text
        eventually("the message in GET /pong",
                   lambda: msg in requests.get(pong, headers=headers, timeout=10).text, timeout=60)
    finally:
        for proc in procs:
            terminate(proc)
