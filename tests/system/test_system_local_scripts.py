"""`make local` / `make local-down` for real (scripts/local-up.sh, scripts/local-down.sh) on free
ports with their own state directory and queue: the stack answers through the gateway, a second
`local-up` starts no duplicates, `local-down` stops exactly what was started, including a broker
node that local-up had to start itself."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests

from system_helpers import (ROOT, Broker, Loadgen, base_env, free_port, listening, missing,
                            wait_until)


class LocalRun:
    def __init__(self, base: Path, bins: dict[str, Path], broker: Broker, extra: dict[str, str]) -> None:
        self.dir = base / "local"
        self.queue = f"pp-test-local-{uuid.uuid4().hex[:10]}"
        self.gateway_port = free_port()
        self.env = base_env()
        self.env.update(broker.env(self.queue))
        self.env.update({
            "PINGPONG_LOCAL_DIR": str(self.dir),
            "PINGPONG_BIN_DIR": str(bins["ping"].parent),
            "PING_PORT": str(free_port()),
            "PONG_PORT": str(free_port()),
            "GATEWAY_PORT": str(self.gateway_port),
        })
        self.env.update(extra)

    def run(self, script: str) -> str:
        result = subprocess.run([str(ROOT / "scripts" / script)], env=self.env, capture_output=True,
                                text=True, timeout=240, cwd=ROOT)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{output}"
        return output

    def pids(self) -> dict[str, int]:
        files = {"ping": self.dir / "ping.pid", "pong": self.dir / "pong.pid",
                 "nginx": self.dir / "nginx" / "nginx.pid"}
        return {name: int(path.read_text()) for name, path in files.items() if path.exists()}

    def logs(self) -> str:
        parts = []
        for path in sorted(self.dir.rglob("*.log")) + sorted(self.dir.glob("*.out")):
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-30:])
            parts.append(f"--- {path} ---\n{tail}")
        return "\n".join(parts)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.fixture
def local_run(request: pytest.FixtureRequest, tmp_path: Path, bins: dict[str, Path]) -> Iterator[LocalRun]:
    runs: list[LocalRun] = []
    open_dirs: list[Path] = []

    def make(broker: Broker, extra: dict[str, str] | None = None, open_dir: bool = False) -> LocalRun:
        base = tmp_path
        if open_dir:
            # Not under pytest's 0700 tmp_path: Debian's rabbitmq-server wrapper runs the node as
            # user `rabbitmq`, which must be able to enter the state directory.
            base = Path(tempfile.mkdtemp(prefix="pp-local-"))
            base.chmod(0o755)
            open_dirs.append(base)
        run = LocalRun(base, bins, broker, extra or {})
        runs.append(run)
        return run

    yield make  # type: ignore[misc]
    for run in runs:
        subprocess.run([str(ROOT / "scripts" / "local-down.sh")], env=run.env, capture_output=True,
                       timeout=120, cwd=ROOT)
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"\n===== local-up state of {request.node.name} =====\n{run.logs()}")
    for path in open_dirs:
        shutil.rmtree(path, ignore_errors=True)


def test_local_up_twice_then_local_down_with_the_shared_broker(local_run, shared_broker: Broker,
                                                                loadgen: Loadgen) -> None:
    run = local_run(shared_broker)
    try:
        first = run.run("local-up.sh")
        assert f"gateway  http://127.0.0.1:{run.gateway_port}" in first
        assert "already running, not managed by make local" in first
        pids = run.pids()
        assert set(pids) == {"ping", "pong", "nginx"} and all(alive(p) for p in pids.values()), first

        gateway = f"http://127.0.0.1:{run.gateway_port}"
        response = requests.post(f"{gateway}/ping", json={"msg": "local"}, timeout=30)
        assert response.status_code == 200, response.text
        sent = response.json()["id"]
        wait_until(lambda: sent in {m["id"] for m in requests.get(f"{gateway}/pong", timeout=10).json()},
                   30, "the ping in GET /pong")

        second = run.run("local-up.sh")
        for name in ("ping", "pong", "nginx gateway"):
            assert f"{name} already runs" in second, second
        assert run.pids() == pids, "a second local-up started new processes"

        down = run.run("local-down.sh")
        assert "RabbitMQ" not in down, "local-down touched a broker it did not start"
        wait_until(lambda: not any(alive(p) for p in pids.values()), 30, "every process to exit")
        assert run.pids() == {}, "pid files left behind"
        assert not listening("127.0.0.1", run.gateway_port)
        assert listening(shared_broker.host, shared_broker.port), "the shared broker must keep running"
        assert "nothing was running" in run.run("local-down.sh")
    finally:
        loadgen.delete(run.queue, f"{run.queue}.dead")


def test_local_up_starts_and_local_down_stops_its_own_broker(local_run) -> None:
    if subprocess.run(["sh", "-c", "command -v rabbitmq-server"], capture_output=True).returncode != 0:
        missing("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)")
    port = free_port()
    node = f"pp-local-{uuid.uuid4().hex[:8]}@localhost"
    run = local_run(Broker(port=port), {"LOCAL_RABBITMQ_NODE": node,
                                        "LOCAL_RABBITMQ_DIST_PORT": str(free_port())}, open_dir=True)
    output = run.run("local-up.sh")
    assert f"starting a private RabbitMQ node {node}" in output, output
    assert (run.dir / "rabbitmq" / "started-by-local-up").read_text().strip() == node
    gateway = f"http://127.0.0.1:{run.gateway_port}"
    response = requests.post(f"{gateway}/ping", json={"msg": "own broker"}, timeout=30)
    assert response.status_code == 200, response.text

    again = run.run("local-up.sh")
    assert f"started by make local (node {node})" in again, again

    down = run.run("local-down.sh")
    assert f"stopped RabbitMQ node {node}" in down, down
    deadline = time.monotonic() + 60
    while listening("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not listening("127.0.0.1", port), "the broker local-up started still listens"
    assert not (run.dir / "rabbitmq" / "started-by-local-up").exists()
