"""Fixtures of the system tests: real `ping`, `pong` and nginx processes on free ports, a unique
queue per test, the shared broker (RABBITMQ_* env, default 127.0.0.1:5672 guest/guest) or a
private broker node for fault tests. Processes and queues are cleaned up afterwards; process logs
are printed when a test fails."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from broker_cluster import PrivatePostgres
from system_helpers import Broker, Loadgen, PrivateBroker, Stack, binaries, listening, missing


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"report_{when}", None), "failed", False)
               for when in ("setup", "call"))


@pytest.fixture(scope="session")
def bins() -> dict[str, Path]:
    return binaries()


@pytest.fixture(scope="session")
def shared_broker() -> Broker:
    broker = Broker.from_env()
    if not listening(broker.host, broker.port):
        missing(f"no RabbitMQ broker answers on {broker.host}:{broker.port} "
                "(start one, e.g. scripts/ensure-services.sh rabbitmq, or set RABBITMQ_HOST/RABBITMQ_PORT)")
    return broker


@pytest.fixture
def loadgen(bins: dict[str, Path], shared_broker: Broker) -> Loadgen:
    return Loadgen(bins["pingpong-loadgen"], shared_broker)


@pytest.fixture
def empty_stack(tmp_path: Path, bins: dict[str, Path], shared_broker: Broker,
                loadgen: Loadgen) -> Iterator[Stack]:
    """A Stack on the shared broker with nothing started; its processes are stopped and its queues
    deleted afterwards."""
    stack = Stack(bins=bins, broker=shared_broker, workdir=tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()
        loadgen.delete(stack.queue, stack.dead_queue)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the module's own (the shared one is never touched); each test creates
    its own database on it."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def _dump(request: pytest.FixtureRequest, stack: Stack, extra: str = "") -> None:
    print(f"\n===== process logs of {request.node.name} (queue {stack.queue}) =====")
    print(stack.logs())
    if extra:
        print(extra)


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path, bins: dict[str, Path],
          shared_broker: Broker, loadgen: Loadgen) -> Iterator[Stack]:
    """ping + pong + nginx gateway on the shared broker, ready, with a queue of its own."""
    stack = Stack(bins=bins, broker=shared_broker, workdir=tmp_path)
    started = False
    try:
        stack.start_ping()
        stack.start_pong()
        stack.start_gateway()
        stack.wait_ready("ping")
        stack.wait_ready("pong")
        stack.wait_gateway()
        started = True
        yield stack
    finally:
        stack.stop_all()
        if not started or failed(request):
            _dump(request, stack)
        loadgen.delete(stack.queue, stack.dead_queue)


@pytest.fixture(scope="module")
def private_broker(bins: dict[str, Path]) -> Iterator[PrivateBroker]:
    """A RabbitMQ node of the test's own (never the shared broker), shared by a module's tests."""
    broker = PrivateBroker()
    try:
        broker.start()
        yield broker
    except BaseException:
        print(f"\n===== private broker log ({broker.log_path}) =====\n{broker.log_tail()}")
        raise
    finally:
        broker.destroy()


@pytest.fixture
def fault_stack(request: pytest.FixtureRequest, tmp_path: Path, bins: dict[str, Path],
                private_broker: PrivateBroker) -> Iterator[Stack]:
    """An empty Stack (nothing started) wired to the private broker; the test starts what it needs."""
    stack = Stack(bins=bins, broker=private_broker.address, workdir=tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()
        if failed(request):
            _dump(request, stack, f"--- private broker ({private_broker.log_path}) ---\n"
                                  f"{private_broker.log_tail()}")
