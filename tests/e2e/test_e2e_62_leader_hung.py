"""Leader election with a hung API server, on the local control plane: never two leaders.

Operator A reaches the API server through a TCP proxy in this test (127.0.0.1, TLS passes through
untouched); operator B reaches it directly. Once A leads and has reconciled a stack, the proxy
stops forwarding in both directions without closing anything: A's connections stay open and its
requests are never answered, which is what a hung API server or a black-holed network path looks
like to a client (no error, no reset, nothing). A must step down (log it, stop its controller,
`pingpong_operator_leader` 0) before B acquires the Lease; the instants come from both logs (same
host clock) and from the Lease's `acquireTime` written by B. Then B reconciles a change. Last, the
proxy forwards again: A, whose API answers once more, follows B and reconciles nothing.

Bounded: every wait has a deadline; the takeover needs the lease duration (15 s) plus B's poll.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

from e2e_helpers import Cluster, HostOperator, eventually, metric_sum, stack_doc

LEASE = "pingpong-operator-leader"
NAMESPACE = "pingpong-system"
# Lease 15 s + B's poll (2 s) after A's last renewal, with slack for a loaded 2-core machine.
TAKEOVER_TIMEOUT_SECONDS = 90
STEP_DOWN = "could not renew the leader Lease in time; stepping down"
STOPPED = "lost leadership; controller stopped"
ACQUIRED = "acquired leader Lease"


class HangingProxy:
    """Forwards TCP connections from 127.0.0.1:<port> to `target` until `hang()`; from then on
    nothing is forwarded in either direction and nothing is closed (new connections are accepted
    and left silent) until `resume()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.hung = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        # Bytes the API server sent towards the operator (answers), counted after resume().
        self.answered = 0
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _keep(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            self._keep(client)
            if self.hung.is_set():
                continue  # accepted, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._keep(upstream)
            for src, dst, answers in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=(src, dst, answers), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        while not self.closed.is_set():
            if self.hung.is_set():
                time.sleep(0.05)  # read nothing, send nothing, close nothing
                continue
            try:
                readable, _, _ = select.select([src], [], [], 0.1)
                if not readable:
                    continue
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if self.hung.is_set():
                    continue  # read just as the proxy hung: held back for good
                dst.sendall(data)
                if answers:
                    with self.lock:
                        self.answered += len(data)
            except OSError:
                return

    def hang(self) -> None:
        self.hung.set()

    def resume(self) -> None:
        with self.lock:
            self.answered = 0
        self.hung.clear()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.close()
                except OSError:
                    pass
        for thread in self.threads:
            thread.join(timeout=2)


def _when(text: str, message: str) -> list[datetime]:
    """Timestamps (the first field of the text log format) of the lines containing `message`."""
    times = []
    for line in text.splitlines():
        if message in line:
            stamp = line.split(" ", 1)[0]
            times.append(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
    return times


def _new_log(op: HostOperator, offset: int) -> str:
    try:
        with op.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _proxied_kubeconfig(cluster: Cluster, proxy_port: int) -> Path:
    """The operator's own kubeconfig (the ServiceAccount token), its server moved to the proxy."""
    source = (cluster.state_dir / "operator.kubeconfig").read_text()
    text, count = re.subn(r"server: https://127\.0\.0\.1:\d+", f"server: https://127.0.0.1:{proxy_port}",
                          source)
    assert count == 1, "operator.kubeconfig has no local server line"
    path = cluster.state_dir / "operator-hung.kubeconfig"
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def test_a_leader_behind_a_hung_api_steps_down_before_another_leads(local: Cluster, ns: str) -> None:
    main = local.host_operator("operator")
    base = main.port
    server = re.search(r"server: https://127\.0\.0\.1:(\d+)",
                       (local.state_dir / "operator.kubeconfig").read_text())
    assert server, "no API server address in operator.kubeconfig"
    proxy = HangingProxy(("127.0.0.1", int(server.group(1))))
    kubeconfig = _proxied_kubeconfig(local, proxy.port)
    a = HostOperator(local, "operator-hung-a", base + 2, kubeconfig=kubeconfig)
    b = HostOperator(local, "operator-hung-b", base + 3)
    offsets = {op.name: _size(op.log_path) for op in (a, b)}
    main.stop()  # releases the Lease
    try:
        a.start()
        eventually("A (through the proxy) holds the Lease", lambda: local.lease_holder() == a.identity,
                   timeout=60, interval=0.25)
        eventually("A's /readyz is 200", a.ready)
        b.start()
        eventually("B's /readyz is 200 (standby)", b.ready)
        local.apply(stack_doc("hung", {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
        local.wait_ready(ns, "hung")
        assert metric_sum(a.metrics(), "pingpong_operator_reconcile_duration_seconds_count") > 0
        assert metric_sum(b.metrics(), "pingpong_operator_reconcile_duration_seconds_count") == 0
        assert local.lease_holder() == a.identity

        proxy.hang()
        hung = time.monotonic()
        eventually("B holds the Lease", lambda: local.lease_holder() == b.identity,
                   timeout=TAKEOVER_TIMEOUT_SECONDS, interval=0.25)
        print(f"B acquired the Lease {time.monotonic() - hung:.1f} s after the API hung for A")
        lease = local.get("lease", LEASE, NAMESPACE)["spec"]
        acquire_time = datetime.fromisoformat(lease["acquireTime"].replace("Z", "+00:00"))

        a_log = _new_log(a, offsets[a.name])
        b_log = _new_log(b, offsets[b.name])
        a_acquired, a_down = _when(a_log, ACQUIRED), _when(a_log, STEP_DOWN)
        b_acquired = _when(b_log, ACQUIRED)
        assert a_acquired, f"A never logged '{ACQUIRED}':\n{a_log[-3000:]}"
        assert a_down, f"A never logged '{STEP_DOWN}':\n{a_log[-3000:]}"
        assert len(b_acquired) == 1, f"B acquired {len(b_acquired)} times:\n{b_log[-3000:]}"
        print(f"A acquired {a_acquired[-1]}, stepped down {a_down[0]}; "
              f"B acquired {b_acquired[0]} (Lease acquireTime {acquire_time})")
        # Never two leaders: A's leadership ended before B's began, by both clocks' records.
        assert a_acquired[-1] < a_down[0] < b_acquired[0], (a_acquired, a_down, b_acquired)
        assert a_down[0] < acquire_time, (a_down, acquire_time)
        # A's controller stopped (it does not wait for the hung API) before B led.
        a_stopped = _when(a_log, STOPPED)
        assert a_stopped and a_stopped[0] < b_acquired[0], (a_stopped, b_acquired, a_log[-3000:])
        assert metric_sum(a.metrics(), "pingpong_operator_leader") == 0
        assert metric_sum(b.metrics(), "pingpong_operator_leader") == 1

        # B now reconciles: a change to a child is corrected.
        local.kubectl("scale", "-n", ns, "deployment/hung-ping", "--replicas=3")
        eventually("B restored ping's replicas",
                   lambda: local.get("deployment", "hung-ping", ns)["spec"]["replicas"] == 1,
                   timeout=60)
        assert metric_sum(b.metrics(), "pingpong_operator_reconcile_duration_seconds_count") > 0
        assert local.lease_holder() == b.identity, "A took the Lease back"

        # The API answers A again: A follows B; it neither takes the Lease nor reconciles.
        reconciled_by_a = metric_sum(a.metrics(), "pingpong_operator_reconcile_duration_seconds_count")
        proxy.resume()
        eventually("A's API calls are answered again", lambda: proxy.answered > 0, timeout=30)
        deadline = time.monotonic() + 8  # four of A's election rounds
        while time.monotonic() < deadline:
            assert local.lease_holder() == b.identity, "A took the Lease back after the API recovered"
            assert metric_sum(a.metrics(), "pingpong_operator_leader") == 0
            time.sleep(0.5)
        assert metric_sum(a.metrics(), "pingpong_operator_reconcile_duration_seconds_count") \
            == reconciled_by_a, "A reconciled while B leads"
    finally:
        b.stop()
        a.kill()  # a SIGTERM would try to release the Lease through the hung proxy
        proxy.close()
        kubeconfig.unlink(missing_ok=True)
        main.start()
        eventually("the first operator leads again", lambda: local.lease_holder() == main.identity,
                   timeout=60)
