"""Leader election between two operator processes on the host: exactly one reconciles; killing the
leader hands the Lease to the other within the documented time (lease 15 s + one renew period)."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from e2e_helpers import Cluster, eventually, metric_sum, stack_doc

# README: a standby takes over at most the lease duration (15 s) plus one of its own polls (2 s)
# after the leader stopped renewing; 20 s keeps that bound with room for a slow poll.
TAKEOVER_BOUND_SECONDS = 20 + 10  # + slack for a loaded 2-core CI machine


def _reconciles(op) -> float:  # type: ignore[no-untyped-def]
    return metric_sum(op.metrics(), "pingpong_operator_reconcile_duration_seconds_count")


def test_one_leader_and_takeover_after_a_crash(local: Cluster, ns: str) -> None:
    first = local.host_operator("operator")
    base = first.port
    second = local.host_operator("operator-standby", base + 1)
    try:
        second.start()
        # Both ready: the leader once its cache synced, the standby because it can take over.
        eventually("the leader's /readyz is 200", first.ready)
        eventually("the standby's /readyz is 200", second.ready)
        assert local.lease_holder() == first.identity
        before = _reconciles(second)
        local.apply(stack_doc("leader", {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
        local.wait_ready(ns, "leader")
        assert _reconciles(second) == before == 0, "the standby reconciled while not leading"

        first.kill()
        killed = time.monotonic()
        eventually("the standby holds the Lease", lambda: local.lease_holder() == second.identity,
                   timeout=TAKEOVER_BOUND_SECONDS + 30, interval=0.25)
        took = time.monotonic() - killed
        print(f"takeover after SIGKILL of the leader: {took:.1f} s")
        assert took <= TAKEOVER_BOUND_SECONDS, f"takeover took {took:.1f} s"
        local.kubectl("annotate", "pps", "-n", ns, "leader", "after-takeover=1")
        local.kubectl("scale", "-n", ns, "deployment/leader-ping", "--replicas=3")
        eventually("the new leader restored ping's replicas",
                   lambda: local.get("deployment", "leader-ping", ns)["spec"]["replicas"] == 1)
        # The reconcile that restored ping is counted when it ends (after its status write).
        eventually("the new leader counted its reconciles", lambda: _reconciles(second) > 0)
    finally:
        second.stop()
        first.start()
        eventually("the first operator leads again", lambda: local.lease_holder() == first.identity,
                   timeout=60)



class GatedWebhook:
    """A validating admission webhook on 127.0.0.1 (TLS with a throw-away self-signed certificate)
    that allows every request but holds each one until `open()`: a child apply that reaches it is
    a reconcile in flight for as long as the test wants."""

    def __init__(self, workdir: Path) -> None:
        cert, key = workdir / "webhook.crt", workdir / "webhook.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        self.ca_bundle = base64.b64encode(cert.read_bytes()).decode()
        self.arrived = threading.Event()
        self.gate = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.arrived.set()
                hook.gate.wait(timeout=20)
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": {"uid": review["request"]["uid"], "allowed": True}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def config(self, name: str, namespace: str) -> dict[str, Any]:
        return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": name},
                "webhooks": [{"name": "gate.e2e.pingpong.dev", "sideEffects": "None",
                              "admissionReviewVersions": ["v1"], "timeoutSeconds": 25,
                              "failurePolicy": "Ignore",
                              "clientConfig": {"url": f"https://127.0.0.1:{self.port}/",
                                               "caBundle": self.ca_bundle},
                              "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                              "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                         "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]}]}

    def open(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()


def test_sigterm_keeps_the_lease_until_running_reconciles_finish(local: Cluster, ns: str,
                                                                  tmp_path: Path) -> None:
    """On SIGTERM the leader lets its controller finish the reconciles it is running while it
    still renews the Lease, and releases the Lease only then (issue 21, scenario 9): released at
    once, another replica could lead while this one still writes, and the elector's "not leading"
    dropped those reconciles half-way. A webhook holds the stack's ConfigMap apply, so a reconcile
    is in flight when the signal arrives."""
    op = local.host_operator("operator")
    eventually("the operator leads", lambda: local.lease_holder() == op.identity, timeout=60)
    hook = GatedWebhook(tmp_path)
    webhook_name = f"e2e-gate-{ns}"[:63]
    pid = None
    try:
        local.apply(hook.config(webhook_name, ns))
        local.apply(stack_doc("term", {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
        eventually("a reconcile is held at the webhook", hook.arrived.is_set, timeout=60)
        offset = op.log_path.stat().st_size
        pid = op.pid()
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        time.sleep(3)
        # The reconcile is still held: the process waits for it and keeps leading.
        assert op.pid() == pid, f"the operator exited with a reconcile in flight:\n{op.log(40)}"
        assert local.lease_holder() == op.identity, (
            f"the Lease was released while a reconcile was running:\n{op.log(40)}")
        hook.open()
        eventually("the operator exits once the reconcile finished", lambda: op.pid() is None, timeout=30)
        with op.log_path.open(errors="replace") as log:
            log.seek(offset)
            after = log.read().splitlines()
        shown = "\n".join(after[-40:])

        def first(text: str) -> int | None:
            return next((i for i, line in enumerate(after) if text in line), None)

        assert first("dropped the controller") is None, f"reconciles were dropped on SIGTERM:\n{shown}"
        stopped = first("controller stopped; its running reconciles finished")
        released = first("released the leader Lease")
        assert stopped is not None and released is not None and stopped < released, shown
        assert local.lease_holder() == "", "released, not left to expire"
    finally:
        hook.close()
        local.kubectl("delete", "validatingwebhookconfiguration", webhook_name, "--ignore-not-found")
        op.stop()
        op.start()
        eventually("the operator leads again", lambda: local.lease_holder() == op.identity, timeout=60)
