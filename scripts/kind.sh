#!/usr/bin/env bash
# A local kind cluster running the operator and the minimal PingPongStack:
#   scripts/kind.sh up     (`make up`)
#   scripts/kind.sh down   (`make down`) delete the cluster `up` created (and nothing else)
#
# `up`:
#   1. checks docker, kind, kubectl, skaffold and helm (each with an install hint);
#   2. creates the kind cluster from kind-config.yaml unless it exists;
#   3. checks that cloud-provider-kind serves the Gateway API (the default route: ingress-nginx
#      was retired in March 2026), or, with PINGPONG_ROUTE=ingress, installs ingress-nginx;
#   4. builds the three images and deploys the chart with skaffold (images loaded into kind),
#      which then applies manifests/samples/gateway.yaml plus the Gateway its parentRef names
#      (or minimal.yaml, served by an Ingress);
#   5. waits for the stack's Ready condition and prints the curl commands.
#
# Environment:
#   KIND_CLUSTER_NAME        cluster name (default pingpong, as in kind-config.yaml)
#   PINGPONG_ROUTE           gateway (default) or ingress
#   INGRESS_NGINX_MANIFEST   ingress-nginx manifest for kind (URL or file); it is fetched from
#                            GitHub, so point it to a local copy on machines without internet
# The sample stack lives in namespace `default` (skaffold.yaml applies it there).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER_NAME:-pingpong}

up() {
  route=${PINGPONG_ROUTE:-gateway}
  ingress_manifest=${INGRESS_NGINX_MANIFEST:-https://raw.githubusercontent.com/kubernetes/ingress-nginx/main/deploy/static/provider/kind/deploy.yaml}
  stack_ns=default
  context="kind-$cluster"

  case "$route" in
    ingress) sample=manifests/samples/minimal.yaml; profile=() ;;
    gateway) sample=manifests/samples/gateway.yaml; profile=(--profile gateway) ;;
    *) echo "PINGPONG_ROUTE must be ingress or gateway, not '$route'" >&2; exit 2 ;;
  esac

  missing=0
  need() {
    if ! command -v "$1" >/dev/null 2>&1; then
      echo "missing tool: $1 -- install it: $2" >&2
      missing=1
    fi
  }
  need docker "https://docs.docker.com/engine/install/"
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation (go install sigs.k8s.io/kind@latest)"
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  need skaffold "https://skaffold.dev/docs/install/"
  need helm "https://helm.sh/docs/intro/install/ (skaffold's helm deployer runs it)"
  if [ "$missing" -ne 0 ]; then
    exit 1
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "docker is installed but its daemon is not reachable (is it running? may this user use it?)" >&2
    exit 1
  fi

  k() { kubectl --context "$context" "$@"; }

  echo "==> kind cluster '$cluster'"
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    echo "exists; reusing it"
  else
    kind create cluster --name "$cluster" --config kind-config.yaml --wait 180s
  fi

  if [ "$route" = ingress ]; then
    echo "==> ingress-nginx for kind ($ingress_manifest)"
    k apply -f "$ingress_manifest"
    k -n ingress-nginx rollout status deployment/ingress-nginx-controller --timeout=300s
  else
    echo "==> Gateway API via cloud-provider-kind"
    # cloud-provider-kind installs the CRDs and the GatewayClass shortly after the cluster appears.
    for _ in $(seq 1 60); do
      k get gatewayclass cloud-provider-kind >/dev/null 2>&1 && break
      sleep 2
    done
    if ! k get gatewayclass cloud-provider-kind >/dev/null 2>&1; then
      cat >&2 <<'EOF'
GatewayClass 'cloud-provider-kind' not found. Run cloud-provider-kind next to the cluster
(it installs the Gateway API CRDs and the GatewayClass), e.g. in another terminal:
  go install sigs.k8s.io/cloud-provider-kind@latest && sudo cloud-provider-kind
or
  docker run --rm --network host -v /var/run/docker.sock:/var/run/docker.sock \
    registry.k8s.io/cloud-provider-kind/cloud-controller-manager:v0.11.1
