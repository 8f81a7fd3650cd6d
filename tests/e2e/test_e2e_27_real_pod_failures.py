"""What a user sees when pods that really run fail (the local cluster's real node: the kubelet
pulls, starts and restarts the containers itself; nothing is written on its behalf):

- a ping image that cannot be pulled: the rollout stalls with the old pod still serving through
  the Gateway, `Ready` turns False with `ImagePullFailed` naming the new pod and quoting the
  kubelet's error, and the stack is Ready again once the image is fixed;
- a pong that exits at start (an invalid setting): `Ready` False with `CrashLoopBackOff` naming
  the pod, and Ready again once the setting is removed.

tests/e2e/test_e2e_52_pod_truth.py covers the same conditions on kwok pods whose status is written
as a kubelet would; this file proves the kubelet's own reasons reach the condition.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from e2e_helpers import Cluster, eventually, stack_doc, unique

GATEWAY = {"name": "public", "namespace": "gateway-system"}


def _patch(cluster: Cluster, ns: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl("-n", ns, "patch", "pingpongstack", name, "--type=merge", "-p",
                    json.dumps({"spec": spec}))


def _ready(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    cond = cluster.condition(ns, name, "Ready")
    assert cond is not None, "no Ready condition"
    return cond


def _not_ready_because(cluster: Cluster, ns: str, name: str, reason: str, pod_prefix: str,
                       timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = _ready(cluster, ns, name)
        if cond["status"] == "False" and cond.get("reason") == reason and f"pod {pod_prefix}" in cond["message"]:
            return cond
        return None

    return eventually(f"Ready=False {reason} naming a pod {pod_prefix}*", check, timeout=timeout, interval=2)


def test_a_bad_image_and_a_crash_loop_on_real_pods_are_named_in_ready(cluster: Cluster, real_ns: str) -> None:
    ns, name = real_ns, "fail"
    url = cluster.gateway_url
    assert url is not None
    host = f"{name}.{ns}.pingpong.test"
    cluster.apply(stack_doc(name, {"rabbitmq": {"image": cluster.local_image("rabbitmq"),
                                                "storage": {"ephemeral": True}},
                                   "ingress": {"enabled": False},
                                   "gateway": {"parentRef": GATEWAY, "hostname": host}}), ns)
    cluster.wait_ready(ns, name, timeout=600)
    deployment = cluster.get("deployment", f"{name}-ping", ns)
    good = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    bad = f"{good.rsplit(':', 1)[0]}:does-not-exist-{unique('tag')}"

    # A tag the node does not have and no registry serves: the kubelet cannot pull it.
    _patch(cluster, ns, name, {"ping": {"image": bad}})
    cond = _not_ready_because(cluster, ns, name, "ImagePullFailed", f"{name}-ping-", timeout=300)
    assert "ping" in cond["message"] and bad in cond["message"], cond
    assert cluster.condition(ns, name, "Degraded")["status"] == "True"
    # The old pod keeps serving through the Gateway while the new one cannot start.
    msg = unique("during-bad-rollout")
    r = requests.post(f"{url}/ping", json={"msg": msg}, headers={"Host": host}, timeout=15)
    assert r.status_code == 200 and r.json()["content"] == msg, r.text
    _patch(cluster, ns, name, {"ping": {"image": None}})
    cluster.wait_ready(ns, name, timeout=300)
    pods = cluster.get("pods", namespace=ns, selector="app.kubernetes.io/component=ping")["items"]
    assert {p["spec"]["containers"][0]["image"] for p in pods if not p["metadata"].get("deletionTimestamp")} == {good}

    # pong refuses a store bound below 1 MiB and exits: the kubelet restarts it with back-off.
    _patch(cluster, ns, name, {"pong": {"env": [{"name": "PONG_MAX_BYTES", "value": "1"}]}})
    cond = _not_ready_because(cluster, ns, name, "CrashLoopBackOff", f"{name}-pong-", timeout=300)
    assert "pong" in cond["message"], cond
    _patch(cluster, ns, name, {"pong": {"env": None}})
    cluster.wait_ready(ns, name, timeout=300)
    msg = unique("after-recovery")
    r = requests.post(f"{url}/ping", json={"msg": msg}, headers={"Host": host}, timeout=15)
    assert r.status_code == 200, r.text
