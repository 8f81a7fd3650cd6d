#!/usr/bin/env bash
# `make e2e`: end-to-end test of an installed operator, against the current kubeconfig context.
#
#   1. creates a temporary namespace and a PingPongStack in it (ephemeral broker storage, its
#      own Ingress host so it cannot collide with other stacks);
#   2. waits for the stack's Ready condition;
#   3. POST /ping through the route (ingress-nginx on localhost:80, as `make up` sets it up),
#      or, when that is not reachable, through `kubectl port-forward` to the ping Service;
#   4. checks that GET /pong returns the message that was sent;
#   5. deletes the stack and checks that every child object is garbage-collected (owner refs);
#   6. on failure prints the stack, its children, events and the operator log; always deletes
#      the namespace (E2E_KEEP_NAMESPACE=1 keeps it for debugging).
#
# Environment:
#   E2E_BASE_URL          route base URL (default http://localhost); the stack's Ingress host is
#                         sent in the Host header
#   E2E_TIMEOUT           seconds to wait for Ready (default 600)
#   OPERATOR_NAMESPACE    where the operator runs, for its log (default pingpong-system)
#   E2E_KEEP_NAMESPACE    1 keeps the namespace after the test
set -euo pipefail
cd "$(dirname "$0")/.."

base_url=${E2E_BASE_URL:-http://localhost}
timeout=${E2E_TIMEOUT:-600}
operator_ns=${OPERATOR_NAMESPACE:-pingpong-system}
stack=e2e
ns="pingpong-e2e-$(date +%s)-$$"
host="$ns.localhost"
msg="e2e-$(date +%s%N)-$RANDOM"
pf_pids=()
work=$(mktemp -d)

for tool in kubectl curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "missing tool: $tool" >&2
    exit 1
  fi
done

log() { printf '==> %s\n' "$*"; }

dump_state() {
  echo "---- e2e failed; state of namespace $ns ----" >&2
  kubectl -n "$ns" get pingpongstack "$stack" -o yaml >&2 || true
  kubectl -n "$ns" get all,ingress,networkpolicy,poddisruptionbudget,configmap,secret \
    -o wide >&2 || true
  kubectl -n "$ns" get events --sort-by=.lastTimestamp >&2 || true
  kubectl -n "$ns" describe pods >&2 || true
  kubectl -n "$operator_ns" logs deployment/pingpong-operator --tail=200 >&2 || true
}

cleanup() {
  local status=$?
  for pid in "${pf_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    dump_state
  fi
  if [ "${E2E_KEEP_NAMESPACE:-0}" = 1 ]; then
    echo "keeping namespace $ns (E2E_KEEP_NAMESPACE=1)" >&2
  else
    kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  if [ "$status" -eq 0 ]; then
    echo "e2e: PASS"
  else
    echo "e2e: FAIL" >&2
  fi
}
trap cleanup EXIT

log "context $(kubectl config current-context)"
if ! kubectl get crd pingpongstacks.pingpong.dev >/dev/null; then
  echo "the PingPongStack CRD is not installed: kubectl apply --server-side -f manifests/crd.yaml" >&2
  exit 1
fi

log "namespace $ns"
kubectl create namespace "$ns" >/dev/null

log "applying PingPongStack $stack (ingress host $host)"
kubectl -n "$ns" apply -f - <<EOF
apiVersion: pingpong.dev/v1alpha1
kind: PingPongStack
metadata:
  name: $stack
spec:
  rabbitmq:
    storage:
      ephemeral: true
  ingress:
    enabled: true
    host: $host
EOF

log "waiting up to ${timeout}s for Ready"
kubectl -n "$ns" wait --for=condition=Ready "pingpongstack/$stack" --timeout="${timeout}s"

# Route: the Ingress through localhost:80, else port-forwards to the two Services.
ping_url="$base_url/ping"
pong_url="$base_url/pong"
host_header=(-H "Host: $host")
if ! curl -s -o /dev/null --max-time 5 "${host_header[@]}" "$pong_url"; then
  log "ingress not reachable at $base_url; falling back to kubectl port-forward"
  host_header=()
  for svc in ping pong; do
    port=$(kubectl -n "$ns" get service "$stack-$svc" -o jsonpath='{.spec.ports[0].port}')
    kubectl -n "$ns" port-forward "service/$stack-$svc" ":$port" >"$work/pf-$svc.log" 2>&1 &
    pf_pids+=("$!")
  done
  for svc in ping pong; do
    local_port=""
    for _ in $(seq 1 30); do
      local_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/pf-$svc.log" | head -n 1)
      [ -n "$local_port" ] && break
      sleep 1
    done
    if [ -z "$local_port" ]; then
      echo "port-forward to $stack-$svc did not start:" >&2
      cat "$work/pf-$svc.log" >&2
      exit 1
    fi
    if [ "$svc" = ping ]; then
      ping_url="http://127.0.0.1:$local_port/ping"
    else
      pong_url="http://127.0.0.1:$local_port/pong"
    fi
  done
fi

log "POST $ping_url"
code=$(curl -s -o "$work/ping.json" -w '%{http_code}' --max-time 30 "${host_header[@]}" \
  -H 'content-type: application/json' -d "{\"msg\":\"$msg\"}" "$ping_url")
cat "$work/ping.json"
echo
case "$code" in
  2??) ;;
  *) echo "POST /ping answered HTTP $code" >&2; exit 1 ;;
esac
if ! grep -q "$msg" "$work/ping.json"; then
  echo "POST /ping response does not echo the message $msg" >&2
  exit 1
fi

log "GET $pong_url until it contains $msg"
found=0
for _ in $(seq 1 60); do
  if curl -sf --max-time 10 "${host_header[@]}" "$pong_url" >"$work/pong.json" &&
    grep -q "$msg" "$work/pong.json"; then
    found=1
    break
  fi
  sleep 1
done
if [ "$found" -ne 1 ]; then
  echo "GET /pong never returned $msg; last answer:" >&2
  cat "$work/pong.json" >&2 || true
  exit 1
fi
echo "pong has the message"

for pid in "${pf_pids[@]}"; do
  kill "$pid" 2>/dev/null || true
done
pf_pids=()

log "deleting the stack; its children must be garbage-collected"
children=(deployment statefulset service configmap secret ingress networkpolicy poddisruptionbudget)
selector="app.kubernetes.io/instance=$stack"
before=$(kubectl -n "$ns" get "$(IFS=,; echo "${children[*]}")" -l "$selector" -o name)
if [ -z "$before" ]; then
  echo "no child objects with label $selector before deletion; cannot check garbage collection" >&2
  exit 1
fi
echo "$before"
kubectl -n "$ns" delete pingpongstack "$stack" --wait=true --timeout=120s
left=""
for _ in $(seq 1 120); do
  left=$(kubectl -n "$ns" get "$(IFS=,; echo "${children[*]}")" -l "$selector" -o name)
  [ -z "$left" ] && break
  sleep 1
done
if [ -n "$left" ]; then
  echo "children left after deleting the stack:" >&2
  echo "$left" >&2
  exit 1
fi
echo "every child is gone"
