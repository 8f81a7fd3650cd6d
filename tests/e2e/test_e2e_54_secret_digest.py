"""A regenerated Secret rolls exactly the workloads that read it (issue 21, scenario 9): the
Erlang cookie Secret and the provisioned PostgreSQL's credentials Secret are deleted, the
operator generates them again, and each workload's pod template follows a digest of the Secret
keys it reads (`pingpong.dev/secret-digest`), never a value. Without it the running pods keep
the old cookie or password until an unrelated restart, and then the broker cluster splits or pong
is locked out.

On the real node, the database itself takes the new password: its data directory outlives the
Secret and keeps the old role password, so the postgres container's postStart hook sets it from
the mounted file on every start; after an unrelated restart of pong, the data path works."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from e2e_helpers import Cluster, eventually, stack_doc, unique
from real_pods import local_volumes, pod_uid, post_ok, pods, ready_pods, real_stack, stored_messages

DIGEST = "pingpong.dev/secret-digest"
WORKLOADS = [("statefulset", "rabbitmq"), ("statefulset", "postgres"), ("deployment", "ping"),
             ("deployment", "pong"), ("deployment", "redis")]


def _templates(cluster: Cluster, ns: str, stack: str) -> dict[str, dict[str, str]]:
    """Every workload's pod-template annotations."""
    out = {}
    for kind, component in WORKLOADS:
        obj = cluster.get(kind, f"{stack}-{component}", ns)
        out[component] = obj["spec"]["template"]["metadata"].get("annotations", {})
    return out


def _poke(cluster: Cluster, ns: str, stack: str) -> None:
    """The PostgreSQL Secret has no owner (it outlives the stack): an annotation reconciles now."""
    cluster.kubectl("-n", ns, "annotate", "pingpongstack", stack, f"reconcile={time.time_ns()}",
                    "--overwrite")


def _regenerate(cluster: Cluster, ns: str, secret: str, stack: str) -> str:
    """Deletes `secret`, waits for the operator to create it again; returns its new uid."""
    old = cluster.get("secret", secret, ns)["metadata"]["uid"]
    cluster.kubectl("-n", ns, "delete", "secret", secret)
    _poke(cluster, ns, stack)

    def regenerated() -> str | None:
        if not cluster.exists("secret", secret, ns):
            return None
        uid = cluster.get("secret", secret, ns)["metadata"]["uid"]
        return uid if uid != old else None

    return eventually(f"{secret} generated again", regenerated)


def _changed(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> set[str]:
    return {c for c in after if after[c] != before[c]}


def test_a_regenerated_secret_rolls_exactly_its_readers(cluster: Cluster, ns: str) -> None:
    name = "digest"
    spec = {"rabbitmq": {"storage": {"ephemeral": True}},
            "pong": {"store": {"type": "postgres",
                               "postgres": {"provisioned": {"storage": {"ephemeral": True}}}},
                     "cache": {"provisioned": {}}}}
    cluster.apply(stack_doc(name, spec), ns)
    cluster.wait_ready(ns, name)
    first = _templates(cluster, ns, name)
    for component, annotations in first.items():
        # Every workload that mounts a Secret carries the digest; Redis reads none.
        assert (DIGEST in annotations) == (component != "redis"), (component, annotations)

    # The Erlang cookie: only the broker reads it.
    _regenerate(cluster, ns, f"{name}-rabbitmq-erlang-cookie", name)
    second = eventually("the broker's pod template to follow the new cookie",
                        lambda: (t := _templates(cluster, ns, name)) and _changed(first, t) and t)
    assert _changed(first, second) == {"rabbitmq"}, (first, second)
    assert second["rabbitmq"]["pingpong.dev/config-hash"] == first["rabbitmq"]["pingpong.dev/config-hash"]
    cluster.wait_ready(ns, name)

    # The PostgreSQL credentials: the database (which sets the password at start) and pong.
    _regenerate(cluster, ns, f"{name}-postgres-credentials", name)
    third = eventually("the database's and pong's pod templates to follow the new password",
                       lambda: (t := _templates(cluster, ns, name))
                       and _changed(second, t) == {"postgres", "pong"} and t)
    cluster.wait_ready(ns, name)
    time.sleep(3)  # a later reconcile must not roll anything else
    assert _templates(cluster, ns, name) == third

    # Digests only: no value of a Secret in any workload.
    values = set()
    for secret, key in ((f"{name}-rabbitmq-erlang-cookie", "cookie"),
                        (f"{name}-postgres-credentials", "password"),
                        (f"{name}-rabbitmq-credentials", "password")):
        values.add(base64.b64decode(cluster.get("secret", secret, ns)["data"][key]).decode())
    assert len(values) == 3 and all(len(v) >= 40 for v in values), "three generated values"
    for kind, component in WORKLOADS:
        text = json.dumps(cluster.get(kind, f"{name}-{component}", ns))
        assert not any(v in text for v in values), component


def test_the_database_takes_a_regenerated_password(cluster: Cluster, real_ns: str) -> None:
    """Real pods: a regenerated PostgreSQL Secret restarts the database, whose postStart hook sets
    the new password on the data directory that kept the old one; pong logs in with it, also
    after an unrelated restart."""
    ns, name = real_ns, "repass"
    storage_class = f"e2e-local-{ns}"
    # The node has no provisioner: one local volume keeps the data across the restart.
    volumes = local_volumes(cluster, ns, storage_class, 1, "postgres")
    try:
        _regenerated_password_scenario(cluster, ns, name, storage_class)
    finally:
        cluster.kubectl("delete", "pv", *volumes, "--wait=false", "--ignore-not-found", check=False)


def _regenerated_password_scenario(cluster: Cluster, ns: str, name: str, storage_class: str) -> None:
    spec: dict[str, Any] = {
        "rabbitmq": {"image": cluster.local_image("rabbitmq"), "storage": {"ephemeral": True}},
        "pong": {"store": {"type": "postgres", "postgres": {"provisioned": {
            "image": cluster.local_image("postgres"),
            "storage": {"storageClassName": storage_class, "size": "1Gi"}}}}},
    }
    host = real_stack(cluster, ns, name, spec)
    url = cluster.gateway_url
    assert url is not None
    before = unique("before")
    post_ok(url, host, before)
    eventually("the first message stored", lambda: before in stored_messages(url, host), timeout=120)
    database = pod_uid(cluster, ns, "database")
    assert database is not None

    _regenerate(cluster, ns, f"{name}-postgres-credentials", name)
    # The database restarts on the same volume (the claim is kept), with the new password.
    eventually("the database pod replaced",
               lambda: (uid := pod_uid(cluster, ns, "database")) is not None and uid != database,
               timeout=300)
    cluster.wait_ready(ns, name, timeout=600)
    # An unrelated restart of pong: every new connection must log in with the new password.
    for pod in pods(cluster, ns, "pong"):
        cluster.kubectl("-n", ns, "delete", "pod", pod["metadata"]["name"], "--wait=false")
    eventually("a restarted pong ready", lambda: ready_pods(cluster, ns, "pong"), timeout=300)
    cluster.wait_ready(ns, name, timeout=600)
    after = unique("after")
    post_ok(url, host, after)
    stored = eventually("both messages stored (the data survived, pong logs in)",
                        lambda: (s := stored_messages(url, host)) and after in s and s, timeout=180)
    assert before in stored
