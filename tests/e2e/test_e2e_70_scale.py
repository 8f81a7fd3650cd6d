"""Scale: 30 stacks applied at once in 10 namespaces all reach Ready while 2,000 unrelated ConfigMaps
and Secrets exist, and the operator never lists or watches what it does not own (every LIST and
WATCH it sends for a child kind carries its managed-by label selector, so its caches cannot hold
the unrelated objects). Orphan deletion reads the controller's caches: no reconcile of these stacks
lists a child kind with the stack's own selector."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Iterator
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from e2e_helpers import Cluster, stack_doc, unique

NAMESPACES = int(os.environ.get("E2E_SCALE_NAMESPACES", "10"))
STACKS_PER_NAMESPACE = int(os.environ.get("E2E_SCALE_STACKS_PER_NAMESPACE", "3"))
UNRELATED = int(os.environ.get("E2E_SCALE_UNRELATED", "2000"))
CHILD_RESOURCES = {"secrets", "configmaps", "services", "deployments", "statefulsets", "ingresses",
                   "networkpolicies", "poddisruptionbudgets", "persistentvolumeclaims"}


@pytest.fixture
def namespaces(cluster: Cluster) -> Iterator[list[str]]:
    names = [unique(f"e2e-scale-{i}") for i in range(NAMESPACES)]
    for name in names:
        cluster.create_namespace(name)
    try:
        yield names
    finally:
        for name in names:
            cluster.delete_namespace(name)


def _unrelated_objects(count: int) -> str:
    docs = []
    for i in range(count // 2):
        labels = {"app.kubernetes.io/name": "someone-else", "app.kubernetes.io/instance": f"x{i}"}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"unrelated-{i}", "labels": labels}, "data": {"k": "v" * 64}})
        docs.append({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": f"unrelated-{i}", "labels": labels},
                     "stringData": {"k": "v" * 64}})
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs})


def test_many_stacks_with_unrelated_objects(cluster: Cluster, namespaces: list[str]) -> None:
    noise_ns = namespaces[0]
    cluster.kubectl("create", "-n", noise_ns, "-f", "-", input=_unrelated_objects(UNRELATED), timeout=600)
    stacks = [(ns, f"s{j}") for ns in namespaces for j in range(STACKS_PER_NAMESPACE)]
    docs = [{**stack_doc(name, {"rabbitmq": {"storage": {"ephemeral": True}}}),
             "metadata": {"name": name, "namespace": ns}} for ns, name in stacks]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda s: cluster.wait_ready(s[0], s[1], timeout=600), stacks))
    if not cluster.local:
        return
    user = "system:serviceaccount:pingpong-system:pingpong-operator"
    unfiltered, filtered, per_stack = set(), set(), []
    for event in cluster.audit_events(user):
        ref = event.get("objectRef", {})
        if event.get("verb") not in ("list", "watch") or ref.get("resource") not in CHILD_RESOURCES:
            continue
        query = parse_qs(urlparse(event["requestURI"]).query)
        selector = ",".join(query.get("labelSelector", []))
        if ref.get("namespace") in namespaces and "app.kubernetes.io/instance=" in selector:
            per_stack.append(f"{event['verb']} {event['requestURI'][:160]}")
        if "app.kubernetes.io/managed-by=pingpong-operator" not in selector:
            unfiltered.add(f"{event['verb']} {event['requestURI'][:120]}")
        else:
            filtered.add(ref["resource"])
    assert filtered, "no LIST or WATCH of a child kind in the audit log: is the audit log on?"
    assert not unfiltered, f"the operator listed or watched objects it does not own: {sorted(unfiltered)}"
    # The operator was running (its caches listed) before these stacks existed, so orphan deletion
    # found their children in the caches and never fell back to a list per stack and kind.
    assert not per_stack, f"orphan deletion listed instead of reading the caches: {per_stack[:5]}"
