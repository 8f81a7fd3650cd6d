# shellcheck shell=bash
# shellcheck disable=SC2034  # variables for the scripts that source this file
# Shared by scripts/cluster/{up,down,operator}.sh: settings, ports and small helpers.
# shellcheck source=scripts/cluster/versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

CLUSTER_DIR=$(realpath -m "${CLUSTER_DIR:-.cluster}")
pki="$CLUSTER_DIR/pki"
base=${CLUSTER_PORT_BASE:-16440}
ETCD_PORT=$((base + 0))
ETCD_PEER_PORT=$((base + 1))
APISERVER_PORT=$((base + 3))
KCM_PORT=$((base + 7))
SCHEDULER_PORT=$((base + 9))
KWOK_PORT=$((base + 10))
OPERATOR_METRICS_PORT=$((base + 20))
# The real node (scripts/cluster/node.sh): its network namespace, addresses and the Gateway port.
NODE_NAME=pingpong-node
NODE_NETNS=pingpong-$base
NODE_VETH=ppn$base
NODE_CGROUP=pingpong-$base
node_net=$(((base / 1000) % 250))
NODE_HOST_IP=10.213.$node_net.1
NODE_IP=10.213.$node_net.2
# One pod range per port base: the host routes it to its own node (see node.sh), so two clusters
# on one machine never claim the same addresses.
NODE_POD_CIDR=10.88.$node_net.0/24
# kwok's simulated pods: addresses no process answers on. One range per port base too; up.sh (as
# root) routes it as unreachable, so a connection to a simulated pod (the operator asking a
# broker's management API) fails at once on this host instead of leaving it by the default route.
# node_net is at most 65 (ports end at 65535): 10.120-10.185, clear of every range above.
KWOK_POD_CIDR=10.$((120 + node_net)).0.0/16
CLUSTER_DNS_IP=10.96.0.10
GATEWAY_NODE_PORT=30080
GATEWAY_PORT=$((base + 30))
# Jaeger v2 (traces) on the host end of the real node's veth, where pods reach it.
JAEGER_OTLP_PORT=$((base + 31))
JAEGER_QUERY_PORT=$((base + 32))
JAEGER_GRPC_PORT=$((base + 33))
OPERATOR_NAMESPACE=${OPERATOR_NAMESPACE:-pingpong-system}
OPERATOR_RELEASE=${OPERATOR_RELEASE:-pingpong-operator}
# The chart names its ServiceAccount after the release (fullname).
OPERATOR_SERVICE_ACCOUNT=${OPERATOR_SERVICE_ACCOUNT:-$OPERATOR_RELEASE}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step() { printf '==> %s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

# wait_until DESCRIPTION COMMAND...: retry COMMAND once a second for CLUSTER_WAIT seconds.
wait_until() {
  local what=$1 i
  shift
  for ((i = 0; i < ${CLUSTER_WAIT:-120}; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "timed out after ${CLUSTER_WAIT:-120} s waiting for: $what (logs in $CLUSTER_DIR/logs/)"
}

alive() { [ -s "$CLUSTER_DIR/run/$1.pid" ] && kill -0 "$(cat "$CLUSTER_DIR/run/$1.pid")" 2>/dev/null; }

# ports_free NAME:PORT...: fail with a clear message when a port of a process this cluster has not
# started already listens (another cluster, e.g. a second checkout using the same port base).
ports_free() {
  local entry name port
  for entry in "$@"; do
    name=${entry%%:*} port=${entry##*:}
    alive "$name" && continue
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port (for $name) is already in use by another process: another local cluster? \
Choose other ports with CLUSTER_PORT_BASE=<n> (make cluster) or E2E_PORT_BASE=<n> (make test, tests/e2e)"
    fi
  done
}

# start_bg NAME COMMAND...: start COMMAND in the background with its log in logs/NAME.log and its
# pid in run/NAME.pid, unless the process of that pid file still runs.
start_bg() {
  local name=$1
  shift
  if alive "$name"; then
    echo "    $name already runs (pid $(cat "$CLUSTER_DIR/run/$name.pid"))"
    return 0
  fi
  # setsid: the process outlives this script and a Ctrl-C of `make`; down.sh stops it by pid.
  setsid "$@" >>"$CLUSTER_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER_DIR/run/$name.pid"
  sleep 0.2
  alive "$name" || die "$name exited at once; its log: $CLUSTER_DIR/logs/$name.log"
}

# issue_cert NAME SUBJECT [EXTENSION]: a key and a certificate signed by the local CA.
issue_cert() {
  local name=$1 subject=$2 ext=${3:-}
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" \
    -out "$pki/$name.csr" 2>/dev/null
  if [ -n "$ext" ]; then
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -out "$pki/$name.crt" -extfile <(echo "$ext") 2>/dev/null
  else
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -out "$pki/$name.crt" 2>/dev/null
  fi
  rm -f "$pki/$name.csr"
}

# write_kubeconfig FILE USER NAMESPACE CREDENTIALS: a kubeconfig for the local API server, mode
# 0600; CREDENTIALS are the YAML lines of the user's `user:` block.
write_kubeconfig() {
  (
    umask 077
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pingpong-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $CLUSTER_DIR/pki/ca.crt
users:
- name: $2
  user:
$4
contexts:
- name: pingpong-local
  context: {cluster: pingpong-local, user: $2, namespace: $3}
current-context: pingpong-local
EOF
  )
}

# write_cert_kubeconfig NAME FILE: a kubeconfig authenticating with pki/NAME.{crt,key}.
write_cert_kubeconfig() {
  write_kubeconfig "$2" "$1" default "    client-certificate: $pki/$1.crt
    client-key: $pki/$1.key"
}

# write_token_kubeconfig FILE TOKEN: a kubeconfig that authenticates with a bearer token.
write_token_kubeconfig() {
  write_kubeconfig "$1" operator "$OPERATOR_NAMESPACE" "    token: $2"
}

nodes_ready() {
  local n
  n=$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)
  [ "$n" -ge "$1" ]
}

# operator_binary: build (incrementally) and print the path of the operator binary; the debug
# build unless OPERATOR_PROFILE=release (the benchmark's release figures); OPERATOR_BINARY names a
# binary built elsewhere instead (a benchmark of another commit).
operator_binary() {
  if [ -n "${OPERATOR_BINARY:-}" ]; then
    [ -x "$OPERATOR_BINARY" ] || die "OPERATOR_BINARY=$OPERATOR_BINARY is not an executable"
    echo "$OPERATOR_BINARY"
    return 0
  fi
  local profile=${OPERATOR_PROFILE:-debug}
  case "$profile" in
    debug) cargo build -q -p pingpong-operator --bin pingpong-operator >&2 ;;
    release) cargo build -q --release -p pingpong-operator --bin pingpong-operator >&2 ;;
    *) die "OPERATOR_PROFILE must be debug or release, not '$profile'" ;;
  esac || die "cargo build of the operator failed"
  echo "$CARGO_TARGET_DIR/$profile/pingpong-operator"
}

