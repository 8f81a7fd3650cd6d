#!/usr/bin/env bash
# A local kind cluster running the operator and the minimal PingPongStack:
#   scripts/kind.sh up     (`make up`)
#   scripts/kind.sh down   (`make down`) delete the cluster `up` created (and nothing else)
#
# `up`:
#   1. checks docker, kind, kubectl, skaffold and helm (each with an install hint);
#   2. creates the kind cluster from kind-config.yaml unless it exists;
#   3. installs the route provider: by default the Gateway of `make cluster`, Traefik
#      (the upstream image at TRAEFIK_VERSION of scripts/cluster/versions.sh) with the Gateway API
#      CRDs, the GatewayClass `traefik` and the Gateway gateway-system/public, on the node that
#      maps the host's port 80 (scripts/cluster/gateway-traefik.yaml); with PINGPONG_ROUTE=ingress
#      ingress-nginx instead (retired upstream in March 2026);
#   4. builds the three images and deploys the chart with skaffold (images loaded into kind),
#      which then applies manifests/samples/gateway.yaml (minimal.yaml with PINGPONG_ROUTE=ingress);
#   5. waits for the stack's Ready condition and prints the curl commands.
#
# Environment:
#   KIND_CLUSTER_NAME        cluster name (default pingpong, as in kind-config.yaml)
#   PINGPONG_ROUTE           gateway (default) or ingress
#   GATEWAY_API_MANIFEST     the Gateway API's standard-channel CRDs (URL or file; default: the
#                            release GATEWAY_API_VERSION of scripts/cluster/versions.sh on GitHub)
#   TRAEFIK_IMAGE            the Traefik image (default docker.io/library/traefik:<TRAEFIK_VERSION>)
#   INGRESS_NGINX_MANIFEST   ingress-nginx manifest for kind (URL or file); it is fetched from
#                            GitHub, so point it to a local copy on machines without internet
# The sample stack lives in namespace `default` (skaffold.yaml applies it there).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER_NAME:-pingpong}
# shellcheck source=scripts/cluster/versions.sh
source scripts/cluster/versions.sh

up() {
  route=${PINGPONG_ROUTE:-gateway}
  gateway_api_manifest=${GATEWAY_API_MANIFEST:-https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml}
  traefik_image=${TRAEFIK_IMAGE:-docker.io/library/traefik:$TRAEFIK_VERSION}
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
    echo "==> Gateway API $GATEWAY_API_VERSION CRDs ($gateway_api_manifest)"
    k apply --server-side -f "$gateway_api_manifest" >/dev/null
    k wait --for=condition=Established --timeout=60s crd/gateways.gateway.networking.k8s.io \
      crd/httproutes.gateway.networking.k8s.io crd/grpcroutes.gateway.networking.k8s.io
    echo "==> the Gateway: Traefik ($traefik_image), Gateway gateway-system/public on localhost:80"
    # The manifest of `make cluster`'s real node, moved to the node kind-config.yaml maps the
    # host's port 80 to (hostPort 80 on Traefik's web entry point), pulling the upstream image.
    sed -e "s#@TRAEFIK_IMAGE@#$traefik_image#" -e "s#@GATEWAY_NODE_PORT@#30080#" \
      scripts/cluster/gateway-traefik.yaml | k apply -f - >/dev/null
    k -n gateway-system patch deployment traefik --type=strategic -p '{"spec":{"template":{"spec":{
      "nodeSelector":{"pingpong.dev/node":null,"ingress-ready":"true"},
      "tolerations":[{"key":"node-role.kubernetes.io/control-plane","operator":"Exists","effect":"NoSchedule"}],
      "containers":[{"name":"traefik","imagePullPolicy":"IfNotPresent",
        "ports":[{"name":"web","containerPort":8000,"hostPort":80}]}]}}}}' >/dev/null
    k -n gateway-system rollout status deployment/traefik --timeout=300s
    k -n gateway-system wait --for=condition=Programmed gateway/public --timeout=120s
  fi

  echo "==> build images and deploy the chart (skaffold)"
  mkdir -p .local
  artifacts=.local/skaffold-artifacts.json
  skaffold build --kube-context "$context" "${profile[@]}" --file-output "$artifacts"
  # --load-images: the ping/pong images appear only in the operator's environment, which skaffold
  # does not scan for images, so force loading every built image into the kind node.
  skaffold deploy --kube-context "$context" "${profile[@]}" --build-artifacts "$artifacts" \
    --load-images=true

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
  # Both route providers listen on the node's port 80, which kind-config.yaml maps to localhost:80.
  case "$host" in
    "" | localhost) ;;
    # *.localhost resolves to 127.0.0.1.
    *.localhost) base="http://$host" ;;
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
