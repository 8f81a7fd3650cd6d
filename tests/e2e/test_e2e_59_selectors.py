"""Unique selectors and the migration of stacks an earlier release created (issue 21, scenario 2),
on a real API server, starting from the objects that release rendered.

Before: every selector was `app.kubernetes.io/instance` + `component`, so another release named
like the stack (here a pod `other-release-ping` labelled alike) landed behind the stack's
Services. Now the operator selects with `pingpong.dev/stack` + `pingpong.dev/role`; a stack whose
workloads carry the earlier selector (immutable) migrates: StatefulSets are deleted with their
pods and claims orphaned and created again, adopting the same pods and the same
PersistentVolumeClaims; Deployments are replaced adopting their ReplicaSet; Services switch last.
Gated like an upgrade: a `Manual` stack keeps everything until it is annotated
`pingpong.dev/migrate-selectors=true`, an `Automatic` one migrates on its own.

The earlier release's objects are tests/e2e/fixtures/previous_release_objects.yaml (rendered by
that release's binary; see its header). The test creates the stack with this operator (for its
Secrets), pauses it, replaces its workloads, Services, PDBs and NetworkPolicies by the fixture's
(owner reference to the stack, the operator's field manager, the pod-template digests of the
Secrets the cluster holds, the images the suite's operator is configured with: the node's local
images where the cluster has a real node) and deletes its claims, so the earlier StatefulSets
create their own.
The first two tests run on kwok's simulated pods: the data kept is shown there by PVC identity
(same uid, same name, adopted by the new StatefulSet). The third runs the earlier release's
objects in real pods on the local cluster's node and shows the data itself kept: rows in the
provisioned PostgreSQL and a backlog in the broker's queue survive the restarts the migration
makes, and no message ping acknowledged before or during it is lost."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from e2e_helpers import Cluster, eventually, load_docs, stack_doc, unique
from real_pods import (GATEWAY, Load, exec_in, local_volumes, pod_uid, pods, post_ok, stored_message_list,
                       stored_messages)

NAME = "legacy"
FIXTURE = Path(__file__).parent / "fixtures" / "previous_release_objects.yaml"
SPEC: dict[str, Any] = {
    "ping": {"replicas": 2},
    "pong": {"replicas": 2,
             "store": {"type": "postgres", "postgres": {"provisioned": {"storage": {"size": "1Gi"}}}}},
    "rabbitmq": {"storage": {"size": "1Gi"}},
}
MIGRATE = "pingpong.dev/migrate-selectors"
ROLES = {"rabbitmq": "broker", "postgres": "database", "ping": "ping", "pong": "pong"}
STATEFULSETS = [f"{NAME}-rabbitmq", f"{NAME}-postgres"]
DEPLOYMENTS = [f"{NAME}-ping", f"{NAME}-pong"]
CLAIMS = [f"data-{NAME}-rabbitmq-0", f"data-{NAME}-postgres-0"]
LOOKALIKE = "other-release-ping"


def _legacy(role: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": NAME, "app.kubernetes.io/component": role}


def _unique(role: str) -> dict[str, str]:
    return {"pingpong.dev/stack": NAME, "pingpong.dev/role": role}


def _role(name: str) -> str:
    return ROLES[name.removeprefix(f"{NAME}-")]


def _ready_endpoints(cluster: Cluster, ns: str, service: str) -> list[str]:
    slices = cluster.get("endpointslices", namespace=ns,
                         selector=f"kubernetes.io/service-name={service}")["items"]
    return sorted(e.get("targetRef", {}).get("name", "") for s in slices for e in s.get("endpoints") or []
                  if (e.get("conditions") or {}).get("ready"))


def _as_previous_release(cluster: Cluster, ns: str, spec: dict[str, Any], storage_class: str | None = None,
                         lookalike: bool = True, timeout: int = 180) -> None:
    """The stack as the earlier release left it: its workloads, Services, PDBs and
    NetworkPolicies are the fixture's, its claims those its StatefulSets created (in
    `storage_class` when given). `lookalike`: another release's pod labelled alike, which the
    real node could not run (its image is nowhere)."""
    cluster.apply(stack_doc(NAME, spec), ns)
    cluster.wait_ready(ns, NAME, timeout=timeout)
    cluster.apply(stack_doc(NAME, {**spec, "paused": True}), ns)
    cluster.wait_condition(ns, NAME, "Paused", "True")
    stack = cluster.stack(ns, NAME)
    owner = {"apiVersion": "pingpong.dev/v1alpha1", "kind": "PingPongStack", "name": NAME,
             "uid": stack["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    # The pod-template digests of the Secrets the cluster holds, as that release computed them,
    # and the images its operator was configured with (the suite's operator runs the node's
    # local images where the cluster has a real node; the fixture names the published ones).
    templates = {name: cluster.get(kind, name, ns)["spec"]["template"]
                 for kind, names in (("statefulset", STATEFULSETS), ("deployment", DEPLOYMENTS))
                 for name in names}
    annotations = {name: t["metadata"].get("annotations", {}) for name, t in templates.items()}
    images = {name: {c["name"]: c["image"] for key in ("initContainers", "containers")
                     for c in t["spec"].get(key) or []}
              for name, t in templates.items()}
    for kind, names in (("statefulset", STATEFULSETS), ("deployment", DEPLOYMENTS)):
        cluster.kubectl("delete", kind, "-n", ns, *names, "--cascade=foreground", "--wait=true",
                        "--timeout=120s", timeout=180)
    cluster.kubectl("delete", "pvc", "-n", ns, *CLAIMS, "--ignore-not-found", "--wait=true", "--timeout=120s",
                    timeout=180)
    docs = []
    for doc in load_docs(FIXTURE):
        # Rendered in the namespace `default`: the in-cluster host names follow the test's.
        doc = json.loads(json.dumps(doc).replace(".default.svc", f".{ns}.svc"))
        doc["metadata"]["ownerReferences"] = [owner]
        if doc["kind"] in ("StatefulSet", "Deployment"):
            name = doc["metadata"]["name"]
            doc["spec"]["template"]["metadata"]["annotations"] = annotations[name]
            for key in ("initContainers", "containers"):
                for container in doc["spec"]["template"]["spec"].get(key) or []:
                    container["image"] = images[name].get(container["name"], container["image"])
            if storage_class is not None:
                for claim in doc["spec"].get("volumeClaimTemplates") or []:
                    claim["spec"]["storageClassName"] = storage_class
        docs.append(doc)
    cluster.kubectl("apply", "--server-side", "--field-manager=pingpong-operator", "--force-conflicts",
                    "-n", ns, "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    for service in (f"{NAME}-rabbitmq", f"{NAME}-ping"):
        selector = cluster.get("service", service, ns)["spec"]["selector"]
        assert selector == _legacy(_role(service)), f"{service} selects as the earlier release: {selector}"

    def running() -> bool:
        sets = [cluster.get("statefulset", n, ns).get("status", {}) for n in STATEFULSETS]
        deps = [cluster.get("deployment", n, ns).get("status", {}) for n in DEPLOYMENTS]
        return (all(s.get("readyReplicas") == 1 for s in sets)
                and all(d.get("availableReplicas") == 2 for d in deps)
                and all(cluster.get("pvc", c, ns)["status"].get("phase") == "Bound" for c in CLAIMS))

    eventually("the earlier release's workloads run, their claims bound", running, timeout=timeout)
    if not lookalike:
        return
    # Another release named like the stack: a pod with the same instance and component labels.
    cluster.apply({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": LOOKALIKE, "labels": {**_legacy("ping"),
                                                               "app.kubernetes.io/name": "ping"}},
                   "spec": {"containers": [{"name": "app", "image": "registry.invalid/other:1"}]}}, ns)
    # The defect this fixes: the other release's pod is behind the stack's ping Service.
    eventually("the look-alike pod behind the earlier release's ping Service",
               lambda: LOOKALIKE in _ready_endpoints(cluster, ns, f"{NAME}-ping"), timeout=90)


class _Sampler:
    """Samples the ready endpoints of `services` (ping's and pong's) until stopped."""

    def __init__(self, cluster: Cluster, ns: str, services: list[str] = DEPLOYMENTS) -> None:
        self.cluster, self.ns, self.services = cluster, ns, services
        self.samples: list[dict[str, list[str]]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set() and len(self.samples) < 2000:
            self.samples.append({s: _ready_endpoints(self.cluster, self.ns, s) for s in self.services})
            self.stopped.wait(0.3)

    def stop(self) -> list[dict[str, list[str]]]:
        self.stopped.set()
        self.thread.join(timeout=60)
        return self.samples


def _migrated(cluster: Cluster, ns: str) -> bool:
    for name in STATEFULSETS:
        if cluster.get("statefulset", name, ns)["spec"]["selector"]["matchLabels"] != _unique(_role(name)):
            return False
    for name in DEPLOYMENTS:
        if cluster.get("deployment", name, ns)["spec"]["selector"]["matchLabels"] != _unique(_role(name)):
            return False
    services = [f"{NAME}-rabbitmq", f"{NAME}-rabbitmq-nodes", f"{NAME}-postgres", *DEPLOYMENTS]
    return all(cluster.get("service", s, ns)["spec"].get("selector")
               == _unique(_role(s.removesuffix("-nodes"))) for s in services)


def _check_migrated(cluster: Cluster, ns: str, before: dict[str, Any], samples: list[dict[str, list[str]]],
                    lookalike: bool = True, timeout: int = 300) -> None:
    # ping and pong kept serving: in every sample their Service had a ready endpoint.
    assert samples, "no endpoint sample was taken"
    empty = [(i, s) for i, sample in enumerate(samples) for s, eps in sample.items() if not eps]
    assert not empty, f"a Service selected no ready pod during the migration: {empty[:5]}"
    # Same claims (so the same volumes and data), adopted by new StatefulSets owning the same-named pods.
    for claim, uid in before["claims"].items():
        assert cluster.get("pvc", claim, ns)["metadata"]["uid"] == uid, f"{claim} was re-created"
    for name in STATEFULSETS:
        sts = cluster.get("statefulset", name, ns)
        assert sts["metadata"]["uid"] != before["statefulsets"][name], f"{name} was not re-created"
        assert sts["spec"]["selector"]["matchLabels"] == _unique(_role(name))
        assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"] == _unique(_role(name))

        def owned(sts: dict[str, Any] = sts, name: str = name) -> bool:
            pod = cluster.get("pod", f"{name}-0", ns)
            refs = pod["metadata"].get("ownerReferences") or []
            return any(r.get("controller") and r["uid"] == sts["metadata"]["uid"] for r in refs)

        eventually(f"{name}-0 owned by the new StatefulSet", owned, timeout=120)
    for name in DEPLOYMENTS:
        dep = cluster.get("deployment", name, ns)
        assert dep["spec"]["selector"]["matchLabels"] == _unique(_role(name))
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels.items() >= {**_unique(_role(name)), **_legacy(_role(name))}.items(), labels
    for kind in ("poddisruptionbudget", "networkpolicy"):
        for item in cluster.get(kind, namespace=ns)["items"]:
            selector = item["spec"]["selector" if kind == "poddisruptionbudget" else "podSelector"]
            assert set(selector["matchLabels"]) == {"pingpong.dev/stack", "pingpong.dev/role"}, (kind, item)
    # The other release's pod is no longer behind the stack's Service; the stack's own pods are.
    eventually("the look-alike pod out of ping's Service" if lookalike else "ping's pods behind its Service",
               lambda: (eps := _ready_endpoints(cluster, ns, f"{NAME}-ping")) and LOOKALIKE not in eps
               and len(eps) == 2, timeout=90)
    cluster.wait_ready(ns, NAME, timeout=timeout)
    cluster.wait_condition(ns, NAME, "UpgradeAvailable", "False", "ImagesCurrent", timeout=120)
    eventually("a SelectorsMigrated Event on the stack",
               lambda: any(e.get("reason") == "SelectorsMigrated"
                           and e.get("involvedObject", {}).get("name") == NAME
                           for e in cluster.get("events", namespace=ns)["items"]))


def _snapshot(cluster: Cluster, ns: str) -> dict[str, Any]:
    pods = cluster.get("pods", namespace=ns, selector=f"app.kubernetes.io/instance={NAME}")["items"]
    return {
        "claims": {c: cluster.get("pvc", c, ns)["metadata"]["uid"] for c in CLAIMS},
        "statefulsets": {n: cluster.get("statefulset", n, ns)["metadata"]["uid"] for n in STATEFULSETS},
        "pods": {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods
                 if p["metadata"]["name"] != LOOKALIKE},
        "replicasets": {d: {"name": r["metadata"]["name"], "uid": r["metadata"]["uid"]}
                        for d in DEPLOYMENTS
                        for r in cluster.get("replicasets", namespace=ns,
                                             selector=f"app.kubernetes.io/instance={NAME},"
                                                      f"app.kubernetes.io/component={_role(d)}")["items"]
                        if r["metadata"]["name"].startswith(f"{d}-") and (r["spec"].get("replicas") or 0) > 0},
        "templates": {n: cluster.get(k, n, ns)["spec"]["template"]
                      for k, names in (("statefulset", STATEFULSETS), ("deployment", DEPLOYMENTS))
                      for n in names},
    }


def test_a_manual_stack_keeps_its_selectors_until_it_opts_in(local: Cluster, ns: str) -> None:
    cluster = local
    _as_previous_release(cluster, ns, SPEC)
    before = _snapshot(cluster, ns)
    cluster.apply(stack_doc(NAME, SPEC), ns)  # resumed, upgradePolicy Manual (the default)

    cond = cluster.wait_condition(ns, NAME, "UpgradeAvailable", "True", "SelectorMigration", timeout=120)
    assert MIGRATE in cond["message"] and f"StatefulSet {NAME}-rabbitmq" in cond["message"], cond
    cluster.wait_ready(ns, NAME)
    # Nothing of the earlier release changed: same workloads, pod templates and pods.
    after = _snapshot(cluster, ns)
    assert after["statefulsets"] == before["statefulsets"]
    assert after["templates"] == before["templates"], "a Manual stack's pod templates changed"
    assert after["pods"] == before["pods"], "a Manual stack's pods restarted"
    assert cluster.get("service", f"{NAME}-ping", ns)["spec"]["selector"] == _legacy("ping")

    sampler = _Sampler(cluster, ns)
    try:
        cluster.kubectl("annotate", "pps", NAME, "-n", ns, f"{MIGRATE}=true")
        eventually("every selector migrated", lambda: _migrated(cluster, ns), timeout=240, interval=1)
    finally:
        samples = sampler.stop()
    _check_migrated(cluster, ns, before, samples)


def test_an_automatic_stack_migrates_through_the_upgrade_gate(local: Cluster, ns: str) -> None:
    cluster = local
    spec = {**SPEC, "upgradePolicy": "Automatic"}
    _as_previous_release(cluster, ns, spec)
    before = _snapshot(cluster, ns)
    sampler = _Sampler(cluster, ns)
    try:
        cluster.apply(stack_doc(NAME, spec), ns)  # resumed
        eventually("every selector migrated", lambda: _migrated(cluster, ns), timeout=240, interval=1)
    finally:
        samples = sampler.stop()
    _check_migrated(cluster, ns, before, samples)
    # ping's and pong's ReplicaSets were adopted, not replaced: at the end the earlier release's
    # ReplicaSet (the oldest whose template equals the Deployment's, apart from pod-template-hash)
    # is the one the new Deployment owns and runs. (If the Deployment controller had not seen it
    # released yet when the Deployment was created, it started a rolling update and takes it
    # back as soon as it does; the Services had ready pods throughout, checked above.)
    for name, old_set in before["replicasets"].items():
        def adopted(name: str = name, old_set: dict[str, str] = old_set) -> bool:
            dep = cluster.get("deployment", name, ns)
            sets = cluster.get("replicasets", namespace=ns, selector=f"pingpong.dev/role={_role(name)}")["items"]
            running = [r for r in sets if (r["spec"].get("replicas") or 0) > 0]
            return (len(running) == 1 and running[0]["metadata"]["name"] == old_set["name"]
                    and running[0]["metadata"]["uid"] == old_set["uid"]
                    and any(ref["uid"] == dep["metadata"]["uid"] and ref.get("controller")
                            for ref in running[0]["metadata"].get("ownerReferences") or []))

        eventually(f"{name}'s earlier ReplicaSet adopted and running", adopted, timeout=120)


def _queued(cluster: Cluster, ns: str, queue: str) -> int:
    """The messages the broker holds in `queue` (`rabbitmqctl list_queues` in its pod)."""
    broker = pods(cluster, ns, "broker")
    assert len(broker) == 1, [p["metadata"]["name"] for p in broker]
    out = exec_in(cluster, ns, broker[0]["metadata"]["name"], "rabbitmqctl", "-q", "list_queues",
                  "name", "messages", timeout=120)
    counts = {fields[0]: int(fields[1]) for line in out.splitlines()
              if len(fields := line.split()) == 2 and fields[1].isdigit()}
    assert queue in counts, f"no queue {queue!r} on the broker: {out!r}"
    return counts[queue]


def test_the_migration_keeps_the_brokers_and_databases_data_in_real_pods(cluster: Cluster, real_ns: str) -> None:
    """Real pods on the local cluster's node, the earlier release's objects running the node's
    images: messages stored in the database and a backlog waiting in the broker's queue (pong
    scaled to zero) before the migration, messages acknowledged by ping while it runs. The
    migration restarts the broker and the database on the same volumes; afterwards the queue
    still holds its backlog, and once pong runs again every message acknowledged before and
    during the migration is served by GET /pong."""
    ns = real_ns
    storage_class = f"e2e-local-{ns}"
    # The node has no provisioner. Two volumes for the claims the stack's first StatefulSets make
    # (deleted to let the earlier release's create their own), two for the earlier release's.
    volumes = local_volumes(cluster, ns, storage_class, 4, "data")
    try:
        _real_migration(cluster, ns, storage_class)
    finally:
        cluster.kubectl("delete", "pv", *volumes, "--wait=false", "--ignore-not-found", check=False)


def _real_migration(cluster: Cluster, ns: str, storage_class: str) -> None:
    host = f"{NAME}.{ns}.pingpong.test"
    storage = {"storageClassName": storage_class, "size": "1Gi"}
    spec: dict[str, Any] = {
        "upgradePolicy": "Automatic",
        "ping": {"replicas": 2},
        "pong": {"replicas": 2, "store": {"type": "postgres", "postgres": {"provisioned": {
            "image": cluster.local_image("postgres"), "storage": storage}}}},
        "rabbitmq": {"image": cluster.local_image("rabbitmq"), "storage": storage},
        "ingress": {"enabled": False},
        "gateway": {"parentRef": GATEWAY, "hostname": host},
    }
    _as_previous_release(cluster, ns, spec, storage_class=storage_class, lookalike=False, timeout=900)
    url = cluster.gateway_url
    assert url is not None
    queue = cluster.stack(ns, NAME)["spec"]["rabbitmq"]["queue"]

    # In the database: a message pong stored.
    stored = unique("stored")
    post_ok(url, host, stored)
    eventually("the first message stored", lambda: stored in stored_messages(url, host), timeout=120)
    # In the broker: a backlog. pong (the earlier release's Deployment; the stack is paused) is
    # scaled to zero, so what ping acknowledges (the broker confirmed it) waits in the queue.
    cluster.kubectl("scale", "deployment", f"{NAME}-pong", "-n", ns, "--replicas=0")
    # Gone, not only being deleted: a terminating pong still consumes until it stops.
    eventually("pong scaled to zero, its pods gone",
               lambda: not cluster.get("pods", namespace=ns, selector="app.kubernetes.io/component=pong")["items"],
               timeout=180)
    backlog = [unique("queued") for _ in range(5)]
    for message in backlog:
        post_ok(url, host, message)
    # The broker's queue statistics follow within its statistics interval (5 s).
    eventually("the backlog in the broker's queue", lambda: _queued(cluster, ns, queue) >= len(backlog),
               timeout=60, interval=2)
    before = _snapshot(cluster, ns)
    broker, database = pod_uid(cluster, ns, "broker"), pod_uid(cluster, ns, "database")
    assert broker and database

    # Resumed under `Automatic`: the migration runs now. pong stays at zero until the broker has
    # been checked, so nothing drains the backlog meanwhile; ping takes messages throughout.
    load = Load(url, host, unique("during")).start()
    sampler = _Sampler(cluster, ns, [f"{NAME}-ping"])
    try:
        cluster.apply(stack_doc(NAME, {**spec, "pong": {**spec["pong"], "replicas": 0}}), ns)
        eventually("every selector migrated", lambda: _migrated(cluster, ns), timeout=600, interval=1)
        eventually("the broker and the database restarted on their volumes",
                   lambda: (b := pod_uid(cluster, ns, "broker")) and b != broker
                   and (d := pod_uid(cluster, ns, "database")) and d != database, timeout=600, interval=2)
        _check_migrated(cluster, ns, before, sampler.stop(), lookalike=False, timeout=900)
        load.wait_acked(20, timeout=300)
    finally:
        sampler.stop()
        load.halt()
    during = list(load.acked)
    assert during, f"ping acknowledged nothing during the migration: {load.statuses} {load.failures[-3:]}"
    # The restarted broker kept its queue: the backlog and every message acknowledged meanwhile.
    eventually("the backlog and the messages taken during the migration in the restarted broker's queue",
               lambda: _queued(cluster, ns, queue) >= len(backlog) + len(during), timeout=60, interval=2)

    cluster.apply(stack_doc(NAME, spec), ns)  # pong back
    cluster.wait_ready(ns, NAME, timeout=600)
    after = unique("after")
    post_ok(url, host, after)
    expected = {stored, *backlog, *during, after}
    eventually("every acknowledged message served by GET /pong",
               lambda: not (expected - set(stored_message_list(url, host))), timeout=300, interval=3)
    served = stored_message_list(url, host)
    missing = expected - set(served)
    assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:5]}"
