"""Status tells the truth about pods and the route, on a real API server: a pod that cannot pull
its image, a broker pod that crash-loops, and an HTTPRoute its Gateway has not accepted (or
refused) each keep `Ready` False with a reason and a message naming the object; each recovers.

kwok simulates pods, so the test writes the pod's status as a kubelet would (phase Running, not
ready, the container waiting with the kubelet's reason); kwok's pod-ready stage only acts on
Pending pods and leaves it alone. The ReplicaSet/StatefulSet controller then counts the pod as
not ready, exactly as for a real pod, and the operator reads the pod. The HTTPRoute's status is
written as a Gateway controller would (none runs on the kwok nodes)."""

from __future__ import annotations

import json

from e2e_helpers import Cluster, eventually, set_route_status, stack_doc

EPHEMERAL = {"rabbitmq": {"storage": {"ephemeral": True}}}


def _pods(cluster: Cluster, ns: str, kind: str, name: str) -> list[dict]:
    workload = cluster.get(kind, name, ns)
    labels = workload["spec"]["selector"]["matchLabels"]
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return cluster.get("pods", namespace=ns, selector=selector)["items"]


def _kubelet_says(cluster: Cluster, ns: str, pod: dict, container: str, reason: str,
                  message: str, last_exit: int | None = None) -> None:
    """Writes `pod`'s status as a kubelet whose `container` waits with `reason` would."""
    status: dict = {"name": container, "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "", "ready": False, "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": message}}}
    if last_exit is not None:
        status["restartCount"] = 4
        status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error",
                                              "startedAt": "2026-01-01T00:00:00Z",
                                              "finishedAt": "2026-01-01T00:00:01Z"}}
    patch = {"status": {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        ],
        "containerStatuses": [status],
    }}
    cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status",
                    "--type=merge", "-p", json.dumps(patch))


def test_an_image_pull_failure_names_the_pod_and_recovers(cluster: Cluster, ns: str) -> None:
    name = "pull"
    cluster.apply(stack_doc(name, EPHEMERAL), ns)
    cluster.wait_ready(ns, name)
    pod = _pods(cluster, ns, "deployment", f"{name}-ping")[0]
    pod_name = pod["metadata"]["name"]
    _kubelet_says(cluster, ns, pod, "ping", "ImagePullBackOff",
                  'Back-off pulling image "ghcr.io/pingpong-operator/ping:does-not-exist"')
    ready = cluster.wait_condition(ns, name, "Ready", "False", "ImagePullFailed")
    assert ready["message"].startswith(
        f"pod {pod_name}: container ping is ImagePullBackOff: Back-off pulling image"), ready
    degraded = cluster.condition(ns, name, "Degraded")
    assert degraded and degraded["status"] == "True" and degraded["reason"] == "ImagePullFailed", degraded
    # Fixed (here: the pod replaced by one that starts): Ready again, Degraded cleared.
    cluster.kubectl("delete", "pod", pod_name, "-n", ns, "--wait=false")
    cluster.wait_ready(ns, name)
    cluster.wait_condition(ns, name, "Degraded", "False", "ReconcileSucceeded")


def test_a_crash_looping_broker_pod_is_named_with_its_last_exit(cluster: Cluster, ns: str) -> None:
    name = "crash"
    cluster.apply(stack_doc(name, EPHEMERAL), ns)
    cluster.wait_ready(ns, name)
    pod = _pods(cluster, ns, "statefulset", f"{name}-rabbitmq")[0]
    _kubelet_says(cluster, ns, pod, "rabbitmq", "CrashLoopBackOff",
                  "back-off 1m20s restarting failed container=rabbitmq", last_exit=1)
    ready = cluster.wait_condition(ns, name, "Ready", "False", "CrashLoopBackOff")
    message = ready["message"]
    assert message.startswith(f"pod {name}-rabbitmq-0: container rabbitmq is CrashLoopBackOff"), ready
    assert "(last exit code 1, Error, 4 restarts)" in message, ready
    assert "waiting for rabbitmq 0/1 ready" in message, ready
    cluster.kubectl("delete", "pod", f"{name}-rabbitmq-0", "-n", ns, "--wait=false")
    cluster.wait_ready(ns, name)


def _install_gateway_api(cluster: Cluster) -> None:
    if not cluster.local:
        return
    crd = cluster.state_dir / "crds" / "httproutes.yaml"
    assert crd.is_file(), f"{crd} is missing (scripts/cluster/build.sh)"
    cluster.kubectl("apply", "--server-side", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established",
                    "crd/httproutes.gateway.networking.k8s.io", "--timeout=60s")


def test_ready_waits_for_the_gateway_to_accept_the_route(cluster: Cluster, ns: str) -> None:
    _install_gateway_api(cluster)
    name = "routed"
    # A Gateway no controller serves: the local cluster's Traefik (real node) serves
    # gateway-system/public and would report on the route itself.
    parent = {"name": "unserved", "namespace": "gateway-system"}
    cluster.apply(stack_doc(name, {**EPHEMERAL, "gateway": {"parentRef": parent}}), ns)
    # Every workload ready, but no Gateway controller has reported on the route: not Ready.
    pending = cluster.wait_condition(ns, name, "Ready", "False", "RoutePending", timeout=120)
    assert f"HTTPRoute {name}: waiting for Gateway gateway-system/unserved" in pending["message"], pending
    # It stays so once every workload is ready: the route alone keeps the stack from Ready.
    def route_alone() -> bool:
        status = cluster.stack(ns, name).get("status") or {}
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        workloads = [status.get(k) or {} for k in ("ping", "pong", "rabbitmq")]
        return ready["reason"] == "RoutePending" and all(
            w.get("replicas") and w.get("readyReplicas") == w["replicas"] for w in workloads)

    eventually("every workload ready, the route still pending", route_alone)
    # The Gateway refuses it: Degraded, quoting the Gateway's reason.
    set_route_status(cluster, ns, name, parent,
                     accepted=("False", "NotAllowedByListeners",
                               "no listener allows routes from this namespace"))
    refused = cluster.wait_condition(ns, name, "Ready", "False", "RouteNotAccepted")
    assert refused["message"] == (
        f"HTTPRoute {name}: Gateway gateway-system/unserved did not accept it: Accepted=False "
        "NotAllowedByListeners: no listener allows routes from this namespace"), refused
    degraded = cluster.condition(ns, name, "Degraded")
    assert degraded and degraded["reason"] == "RouteNotAccepted", degraded
    # Accepted, backends resolved: Ready.
    set_route_status(cluster, ns, name, parent)
    ready = cluster.wait_ready(ns, name)
    assert {c["type"]: c["reason"] for c in ready["status"]["conditions"]}["Ready"] == "AllComponentsReady"
