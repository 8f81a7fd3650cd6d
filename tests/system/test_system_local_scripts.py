"""`make local` / `make local-down` for real (`scripts/local.sh up|down|status`) on free ports with
their own state directory and queue: the stack answers through the gateway, a second `up` starts no
duplicates, `down` stops exactly what was started, including a broker node that `up` had to start
itself; on a machine without nginx or rabbitmq-server, `up` installs them (as root, through
apt-get) or prints the one command that does."""

from __future__ import annotations

import os
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


JAEGER_BUILT = subprocess.run([str(ROOT / "scripts" / "observability" / "build.sh"), "--cached", "jaeger"],
                              capture_output=True, check=False).returncode == 0


class LocalRun:
    def __init__(self, base: Path, bins: dict[str, Path], broker: Broker, extra: dict[str, str]) -> None:
        self.dir = base / "local"
        self.queue = f"pp-test-local-{uuid.uuid4().hex[:10]}"
        self.gateway_port = free_port()
        self.jaeger_ui_port = free_port()
        self.env = base_env()
        self.env.update(broker.env(self.queue))
        self.env.update({
            "PINGPONG_LOCAL_DIR": str(self.dir),
            "PINGPONG_BIN_DIR": str(bins["ping"].parent),
            "PING_PORT": str(free_port()),
            "PONG_PORT": str(free_port()),
            "GATEWAY_PORT": str(self.gateway_port),
            # Jaeger when it is built (make test builds it): else traces stay off.
            "LOCAL_TRACES": "on" if JAEGER_BUILT else "off",
            "JAEGER_OTLP_PORT": str(free_port()),
            "JAEGER_UI_PORT": str(self.jaeger_ui_port),
            "JAEGER_GRPC_PORT": str(free_port()),
        })
        self.env.update(extra)

    def run(self, command: str) -> str:
        result = subprocess.run([str(ROOT / "scripts" / "local.sh"), command], env=self.env,
                                capture_output=True, text=True, timeout=240, cwd=ROOT)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"local.sh {command} failed ({result.returncode}):\n{output}"
        return output

    def pids(self) -> dict[str, int]:
        files = {"ping": self.dir / "ping.pid", "pong": self.dir / "pong.pid",
                 "nginx": self.dir / "nginx" / "nginx.pid", "jaeger": self.dir / "jaeger" / "jaeger.pid"}
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
        subprocess.run([str(ROOT / "scripts" / "local.sh"), "down"], env=run.env,
                       capture_output=True, timeout=120, cwd=ROOT)
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"\n===== local-up state of {request.node.name} =====\n{run.logs()}")
    for path in open_dirs:
        shutil.rmtree(path, ignore_errors=True)


def test_local_up_twice_then_local_down_with_the_shared_broker(local_run, shared_broker: Broker,
                                                                loadgen: Loadgen) -> None:
    run = local_run(shared_broker)
    try:
        first = run.run("up")
        assert f"gateway  http://127.0.0.1:{run.gateway_port}" in first
        assert "already running, not managed by make local" in first
        pids = run.pids()
        expected = {"ping", "pong", "nginx"} | ({"jaeger"} if JAEGER_BUILT else set())
        assert set(pids) == expected and all(alive(p) for p in pids.values()), first
        if JAEGER_BUILT:
            assert f"traces   http://127.0.0.1:{run.jaeger_ui_port}" in first, first

        gateway = f"http://127.0.0.1:{run.gateway_port}"
        response = requests.post(f"{gateway}/ping", json={"msg": "local"}, timeout=30)
        assert response.status_code == 200, response.text
        sent = response.json()["id"]
        wait_until(lambda: sent in {m["id"] for m in requests.get(f"{gateway}/pong", timeout=10).json()},
                   30, "the ping in GET /pong")

        status = run.run("status")
        assert f"ping     runs (pid {pids['ping']})" in status, status
        assert f"gateway  runs (pid {pids['nginx']})" in status, status

        second = run.run("up")
        for name in ("ping", "pong", "nginx gateway") + (("Jaeger",) if JAEGER_BUILT else ()):
            assert f"{name} already runs" in second, second
        assert run.pids() == pids, "a second local-up started new processes"

        down = run.run("down")
        assert "RabbitMQ" not in down, "local-down touched a broker it did not start"
        wait_until(lambda: not any(alive(p) for p in pids.values()), 30, "every process to exit")
        assert run.pids() == {}, "pid files left behind"
        assert not listening("127.0.0.1", run.gateway_port)
        assert listening(shared_broker.host, shared_broker.port), "the shared broker must keep running"
        assert "nothing was running" in run.run("down")
        assert "ping     not running" in run.run("status")
    finally:
        loadgen.delete(run.queue, f"{run.queue}.dead")


