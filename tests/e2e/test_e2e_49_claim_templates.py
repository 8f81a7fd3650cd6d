"""volumeClaimTemplates never block a StatefulSet apply (issue 21, scenario 3). Kubernetes refuses
any change of a StatefulSet's volumeClaimTemplates (422), their labels included, so a release that
labels its claims differently would fail every apply of every existing broker, image upgrades
included. The operator keeps the templates of an existing StatefulSet exactly as they were created.

Simulated on the real API server: the stack is paused, its broker StatefulSet is re-created with
claim templates labelled as another release would have labelled them (pods and claims orphaned and
adopted again, the operator's field manager owning the templates), then the stack is resumed with
a change to the broker's resources. The apply succeeds (no `Degraded`), the change reaches the
StatefulSet, and the templates are the ones it was created with."""

from __future__ import annotations

import copy
import json
from typing import Any

from e2e_helpers import Cluster, eventually, stack_doc

OLD_LABEL = ("app.kubernetes.io/version", "0.0.1-previous-release")


def _recreated(sts: dict[str, Any]) -> dict[str, Any]:
    """The StatefulSet as a release with other claim labels would have created it."""
    doc = copy.deepcopy(sts)
    doc.pop("status", None)
    meta = doc["metadata"]
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    for template in doc["spec"]["volumeClaimTemplates"]:
        template["metadata"].setdefault("labels", {})[OLD_LABEL[0]] = OLD_LABEL[1]
    return doc


def test_claim_templates_of_an_existing_statefulset_never_block_its_apply(cluster: Cluster, ns: str) -> None:
    name = "claims"
    sts_name = f"{name}-rabbitmq"
    spec: dict[str, Any] = {"rabbitmq": {"storage": {"size": "1Gi"}}}
    cluster.apply(stack_doc(name, spec), ns)
    cluster.wait_ready(ns, name)
    live = cluster.get("statefulset", sts_name, ns)
    assert live["spec"].get("volumeClaimTemplates"), "the broker has persistent claims"

    # Paused: the operator writes nothing while the StatefulSet is swapped.
    cluster.apply(stack_doc(name, {**spec, "paused": True}), ns)
    cluster.wait_condition(ns, name, "Paused", "True")
    cluster.kubectl("delete", "statefulset", sts_name, "-n", ns, "--cascade=orphan", "--wait=true")
    cluster.kubectl("apply", "--server-side", "--field-manager=pingpong-operator", "--force-conflicts",
                    "-n", ns, "-f", "-", input=json.dumps(_recreated(live)))
    old = cluster.get("statefulset", sts_name, ns)
    assert old["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"][OLD_LABEL[0]] == OLD_LABEL[1]

    # Resumed with a change to the broker's pods: applied, not refused.
    resources = {"requests": {"cpu": "300m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    cluster.apply(stack_doc(name, {"rabbitmq": {**spec["rabbitmq"], "resources": resources}}), ns)

    def applied() -> bool:
        sts = cluster.get("statefulset", sts_name, ns)
        containers = sts["spec"]["template"]["spec"]["containers"]
        rabbit = next(c for c in containers if c["name"] == "rabbitmq")
        return rabbit.get("resources", {}).get("requests", {}).get("cpu") == "300m"

    eventually("the resources change reached the StatefulSet", applied, timeout=90)
    degraded = cluster.wait_condition(ns, name, "Degraded", "False", "ReconcileSucceeded")
    assert "422" not in degraded["message"], degraded
    sts = cluster.get("statefulset", sts_name, ns)
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"][OLD_LABEL[0]] == OLD_LABEL[1], (
        "the claim templates were rewritten")
    cluster.wait_ready(ns, name)