then run `make up` again (or `PINGPONG_ROUTE=ingress make up` to use ingress-nginx instead).
EOF
      exit 1
    fi
  fi

  echo "==> build images and deploy the chart (skaffold)"
  mkdir -p .local
  artifacts=.local/skaffold-artifacts.json
  skaffold build --kube-context "$context" "${profile[@]}" --file-output "$artifacts"
  # --load-images: the ping/pong images appear only in the operator's environment, which skaffold
  # does not scan for images, so force loading every built image into the kind node.
  skaffold deploy --kube-context "$context" "${profile[@]}" --build-artifacts "$artifacts" \
    --load-images=true

  if [ "$route" = gateway ]; then
    # The sample's HTTPRoute attaches to the Gateway named in spec.gateway.parentRef; create that
    # Gateway (class cloud-provider-kind, HTTP on port 80, routes from every namespace) if needed.
    gw_name=$(k -n "$stack_ns" get -f "$sample" -o jsonpath='{.spec.gateway.parentRef.name}')
    gw_ns=$(k -n "$stack_ns" get -f "$sample" -o jsonpath='{.spec.gateway.parentRef.namespace}')
    gw_ns=${gw_ns:-$stack_ns}
    echo "==> Gateway $gw_ns/$gw_name (class cloud-provider-kind)"
    k create namespace "$gw_ns" --dry-run=client -o yaml | k apply -f - >/dev/null
    k apply -f - <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: $gw_name
  namespace: $gw_ns
spec:
  gatewayClassName: cloud-provider-kind
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes:
        namespaces:
          from: All
EOF
    k -n "$gw_ns" wait --for=condition=Programmed "gateway/$gw_name" --timeout=300s
  fi

  echo "==> waiting for the stack in $sample to become Ready"
  k -n "$stack_ns" apply -f "$sample" >/dev/null
  if ! k -n "$stack_ns" wait --for=condition=Ready -f "$sample" --timeout=600s; then
    echo "stack did not become Ready; its status and the operator log:" >&2
    k -n "$stack_ns" describe -f "$sample" >&2 || true
    k -n pingpong-system logs deployment/pingpong-operator --tail=100 >&2 || true
    exit 1
  fi
  k -n "$stack_ns" get -f "$sample"

  endpoint=$(k -n "$stack_ns" get -f "$sample" -o jsonpath='{.status.endpoint}')
  host=$(printf '%s' "$endpoint" | sed -E 's#^[a-z]+://##; s#[/:].*$##')
  base=http://localhost
  header=""
  if [ "$route" = gateway ]; then
    # cloud-provider-kind gives the Gateway an address on the kind network (reachable from a
    # Linux host; on macOS/Windows use `kubectl port-forward`).
    address=$(k -n "$gw_ns" get gateway "$gw_name" -o jsonpath='{.status.addresses[0].value}')
    base="http://${address:-<gateway address>}"
  fi
  case "$host" in
    "" | localhost) ;;
    # *.localhost resolves to 127.0.0.1, where kind-config.yaml maps the node's port 80.
    *.localhost) if [ "$route" = ingress ]; then base="http://$host"; else header="-H 'Host: $host' "; fi ;;
    # Any other host: send it in a header.
    *) header="-H 'Host: $host' " ;;
  esac
  cat <<EOF

The stack is Ready (endpoint: ${endpoint:-none reported}). Try it:

  curl -s -X POST -H 'content-type: application/json' ${header}-d '{"msg":"hello"}' $base/ping
  curl -s ${header}$base/pong

Run the end-to-end test with \`make e2e\`; delete the cluster with \`make down\`.
EOF
}

down() {
  if ! command -v kind >/dev/null 2>&1; then
    echo "missing tool: kind -- install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
    exit 1
  fi
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    kind delete cluster --name "$cluster"
  else
    echo "no kind cluster named '$cluster'; nothing to delete"
  fi
  rm -f .local/skaffold-artifacts.json
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