# start_operator_token: operator.kubeconfig with a TokenRequest token of the chart's ServiceAccount.
start_operator_token() {
  local token
  token=$(kubectl -n "$OPERATOR_NAMESPACE" create token "$OPERATOR_SERVICE_ACCOUNT" --duration 48h) ||
    die "no token for ServiceAccount $OPERATOR_NAMESPACE/$OPERATOR_SERVICE_ACCOUNT (is the chart installed?)"
  write_token_kubeconfig "$CLUSTER_DIR/operator.kubeconfig" "$token"
}

# start_operator NAME METRICS_PORT: the operator binary on the host, authenticated as the chart's
# ServiceAccount through a TokenRequest token, so the chart's RBAC is what the API server enforces.
# OPERATOR_KUBECONFIG names another kubeconfig for it (the e2e suite's proxy to the API server).
start_operator() {
  local name=$1 port=$2 exe
  exe=$(operator_binary)
  [ -s "$CLUSTER_DIR/operator.kubeconfig" ] || start_operator_token
  if alive "$name"; then
    echo "    $name already runs (pid $(cat "$CLUSTER_DIR/run/$name.pid"))"
    return 0
  fi
  # The stacks' default images of this cluster (the real node's local images), when up.sh set them.
  local images=()
  if [ -s "$CLUSTER_DIR/operator.env" ]; then mapfile -t images <"$CLUSTER_DIR/operator.env"; fi
  env "${images[@]}" \
    KUBECONFIG="${OPERATOR_KUBECONFIG:-$CLUSTER_DIR/operator.kubeconfig}" POD_NAME="host-$name" POD_NAMESPACE="$OPERATOR_NAMESPACE" \
    METRICS_ADDR="127.0.0.1:$port" LOG_FORMAT=text RUST_LOG="${OPERATOR_RUST_LOG:-info}" NO_COLOR=1 \
    setsid "$exe" run >>"$CLUSTER_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER_DIR/run/$name.pid"
  sleep 0.2
  alive "$name" || die "the operator exited at once; its log: $CLUSTER_DIR/$name.log"
}

# operator_leads NAME: the Lease names this host operator as its holder.
operator_leads() {
  [ "$(kubectl -n "$OPERATOR_NAMESPACE" get lease pingpong-operator-leader -o jsonpath='{.spec.holderIdentity}')" = "host-$1" ]
}