def test_local_up_starts_and_local_down_stops_its_own_broker(local_run) -> None:
    if subprocess.run(["sh", "-c", "command -v rabbitmq-server"], capture_output=True).returncode != 0:
        missing("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)")
    port = free_port()
    node = f"pp-local-{uuid.uuid4().hex[:8]}@localhost"
    run = local_run(Broker(port=port), {"LOCAL_RABBITMQ_NODE": node,
                                        "LOCAL_RABBITMQ_DIST_PORT": str(free_port())}, open_dir=True)
    output = run.run("up")
    assert f"starting a private RabbitMQ node {node}" in output, output
    assert (run.dir / "rabbitmq" / "started-by-local-up").read_text().strip() == node
    gateway = f"http://127.0.0.1:{run.gateway_port}"
    response = requests.post(f"{gateway}/ping", json={"msg": "own broker"}, timeout=30)
    assert response.status_code == 200, response.text

    again = run.run("up")
    assert f"started by make local (node {node})" in again, again

    down = run.run("down")
    assert f"stopped RabbitMQ node {node}" in down, down
    deadline = time.monotonic() + 60
    while listening("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not listening("127.0.0.1", port), "the broker local-up started still listens"
    assert not (run.dir / "rabbitmq" / "started-by-local-up").exists()


def _without(paths: list[str], command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs `command` in a private mount namespace where each of `paths` is hidden (a non-executable
    /dev/null bound over it), as on a machine where those packages are not installed."""
    hide = " && ".join(f"mount --bind /dev/null {p}" for p in paths if Path(p).exists())
    script = f'{hide or "true"} && exec "$@"'
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *command], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture
def fake_apt(tmp_path: Path) -> Path:
    """A directory with an `apt-get` that records its arguments and fails `install` (so nothing is
    really installed), first on PATH."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        missing("hiding installed packages needs root and unshare (util-linux)")
    bindir = tmp_path / "fake-bin"
    bindir.mkdir()
    (bindir / "apt-get").write_text(
        '#!/bin/sh\nprintf \'%s\\n\' "$*" >>"$(dirname "$0")/apt-get.log"\n'
        '[ "$1" = update ] && exit 0\necho "E: fake apt-get cannot install" >&2\nexit 100\n')
    (bindir / "apt-get").chmod(0o755)
    return bindir


HIDDEN = ["/usr/sbin/nginx", "/usr/sbin/rabbitmq-server", "/usr/sbin/rabbitmqctl",
          "/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmqctl"]


def _fresh_machine_env(tmp_path: Path, fake_apt: Path, **extra: str) -> dict[str, str]:
    env = base_env()
    env.update({
        "PATH": f"{fake_apt}:{env.get('PATH', '/usr/bin:/bin')}",
        "PINGPONG_LOCAL_DIR": str(tmp_path / "local"),
        # Never used: up stops at the missing packages, before it runs any binary.
        "PINGPONG_BIN_DIR": str(tmp_path),
        # Nothing listens here: up needs a broker of its own, so rabbitmq-server too.
        "RABBITMQ_PORT": str(free_port()),
        "PING_PORT": str(free_port()), "PONG_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
    })
    env.update(extra)
    return env


def test_local_up_installs_what_is_missing(tmp_path: Path, fake_apt: Path) -> None:
    env = _fresh_machine_env(tmp_path, fake_apt)
    result = _without(HIDDEN, [str(ROOT / "scripts" / "local.sh"), "up"], env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # Says exactly what it installs, then runs exactly that.
    assert ("installing the missing Debian packages nginx rabbitmq-server: "
            "apt-get install -y nginx rabbitmq-server") in output, output
    log = (fake_apt / "apt-get.log").read_text().splitlines()
    assert log == ["update -qq", "install -y -qq --no-install-recommends nginx rabbitmq-server"], log
    # The fake install failed: the one command to run instead.
    assert "install them yourself:  apt-get install -y nginx rabbitmq-server" in output, output
    assert not (tmp_path / "local" / "ping.pid").exists(), "started services without a gateway"


def test_local_up_prints_the_command_when_it_may_not_install(tmp_path: Path, fake_apt: Path) -> None:
    env = _fresh_machine_env(tmp_path, fake_apt, PINGPONG_INSTALL="0")
    result = _without(HIDDEN, [str(ROOT / "scripts" / "local.sh"), "up"], env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Install them with:  apt-get install -y nginx rabbitmq-server" in output, output
    assert not (fake_apt / "apt-get.log").exists(), "ran apt-get although PINGPONG_INSTALL=0"

    # A user without root and without sudo gets the sudo command.
    # (Not under pytest's 0700 tmp_path, which user nobody cannot enter.)
    nobody = Path(tempfile.mkdtemp(prefix="pp-local-nobody-"))
    try:
        nobody.chmod(0o777)
        env = _fresh_machine_env(nobody, fake_apt)
        env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no fake apt-get: it must not matter
        result = _without(HIDDEN, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   str(ROOT / "scripts" / "local.sh"), "up"], env)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        if shutil.which("sudo") is None:
            assert "Install them with:  sudo apt-get install -y nginx rabbitmq-server" in output, output
        else:  # sudo present: up asks it (non-interactively) and fails with the same command
            assert "sudo apt-get install -y nginx rabbitmq-server" in output, output
    finally:
        shutil.rmtree(nobody, ignore_errors=True)
