"""KEDA as pong's autoscaling engine (`spec.pong.autoscaling.engine: keda`) on the local control
plane, with KEDA's own CRDs (ScaledObject, TriggerAuthentication from github.com/kedacore/keda/v2
v2.21.0, cached under ~/.cache/pingpong-operator/keda) and no KEDA operator: what is checked is
what the operator writes and which field manager owns pong's `replicas`.

- Asked for where KEDA's CRDs are not served: Ready=False/Degraded with reason `KedaMissing`, a
  Warning Event, and nothing applied (the operator does not scale pong in KEDA's place).
- Once the CRDs are served: a ScaledObject (RabbitMQ scaler over the management API, QueueLength)
  and a TriggerAuthentication that references the stack's credentials Secret; the pong Deployment
  keeps its 2 pods (handed to a field manager of their own) and the operator's field manager no
  longer owns `replicas`, so a scale by KEDA's HPA (here `kubectl scale`, the same scale
  subresource) is not reverted by later reconciles; the operator's own loop leaves the stack alone.
- Back to `engine: operator`: the KEDA objects are deleted and the operator owns `replicas`
  again, starting from the pods that run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from e2e_helpers import Cluster, eventually, missing, stack_doc

STACK = "keda"
KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
KEDA_KINDS = ("scaledobjects", "triggerauthentications")
OPERATOR_MANAGER = "pingpong-operator"
HANDOVER_MANAGER = "pingpong-operator/keda-handover"


def _keda_crds() -> list[Path]:
    """KEDA's ScaledObject and TriggerAuthentication CRDs from its Go module, cached by version."""
    cache = Path.home() / ".cache" / "pingpong-operator" / "keda" / KEDA_VERSION
    paths = [cache / f"keda.sh_{kind}.yaml" for kind in KEDA_KINDS]
    if all(p.is_file() for p in paths):
        return paths
    if shutil.which("go") is None:
        missing("Go is needed to fetch KEDA's CRDs from the Go module proxy")
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "on"}
        result = subprocess.run(["go", "mod", "download", "-json", f"{KEDA_MODULE}@{KEDA_VERSION}"],
                                cwd=work, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            missing(f"go mod download {KEDA_MODULE}@{KEDA_VERSION} failed: {result.stderr[-2000:]}")
        module = Path(json.loads(result.stdout)["Dir"])
    cache.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copyfile(module / "config" / "crd" / "bases" / path.name, path)
    return paths


def _served(cluster: Cluster) -> bool:
    return all(cluster.exists("crd", f"{kind}.keda.sh") for kind in KEDA_KINDS)


def _pong(cluster: Cluster, ns: str) -> dict[str, Any]:
    return cluster.get("deployment", f"{STACK}-pong", ns, managed_fields=True)


def _replicas(cluster: Cluster, ns: str) -> int:
    return int(_pong(cluster, ns)["spec"].get("replicas", 1))


def _replica_owners(cluster: Cluster, ns: str) -> set[str]:
    owners = set()
    for entry in _pong(cluster, ns)["metadata"]["managedFields"]:
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {}):
            owners.add(entry["manager"])
    return owners


def _warning_events(cluster: Cluster, ns: str, reason: str) -> list[dict[str, Any]]:
    items = cluster.get("events.events.k8s.io", namespace=ns)["items"]
    return [e for e in items if e.get("reason") == reason and e.get("type") == "Warning"
            and e.get("regarding", {}).get("name") == STACK]


def _nudge(cluster: Cluster, ns: str, value: str) -> None:
    """A change of the stack's metadata, so it is reconciled now rather than at its requeue."""
    cluster.kubectl("annotate", "--overwrite", "-n", ns, f"pingpongstack/{STACK}", f"e2e/nudge={value}")


