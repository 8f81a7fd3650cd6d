"""The operator's own traces on the local control plane (issue 17): with an OTLP endpoint set, each
reconcile of a stack is one trace in Jaeger, the `reconcile` span tagged with the stack and its
namespace, and every Kubernetes API request it makes a CLIENT child span carrying the method, the
URL and the API server's status code.

The operator runs on the host (local mode) with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a Jaeger
v2 all-in-one on loopback (the same binary and configuration as the system trace test). Jaeger
missing: fails when CI=true, skips otherwise."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_helpers import Cluster, eventually, stack_doc

# The Jaeger runner is shared with the system trace test (tests/system is not on the e2e path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "system"))
from jaeger_helpers import Jaeger, jaeger_binary  # noqa: E402

SERVICE = "pingpong-operator"
STACK = "traced"


@pytest.fixture
def tracing_operator(local: Cluster, tmp_path: Path) -> Iterator[Jaeger]:
    server = Jaeger(jaeger_binary(), tmp_path)
    op = local.host_operator("operator")
    try:
        server.wait_up()
        op.stop()
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": server.otlp_endpoint,
               "OTEL_TRACES_SAMPLER": "always_on",
               "OTEL_BSP_SCHEDULE_DELAY": "100"}
        local.operator_script("start", "operator", str(op.port), env=env)
        eventually("the operator leads again", op.ready, timeout=60)
        yield server
    except BaseException:
        print(f"\n===== jaeger log =====\n{server.proc.log_tail()}")
        raise
    finally:
        op.stop()
        op.start()
        eventually("the operator is back with its usual settings", op.ready, timeout=60)
        server.proc.stop()


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def _parent(span: dict[str, Any]) -> str | None:
    parents = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
    return parents[0] if parents else None


def _reconcile_of(trace: dict[str, Any], ns: str) -> dict[str, Any] | None:
    for span in trace["spans"]:
        tags = _tags(span)
        if span["operationName"] == "reconcile" and tags.get("stack") == STACK and tags.get("namespace") == ns:
            return span
    return None


def test_each_reconcile_is_a_trace_with_its_api_calls(local: Cluster, ns: str,
                                                      tracing_operator: Jaeger) -> None:
    jaeger = tracing_operator
    local.apply(stack_doc(STACK), ns)
    local.wait_ready(ns, STACK)

    def traced() -> tuple[dict[str, Any], dict[str, Any]] | None:
        for trace in jaeger.traces(SERVICE, "reconcile"):
            root = _reconcile_of(trace, ns)
            calls = [s for s in trace["spans"] if _parent(s) == (root or {}).get("spanID")]
            # The first reconcile of a new stack applies its children: many API calls.
            if root is not None and len(calls) >= 3:
                return trace, root
        return None

    trace, root = eventually("Jaeger to hold a reconcile of the stack with its API calls", traced,
                             timeout=60, interval=0.5)
    services = {pid: proc["serviceName"] for pid, proc in trace["processes"].items()}
    assert services[root["processID"]] == SERVICE
    assert _parent(root) is None, "a reconcile starts its own trace"
    calls = [s for s in trace["spans"] if _parent(s) == root["spanID"]]
    for call in calls:
        tags = _tags(call)
        assert tags.get("span.kind") == "client", (call["operationName"], tags)
        assert tags.get("http.method") in {"GET", "PATCH", "POST", "PUT", "DELETE"}, tags
        assert "/api" in str(tags.get("http.url", "")), tags
        assert int(tags.get("http.status_code", 0)) > 0, tags
    # The children are applied with server-side apply: PATCH requests into the stack's namespace.
    applied = [c for c in calls if _tags(c)["http.method"] == "PATCH" and f"/namespaces/{ns}/" in _tags(c)["http.url"]]
    assert applied, f"no PATCH into {ns} among {[(_tags(c)['http.method'], _tags(c)['http.url']) for c in calls]}"
