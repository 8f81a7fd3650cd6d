"""A change of RabbitMQ series asks the running broker first (issue 21, "a RabbitMQ version change
checks feature flags and deprecated features first"), in real pods on the local cluster's node.

Before it applies a broker image of another series (here 3.10 → 3.11), the reconcile reads the
running broker's `GET /api/feature-flags` and `GET /api/deprecated-features/used` from a ready
broker pod, at its IP, with the stack's credentials. Only an answer with every stable flag
enabled and no deprecated feature in use lets the image through (a Normal Event
`RabbitMQUpgradeChecked` says what the broker reported); anything else keeps the running image
with `Degraded`/`RabbitMQUpgradeRefused` saying why (a disabled flag, a feature in use, or no
answer: tests/e2e/test_e2e_58_upgrade.py on kwok's pods, which no broker answers for; the
operator's reconcile tests for the flags).

The node has one RabbitMQ build, Debian's 3.10; "3.11" is the same image tagged again in the
node's containerd (`localhost/rabbitmq:3.11.0`), which is what a change of series looks like to
the operator (it reads the series from the tag). A new 3.10 node enables every stable flag at
first boot and has no deprecated-features API (404, read as none in use), so the step is
cleared; the broker restarts on the new tag and the data path works again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from e2e_helpers import Cluster, eventually, unique
from real_pods import post_ok, pods, real_stack, stored_messages

NAME = "series"


def _tag_on_node(cluster: Cluster, source: str, target: str) -> None:
    """Tags `source` as `target` in the real node's containerd (the kubelet's namespace)."""
    base = int(cluster.env.get("CLUSTER_PORT_BASE", os.environ.get("CLUSTER_PORT_BASE", "16440")))
    ctr = Path(cluster.state_dir) / "bin" / "ctr"
    assert ctr.exists(), f"{ctr} (scripts/cluster/up.sh links the node's ctr there)"
    subprocess.run([str(ctr), "--address", f"/run/pingpong-{base}/containerd.sock", "-n", "k8s.io",
                    "images", "tag", "--force", source, target],
                   check=True, capture_output=True, text=True, timeout=60)


def _next_series(image: str) -> str:
    """`localhost/rabbitmq:3.10.8` → `localhost/rabbitmq:3.11.0`."""
    repository, version = image.rsplit(":", 1)
    major, minor = version.split(".")[:2]
    return f"{repository}:{major}.{int(minor) + 1}.0"


def _broker_image(cluster: Cluster, ns: str) -> str:
    return cluster.get("statefulset", f"{NAME}-rabbitmq", ns)["spec"]["template"]["spec"]["containers"][0]["image"]


def _checked_events(cluster: Cluster, ns: str) -> list[str]:
    return [e.get("note") or e.get("message") or "" for e in cluster.get("events", namespace=ns)["items"]
            if e.get("reason") == "RabbitMQUpgradeChecked"
            and (e.get("involvedObject") or e.get("regarding") or {}).get("name") == NAME]


def test_a_change_of_series_is_applied_once_the_running_broker_clears_it(cluster: Cluster,
                                                                         real_ns: str) -> None:
    ns = real_ns
    running = cluster.local_image("rabbitmq")
    wanted = _next_series(running)
    host = real_stack(cluster, ns, NAME, {"rabbitmq": {"image": running, "storage": {"ephemeral": True}}})
    url = cluster.gateway_url
    assert url is not None
    eventually("the running broker image recorded",
               lambda: ((cluster.stack(ns, NAME).get("status") or {}).get("images") or {})
               .get("rabbitmq", {}).get("image") == running)
    broker_uid = pods(cluster, ns, "broker")[0]["metadata"]["uid"]
    _tag_on_node(cluster, running, wanted)

    cluster.kubectl("patch", "pps", NAME, "-n", ns, "--type=merge",
                    "-p", '{"spec":{"rabbitmq":{"image":"%s"}}}' % wanted)
    # The broker itself was asked: the Event names the pod and how many flags it listed.
    notes = eventually("a RabbitMQUpgradeChecked Event", lambda: _checked_events(cluster, ns), timeout=120)
    note = notes[0]
    assert f"pod {NAME}-rabbitmq-0" in note and "every stable one enabled" in note, note
    flags = int(note.split(" lists ", 1)[1].split(" ", 1)[0])
    assert flags > 0, note
    eventually("the StatefulSet runs the next series", lambda: _broker_image(cluster, ns) == wanted, timeout=60)
    eventually("the broker pod replaced",
               lambda: (found := pods(cluster, ns, "broker")) and found[0]["metadata"]["uid"] != broker_uid,
               timeout=300)
    cluster.wait_ready(ns, NAME, timeout=600)
    status = cluster.stack(ns, NAME)["status"]
    assert status["images"]["rabbitmq"]["image"] == wanted, status["images"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False", degraded
    message = unique("after-series")
    post_ok(url, host, message)
    eventually("a message through the broker on its new image",
               lambda: message in stored_messages(url, host), timeout=120)