def test_keda_engine_renders_a_scaled_object_and_yields_replicas(local: Cluster, ns: str) -> None:
    crds = _keda_crds()
    spec: dict[str, Any] = {
        "rabbitmq": {"storage": {"ephemeral": True}, "queue": "keda-e2e"},
        "pong": {"replicas": 2,
                 "store": {"type": "postgres", "postgres": {"provisioned": {"storage": {"ephemeral": True}}}}},
    }
    local.apply(stack_doc(STACK, spec), ns)
    local.wait_ready(ns, STACK)
    assert _replicas(local, ns) == 2
    assert OPERATOR_MANAGER in _replica_owners(local, ns)

    autoscaling = {"engine": "keda", "minReplicas": 1, "maxReplicas": 4, "targetBacklogPerReplica": 10,
                   "scaleDownDelaySeconds": 30}
    spec["pong"]["autoscaling"] = autoscaling
    if not _served(local):
        # KEDA asked for, not served: reported, nothing applied, no substitute.
        local.apply(stack_doc(STACK, spec), ns)
        degraded = local.wait_condition(ns, STACK, "Degraded", "True", reason="KedaMissing")
        assert "scaledobjects.keda.sh" in degraded["message"], degraded
        assert local.condition(ns, STACK, "Ready")["status"] == "False"
        eventually("a KedaMissing Warning Event", lambda: _warning_events(local, ns, "KedaMissing"))
        assert _replicas(local, ns) == 2 and OPERATOR_MANAGER in _replica_owners(local, ns)
        assert "autoscaling" not in (local.stack(ns, STACK).get("status") or {}), \
            "the operator's own loop is not put in KEDA's place"
        for crd in crds:
            local.kubectl("apply", "--server-side", "-f", str(crd))
        for kind in KEDA_KINDS:
            local.kubectl("wait", "--for=condition=Established", f"crd/{kind}.keda.sh", "--timeout=60s")
        _nudge(local, ns, "crds-installed")
    else:
        local.apply(stack_doc(STACK, spec), ns)

    # Served: KEDA's objects, the Deployment's replicas handed over, not reset.
    eventually("the ScaledObject exists", lambda: local.exists("scaledobjects.keda.sh", f"{STACK}-pong", ns),
               timeout=120)
    local.wait_ready(ns, STACK)
    scaled = local.get("scaledobjects.keda.sh", f"{STACK}-pong", ns)
    assert scaled["metadata"]["ownerReferences"][0]["name"] == STACK
    so = scaled["spec"]
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{STACK}-pong"}
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["cooldownPeriod"]) == (1, 4, 30), so
    trigger = so["triggers"][0]
    assert trigger["type"] == "rabbitmq", trigger
    assert trigger["metadata"] == {"protocol": "http", "mode": "QueueLength", "value": "10",
                                   "queueName": "keda-e2e", "vhostName": "/",
                                   "host": f"http://{STACK}-rabbitmq.{ns}.svc:15672"}, trigger
    auth = local.get("triggerauthentications.keda.sh", trigger["authenticationRef"]["name"], ns)
    secret = local.stack(ns, STACK)["status"]["credentialsSecret"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "username", "name": secret, "key": "username"},
        {"parameter": "password", "name": secret, "key": "password"}], auth["spec"]
    assert _replicas(local, ns) == 2, "handing replicas to KEDA removed no pod"
    owners = _replica_owners(local, ns)
    assert OPERATOR_MANAGER not in owners and HANDOVER_MANAGER in owners, owners

    # KEDA's HPA scales through the scale subresource: later reconciles leave its choice alone.
    local.kubectl("scale", "-n", ns, f"deployment/{STACK}-pong", "--replicas=3")
    autoscaling["maxReplicas"] = 5
    local.apply(stack_doc(STACK, spec), ns)
    eventually("a later reconcile applied the ScaledObject",
               lambda: local.get("scaledobjects.keda.sh", f"{STACK}-pong", ns)["spec"]["maxReplicaCount"] == 5)
    eventually("status saw the 3 pods",
               lambda: (local.stack(ns, STACK).get("status") or {}).get("pong", {}).get("replicas") == 3)
    assert _replicas(local, ns) == 3, "the operator reverted KEDA's scale"
    assert OPERATOR_MANAGER not in _replica_owners(local, ns)
    assert "autoscaling" not in (local.stack(ns, STACK).get("status") or {}), "the operator's loop stays off"

    # Back to the operator's engine: KEDA's objects go, the operator owns replicas from what runs.
    autoscaling["engine"] = "operator"
    local.apply(stack_doc(STACK, spec), ns)
    for kind in KEDA_KINDS:
        eventually(f"the {kind} object is deleted",
                   lambda kind=kind: not local.exists(f"{kind}.keda.sh", f"{STACK}-pong", ns), timeout=90)
    eventually("the operator owns replicas again", lambda: OPERATOR_MANAGER in _replica_owners(local, ns))
    assert _replicas(local, ns) == 3, "going back to the operator removed no pod"
