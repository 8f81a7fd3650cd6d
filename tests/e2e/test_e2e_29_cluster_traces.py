"""Traces of a stack on the local cluster's real node reach the Jaeger `make cluster` runs
(scripts/cluster/node.sh: Jaeger v2 on the host end of the node's veth, behind the Service
observability/jaeger that the stack's `spec.observability.tracing.endpoint` names):

- a POST /ping through the Gateway with a known W3C `traceparent` (sampled) on a stack whose own
  sampling ratio is 0, so only the caller's decision records it, gives one trace in Jaeger's query
  API (`/api/traces/<id>`) holding ping's server span as a child of the caller's span, and spans
  of pong (consuming and storing the message), all carrying the trace id the caller chose.

Fails under CI=true when the real node or its Jaeger is missing.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from typing import Any

import requests

from e2e_helpers import Cluster, eventually, missing, unique
from real_pods import real_stack

ENDPOINT = "http://jaeger.observability:4318"


def _trace(jaeger: str, trace_id: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{jaeger}/api/traces/{trace_id}", timeout=5) as response:
            traces = json.load(response).get("data") or []
    except OSError:
        return None
    return traces[0] if len(traces) == 1 else None


def _spans_by_service(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    services = {key: p["serviceName"] for key, p in trace["processes"].items()}
    out: dict[str, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        out.setdefault(services[span["processID"]], []).append(span)
    return out


def test_a_ping_through_the_gateway_is_traced_in_the_clusters_jaeger(cluster: Cluster, real_ns: str) -> None:
    jaeger_file = cluster.state_dir / "jaeger-url"
    if not jaeger_file.is_file():
        missing("needs the Jaeger of the local cluster's real node (scripts/cluster/node.sh writes "
                "jaeger-url; it needs a cached scripts/observability/build.sh jaeger or Go)")
    jaeger = jaeger_file.read_text().strip()
    ns, name = real_ns, "traced"
    url = cluster.gateway_url
    assert url is not None
    host = real_stack(cluster, ns, name, {
        "rabbitmq": {"image": cluster.local_image("rabbitmq"), "storage": {"ephemeral": True}},
        "observability": {"tracing": {"endpoint": ENDPOINT, "samplingRatio": 0}}})

    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    msg = unique("traced")

    def posted() -> bool:
        r = requests.post(f"{url}/ping", json={"msg": msg}, timeout=15,
                          headers={"Host": host, "traceparent": f"00-{trace_id}-{parent}-01"})
        return r.status_code == 200

    eventually("POST /ping with a traceparent answering 200", posted, timeout=180, interval=2)

    def complete() -> dict[str, list[dict[str, Any]]] | None:
        trace = _trace(jaeger, trace_id)
        if trace is None:
            return None
        spans = _spans_by_service(trace)
        return spans if spans.get("ping") and spans.get("pong") else None

    spans = eventually(f"ping's and pong's spans of trace {trace_id} in {jaeger}", complete,
                       timeout=120, interval=2)
    assert all(s["traceID"] == trace_id for ss in spans.values() for s in ss), spans
    # ping's server span continues the caller's span.
    roots = [s for s in spans["ping"]
             if any(r["refType"] == "CHILD_OF" and r["spanID"] == parent for r in s.get("references", []))]
    assert roots, [(s["operationName"], s.get("references")) for s in spans["ping"]]
    print(f"\ntrace {trace_id}: " + "; ".join(f"{svc}: {sorted(s['operationName'] for s in ss)}"
                                              for svc, ss in sorted(spans.items())))
