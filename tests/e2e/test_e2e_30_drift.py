"""Drift and shrink with real server-side apply: a hand edit of a child is undone, a deleted child is
re-created, a field removed from the spec disappears from the child (or the child is deleted), and
objects that only look like ours are never touched."""

from __future__ import annotations

import json

from e2e_helpers import Cluster, eventually, stack_doc

EPHEMERAL = {"rabbitmq": {"storage": {"ephemeral": True}}}


def _ready(cluster: Cluster, ns: str, name: str, spec: dict) -> None:
    cluster.apply(stack_doc(name, spec), ns)
    cluster.wait_ready(ns, name)


def _container(deploy: dict) -> dict:
    return deploy["spec"]["template"]["spec"]["containers"][0]


def test_hand_edit_is_restored_and_deleted_child_recreated(cluster: Cluster, ns: str) -> None:
    name = "drift"
    _ready(cluster, ns, name, EPHEMERAL)
    deploy = f"{name}-ping"
    cluster.kubectl("scale", "-n", ns, f"deployment/{deploy}", "--replicas=4")
    eventually("the ping Deployment back at 1 replica",
               lambda: cluster.get("deployment", deploy, ns)["spec"]["replicas"] == 1)
    cluster.kubectl("set", "env", "-n", ns, f"deployment/{deploy}", "RABBITMQ_QUEUE=hijacked")

    def queue_restored() -> bool:
        env = {e["name"]: e.get("value") for e in _container(cluster.get("deployment", deploy, ns))["env"]}
        return env.get("RABBITMQ_QUEUE") == "pingpong"

    eventually("RABBITMQ_QUEUE restored on ping", queue_restored)
    uid = cluster.get("service", f"{name}-pong", ns)["metadata"]["uid"]
    cluster.kubectl("delete", "service", "-n", ns, f"{name}-pong")
    eventually("the pong Service re-created",
               lambda: cluster.exists("service", f"{name}-pong", ns)
               and cluster.get("service", f"{name}-pong", ns)["metadata"]["uid"] != uid)
    cluster.wait_ready(ns, name)


def test_fields_removed_from_the_spec_disappear(cluster: Cluster, ns: str) -> None:
    name = "shrink"
    resources = {"requests": {"cpu": "123m", "memory": "77Mi"}, "limits": {"memory": "99Mi"}}
    spec = {**EPHEMERAL, "ping": {"replicas": 2, "resources": resources,
                                  "env": [{"name": "EXTRA_SETTING", "value": "on"}]},
            "ingress": {"enabled": True}}
    _ready(cluster, ns, name, spec)
    ping = _container(cluster.get("deployment", f"{name}-ping", ns))
    assert ping["resources"]["requests"]["cpu"] == "123m"
    assert "EXTRA_SETTING" in {e["name"] for e in ping["env"]}
    assert cluster.exists("poddisruptionbudget", f"{name}-ping", ns)

    cluster.apply(stack_doc(name, {**EPHEMERAL, "ingress": {"enabled": False}}), ns)

    def shrunk() -> bool:
        c = _container(cluster.get("deployment", f"{name}-ping", ns))
        return (c.get("resources", {}).get("requests", {}).get("cpu") != "123m"
                and "EXTRA_SETTING" not in {e["name"] for e in c.get("env", [])})

    eventually("resources and env removed from ping", shrunk)
    eventually("the Ingress deleted", lambda: not cluster.exists("ingress", name, ns))
    eventually("ping's PodDisruptionBudget deleted (1 replica)",
               lambda: not cluster.exists("poddisruptionbudget", f"{name}-ping", ns))
    cluster.wait_ready(ns, name)


def test_lookalike_objects_are_never_touched(cluster: Cluster, ns: str) -> None:
    name = "lookalike"
    labels = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "ping",
              "app.kubernetes.io/part-of": "pingpong",
              "app.kubernetes.io/managed-by": "pingpong-operator"}
    # Same labels as our children, no owner reference: made by a user or another tool.
    for kind, extra in (("Service", {"spec": {"ports": [{"port": 9}]}}),
                        ("ConfigMap", {"data": {"k": "v"}})):
        cluster.apply({"apiVersion": "v1", "kind": kind,
                       "metadata": {"name": f"{name}-extra-{kind.lower()}", "labels": labels}, **extra}, ns)
    cluster.apply({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": f"{name}-other", "labels": labels},
                   "spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}, ns)
    _ready(cluster, ns, name, {**EPHEMERAL, "ingress": {"enabled": False}})
    cluster.kubectl("annotate", "pps", "-n", ns, name, "touch=1")  # one more reconcile
    cluster.wait_ready(ns, name)
    for kind, obj in (("service", f"{name}-extra-service"), ("configmap", f"{name}-extra-configmap"),
                      ("ingress", f"{name}-other")):
        got = cluster.get(kind, obj, ns, managed_fields=True)
        assert not got["metadata"].get("ownerReferences"), json.dumps(got["metadata"])
        managers = {m["manager"] for m in got["metadata"]["managedFields"]}
        assert managers, "the user's own apply is listed"
        assert not any(m.startswith("pingpong-operator") for m in managers), managers
    assert cluster.get("service", f"{name}-extra-service", ns, )["spec"]["ports"][0]["port"] == 9

