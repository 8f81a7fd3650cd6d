"""A Jaeger v2 all-in-one for the trace tests (system and e2e): the binary that
scripts/observability/build.sh builds from Go modules and caches outside git, run on free loopback
ports with in-memory storage, and the few query-API reads the tests make. Missing: fails when
CI=true, skips otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from system_helpers import ROOT, Proc, base_env, free_port, http_status, listening, missing, wait_until

JAEGER_CONFIG = ROOT / "scripts" / "observability" / "jaeger.yaml"


def jaeger_binary() -> Path:
    """$JAEGER, else the cached build of scripts/observability/build.sh (make test builds it)."""
    if os.environ.get("JAEGER"):
        return Path(os.environ["JAEGER"])
    found = subprocess.run([str(ROOT / "scripts" / "observability" / "build.sh"), "--cached", "jaeger"],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        missing("Jaeger is not built: run scripts/observability/build.sh jaeger (make test does)")
    return Path(found.stdout.strip().splitlines()[-1])


class Jaeger:
    """A Jaeger v2 all-in-one on free loopback ports, in-memory storage."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.otlp_port = free_port()
        self.query_port = free_port()
        env = base_env() | {
            "JAEGER_OTLP_HTTP_PORT": str(self.otlp_port),
            "JAEGER_QUERY_PORT": str(self.query_port),
            "JAEGER_QUERY_GRPC_PORT": str(free_port()),
            "JAEGER_LISTEN_HOST": "127.0.0.1",
        }
        self.proc = Proc("jaeger", [str(binary), "--config", str(JAEGER_CONFIG)], env,
                         workdir / "jaeger.log").start()

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def wait_up(self) -> None:
        def up() -> bool:
            assert self.proc.alive(), f"jaeger exited:\n{self.proc.log_tail()}"
            return (http_status(f"http://127.0.0.1:{self.query_port}/api/services") == 200
                    and listening("127.0.0.1", self.otlp_port))
        wait_until(up, 60, "Jaeger to serve its query API and OTLP receiver")

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.query_port}/api/traces/{trace_id}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except OSError:
            return None
        traces = body.get("data") or []
        return traces[0] if len(traces) == 1 else None

    def traces(self, service: str, operation: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest traces holding a span of `service` named `operation`."""
        query = urllib.parse.urlencode({"service": service, "operation": operation, "limit": limit,
                                        "lookback": "1h"})
        url = f"http://127.0.0.1:{self.query_port}/api/traces?{query}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response).get("data") or []
        except OSError:
            return []

    def operations(self, service: str) -> list[str]:
        url = f"http://127.0.0.1:{self.query_port}/api/services/{service}/operations"
        with urllib.request.urlopen(url, timeout=5) as response:
            ops = json.load(response).get("data") or []
        return sorted(op if isinstance(op, str) else op["name"] for op in ops)


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    server = Jaeger(jaeger_binary(), tmp_path)
    try:
        server.wait_up()
        yield server
    except BaseException:
        print(f"\n===== jaeger log =====\n{server.proc.log_tail()}")
        raise
    finally:
        server.proc.stop()
