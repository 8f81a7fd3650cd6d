"""One trace from the HTTP request through the broker to the database (issue 17).

The real `ping` and `pong` binaries run with traces on (OTLP/HTTP) against the shared broker, a
private PostgreSQL server, the shared Redis and a real Jaeger v2 all-in-one (built from Go modules by
scripts/observability/build.sh, cached outside git). A `POST /ping` through the nginx gateway
carries a known W3C `traceparent`; Jaeger's query API must then hold that trace with ping's SERVER
span, the PRODUCER span of the publish, pong's CONSUMER span and the store's INSERT span, in that
parent order, each with the message id. A `GET /pong` that is not part of any trace shows the
Redis cache span.

Jaeger, Redis, nginx or the broker missing: fails when CI=true, skips otherwise."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

from broker_cluster import PrivatePostgres
from jaeger_helpers import Jaeger, jaeger  # noqa: F401 (the fixture)
from system_helpers import Stack, http_status, listening, missing, wait_until

TRACE_ID = uuid.uuid4().hex
CALLER_SPAN = uuid.uuid4().hex[:16]


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def _parent(span: dict[str, Any]) -> str | None:
    parents = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
    return parents[0] if parents else None


def test_one_trace_from_the_request_through_the_broker_to_the_database(
        empty_stack: Stack, jaeger: Jaeger, private_postgres: PrivatePostgres) -> None:
    if not listening("127.0.0.1", 6379):
        missing("no Redis answers on 127.0.0.1:6379 (start one, e.g. scripts/ensure-services.sh redis)")
    stack = empty_stack
    traces = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    database = private_postgres.create_database(f"pp_trace_{uuid.uuid4().hex[:10]}")
    # The resource attributes the operator renders for pods (the pod name comes from the
    # downward API there); Jaeger shows them as the process tags of each service.
    stack.start_ping(traces | {"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=ping-0,k8s.namespace.name=ns"})
    stack.start_pong(traces | {
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=pong-0,k8s.namespace.name=ns",
        "PONG_STORE": "postgres",
        "DATABASE_URL": database,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "PONG_CACHE_PREFIX": f"pp-trace-{uuid.uuid4().hex[:8]}:",
    })
    stack.start_gateway()
    try:
        stack.wait_ready("ping")
        stack.wait_ready("pong")
        stack.wait_gateway()

        traceparent = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
        request = urllib.request.Request(
            f"{stack.gateway_url}/ping", data=json.dumps({"msg": "traced"}).encode(),
            headers={"Content-Type": "application/json", "traceparent": traceparent}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            message_id = json.load(response)["id"]
        wait_until(lambda: any(m["id"] == message_id for m in stack.stored()), 30,
                   "pong to store the message")

        def complete() -> dict[str, Any] | None:
            trace = jaeger.trace(TRACE_ID)
            return trace if trace is not None and len(trace["spans"]) >= 4 else None

        trace = wait_until(complete, 30, "Jaeger to hold the four spans of the trace", interval=0.3)
        services = {pid: proc["serviceName"] for pid, proc in trace["processes"].items()}
        by_name = {(services[s["processID"]], s["operationName"]): s for s in trace["spans"]}
        server = by_name.get(("ping", "POST /ping"))
        publish = by_name.get(("ping", f"publish {stack.queue}"))
        consume = by_name.get(("pong", f"process {stack.queue}"))
        store = by_name.get(("pong", "insert postgres"))
        found = sorted(by_name)
        assert server and publish and consume and store, f"spans in the trace: {found}"
        assert {s["traceID"] for s in (server, publish, consume, store)} == {TRACE_ID}

        # Parent order: caller -> ping server -> publish -> pong consume -> store.
        assert _parent(server) == CALLER_SPAN
        assert _parent(publish) == server["spanID"]
        assert _parent(consume) == publish["spanID"]
        assert _parent(store) == consume["spanID"]

        kinds = {name: _tags(span).get("span.kind") for name, span in
                 [("server", server), ("publish", publish), ("consume", consume), ("store", store)]}
        assert kinds == {"server": "server", "publish": "producer", "consume": "consumer",
                         "store": "client"}
        for span in (server, publish, consume, store):
            assert _tags(span).get("messaging.message.id") == message_id, span["operationName"]
        assert _tags(publish)["messaging.system"] == "rabbitmq"
        assert _tags(publish)["messaging.destination.name"] == stack.queue
        assert _tags(store)["db.system.name"] == "postgresql"
        assert str(_tags(server)["http.response.status_code"]) == "200"
        process_tags = {proc["serviceName"]: {t["key"]: t["value"] for t in proc.get("tags", [])}
                        for proc in trace["processes"].values()}
        for service in ("ping", "pong"):
            assert process_tags[service].get("k8s.pod.name") == f"{service}-0", process_tags
            assert process_tags[service].get("k8s.namespace.name") == "ns", process_tags

        # GET /pong reads through the Redis cache: a new trace with the cache span.
        assert http_status(f"{stack.gateway_url}/pong") == 200
        wait_until(lambda: "GET" in jaeger.operations("pong"), 30,
                   "Jaeger to list pong's Redis GET span", interval=0.3)
    except BaseException:
        print(f"\n===== process logs =====\n{stack.logs()}")
        raise
