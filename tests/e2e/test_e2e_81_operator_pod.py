"""The operator's own image runs in a real pod (the chart's Deployment on the local cluster's real
node) and reconciles a stack whose pods run there too.

Every other test runs the operator on the host. This one installs the chart as a release of its
own in the test's namespace (its Lease, ServiceAccount and Role there, `watchNamespace` the same)
with the operator image images/build.sh built for the node, with the host operator stopped so
that only the pod reconciles: the image starts (its binary, its user, the chart's read-only root
filesystem), reaches the API server through the in-cluster configuration, passes its readiness
probe (`/readyz`: leading, caches synced), holds its Lease, and brings a stack to Ready with a
message through the Gateway. The defect this found: the operator built together with ping and
pong (as images/build.sh builds it) panicked creating its first Kubernetes client."""

from __future__ import annotations

from e2e_helpers import CHART, Cluster, eventually, unique
from real_pods import REAL_NODE, post_ok, real_stack, stored_messages

RELEASE = "in-pod"
NAME = "podop"


def _pods(cluster: Cluster, ns: str) -> list[dict]:
    return cluster.get("pods", namespace=ns, selector=f"app.kubernetes.io/instance={RELEASE}")["items"]


def test_the_operator_image_reconciles_a_stack_from_a_real_pod(cluster: Cluster, real_ns: str) -> None:
    ns = real_ns
    repository, tag = cluster.local_image("operator").rsplit(":", 1)
    host_operator = cluster.host_operator("operator")
    host_operator.stop()  # releases its Lease; from here only the pod reconciles
    try:
        cluster.helm(
            "install", RELEASE, str(CHART), "-n", ns, "--skip-crds", "--wait", "--timeout", "300s",
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", f"watchNamespace={ns}",
            "--set", f"stackImages.ping={cluster.local_image('ping')}",
            "--set", f"stackImages.pong={cluster.local_image('pong')}",
            "--set", f"stackImages.rabbitmq={cluster.local_image('rabbitmq')}",
            "--set", "logging.format=text", timeout=420)
        pods = _pods(cluster, ns)
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        pod = pods[0]
        assert pod["spec"]["nodeName"] == REAL_NODE, pod["spec"].get("nodeName")
        assert pod["spec"]["containers"][0]["image"] == f"{repository}:{tag}"
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] and status["restartCount"] == 0, status
        # Ready means leading: it holds the Lease of its own namespace.
        lease = cluster.get("lease", "pingpong-operator-leader", ns)
        assert lease["spec"]["holderIdentity"] == pod["metadata"]["name"], lease["spec"]

        host = real_stack(cluster, ns, NAME, {"rabbitmq": {"storage": {"ephemeral": True}}})
        url = cluster.gateway_url
        assert url is not None
        message = unique("from-the-pod-operator")
        post_ok(url, host, message)
        eventually("the message stored", lambda: message in stored_messages(url, host), timeout=120)
        log = cluster.kubectl("-n", ns, "logs", pod["metadata"]["name"], "--tail=400").stdout
        assert "panicked" not in log, log[-2000:]
        assert NAME in log, f"the pod's log names no reconcile of {NAME}: {log[-2000:]}"
        pod = cluster.get("pod", pod["metadata"]["name"], ns)
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, pod["status"]
    finally:
        cluster.kubectl("-n", ns, "delete", "pps", NAME, "--ignore-not-found", "--wait=true",
                        "--timeout=120s", check=False, timeout=180)
        cluster.helm("uninstall", RELEASE, "-n", ns, "--wait", check=False)
        host_operator.start()
        eventually("the host operator leads again", lambda: host_operator.ready(), timeout=120)
