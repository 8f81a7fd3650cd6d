"""Stacks on pods that really run (the local cluster's real node: kubelet, containerd, runc, CNI
bridge, kube-proxy, CoreDNS; the Gateway is Traefik), driven through the Gateway like a user:

- a rolling update of ping (a spec change) under a steady load of POST /ping answers only 2xx, and
  every acknowledged message reaches GET /pong;
- the broker credentials reach ping and pong as files (never as values in the pod template), and a
  rotation of the user's Secret rolls the broker, ping and pong onto the new password, which the
  data path then uses;

A three-node broker in pods, and losing one of them under load: test_e2e_28_broker_cluster.py.

Every load is bounded in requests and time; the assertions are about answers and messages, never
about how long something took.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from e2e_helpers import Cluster, eventually, unique
from real_pods import Load, exec_in as _exec, pods as _pods, post_ok as _post_ok
from real_pods import ready_pods as _ready_pods, real_stack as _real_stack, stored_messages


def _env(pod: dict[str, Any]) -> dict[str, str]:
    (container,) = pod["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _secret(name: str, username: str, password: str) -> dict[str, Any]:
    # pingpong.dev/referable: the opt-in that lets a stack name this Secret.
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": {"pingpong.dev/referable": "true"}},
            "stringData": {"username": username, "password": password}}


def _credential_files_match(cluster: Cluster, ns: str, username: str, password: str) -> bool:
    """Every running ping and pong container reads exactly these credentials from its files, and
    no pod template holds the password as a value."""
    for component in ("ping", "pong"):
        pods = _ready_pods(cluster, ns, component)
        if not pods:
            return False
        for pod in pods:
            env = _env(pod)
            assert password not in json.dumps(pod["spec"]), f"{pod['metadata']['name']} carries the password"
            user_file, pass_file = env["RABBITMQ_DEFAULT_USER_FILE"], env["RABBITMQ_DEFAULT_PASS_FILE"]
            name = pod["metadata"]["name"]
            if _exec(cluster, ns, name, "cat", user_file).strip() != username:
                return False
            if _exec(cluster, ns, name, "cat", pass_file).strip() != password:
                return False
    return True


def test_rolling_ping_under_load_and_rotating_the_credentials(cluster: Cluster, real_ns: str) -> None:
    ns, name = real_ns, "roll"
    url = cluster.gateway_url
    assert url is not None
    password = unique("first-password")
    cluster.apply(_secret("roll-broker", "app-user", password), ns)
    host = _real_stack(cluster, ns, name, {"rabbitmq": {"image": cluster.local_image("rabbitmq"),
                                                         "storage": {"ephemeral": True},
                                                         "credentialsSecret": "roll-broker"}})
    _post_ok(url, host, unique("warm-up"))

    # The credentials reach ping and pong as files.
    assert _credential_files_match(cluster, ns, "app-user", password), "the credential files differ"

    # A spec change rolls ping while the load runs: no answer other than 2xx.
    (before,) = _pods(cluster, ns, "ping")
    load = Load(url, host, unique("roll")).start()
    try:
        load.wait_acked(20)
        cluster.kubectl("-n", ns, "patch", "pingpongstack", name, "--type=merge", "-p",
                        json.dumps({"spec": {"ping": {"env": [{"name": "E2E_ROLL", "value": "1"}]}}}))
        cluster.kubectl("-n", ns, "rollout", "status", f"deployment/{name}-ping", "--timeout=300s",
                        timeout=330)
        eventually("the old ping pod gone", lambda: not cluster.exists("pod", before["metadata"]["name"], ns),
                   timeout=120)
        (after,) = _ready_pods(cluster, ns, "ping")
        assert _env(after).get("E2E_ROLL") == "1", "the rolled ping pod lacks the new variable"
        load.wait_acked(20)
    finally:
        load.halt()
    assert load.failures == [], f"{len(load.failures)} of {len(load.failures) + len(load.acked)} " \
                                f"POST /ping were not 2xx during the roll: {load.failures[:5]}"
    acked = set(load.acked)
    eventually(f"all {len(acked)} acknowledged messages in GET /pong",
               lambda: acked <= stored_messages(url, host), timeout=120, interval=2)

    # Rotation: a new password in the user's Secret rolls the broker, ping and pong onto it.
    uids = {p["metadata"]["uid"] for c in ("broker", "ping", "pong") for p in _pods(cluster, ns, c)}
    rotated = unique("second-password")
    cluster.apply(_secret("roll-broker", "app-user", rotated), ns)
    cluster.kubectl("-n", ns, "annotate", "pingpongstack", name, f"reconcile={time.time_ns()}", "--overwrite")
    for component in ("broker", "ping", "pong"):
        eventually(f"every {component} pod replaced and Ready after the rotation",
                   lambda c=component: (pods := _ready_pods(cluster, ns, c)) and len(pods) == len(_pods(cluster, ns, c))
                   and all(p["metadata"]["uid"] not in uids for p in pods), timeout=600, interval=2)
    assert _credential_files_match(cluster, ns, "app-user", rotated), "the rotated credential files differ"
    stored = base64.b64decode(cluster.get("secret", "roll-broker", ns)["data"]["password"]).decode()
    assert stored == rotated, "the operator wrote the user's Secret"
    # ping publishes with the new password, and pong consumes with it.
    msg = unique("after-rotation")
    _post_ok(url, host, msg, timeout=300)
    eventually("the message sent after the rotation in GET /pong",
               lambda: msg in stored_messages(url, host), timeout=120, interval=2)

