#!/usr/bin/env bash
# The real node of the local cluster, beside the kwok ones: a kubelet, containerd with runc, the
# CNI bridge and kube-proxy (iptables mode), all inside a network namespace of their own, plus
# CoreDNS and the Gateway (Traefik, GatewayClass traefik, Gateway gateway-system/public) as pods on
# it, and Jaeger v2 (traces) on the host. Called by up.sh and down.sh:
#
#   scripts/cluster/node.sh up     start (or keep) the node and its add-ons, write gateway-url
#   scripts/cluster/node.sh down   stop exactly what `up` started: processes (pid files), the
#                                  containers, their mounts, cgroups, the network namespace with
#                                  its iptables rules and routes, and the kernel settings the
#                                  kubelet changed
#
# Layout (N = CLUSTER_PORT_BASE / 1000, so clusters on other port bases never meet):
#   network namespace pingpong-<base>, veth ppn<base> (host, 10.213.N.1/30) <-> eth0 (node,
#   10.213.N.2/30); pods on the bridge cni0, 10.88.N.0/24, masqueraded towards the host.
#   Pods and the node reach the API server through a socat relay on 10.213.N.1 (the API server
#   itself listens on 127.0.0.1 only); the host reaches the Gateway through a socat relay on
#   127.0.0.1:<base+30>, and the pods by one route (10.88.N.0/24 via the node, on the veth, so it
#   goes with it): the operator on the host reads broker pods' management API at their pod IPs.
#   Host networking is not otherwise touched: no host iptables rules, ip_forward stays as it
#   was.
#   Jaeger v2 (scripts/observability/jaeger.yaml, the binary scripts/observability/build.sh
#   caches) runs on the host and listens on 10.213.N.1 (pods cannot reach the host's 127.0.0.1):
#   OTLP/HTTP on <base+31>, behind the Service observability/jaeger (port 4318, a selector-less
#   Service whose EndpointSlice points there, like `kubernetes`), UI and query API on
#   http://10.213.N.1:<base+32> (written to jaeger-url). Without a cached build and without Go,
#   traces stay off (said so) and the rest starts.
# Needs root and: containerd's build (build-node.sh), kubelet and kube-proxy (build.sh), runc,
# the CNI plugins in /usr/lib/cni, iptables, socat, nsenter, buildah/debootstrap for the images.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/cluster/common.sh
source scripts/cluster/common.sh
export PATH="$CLUSTER_DIR/bin:$PATH" KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"

node=$CLUSTER_DIR/node
run=/run/pingpong-$base # unix sockets (short paths) and containerd's state
netns_path=/run/netns/$NODE_NETNS
in_node() { nsenter --net="$netns_path" -- "$@"; }

require_tools() {
  [ "$(id -u)" = 0 ] || die "the real node needs root (network namespace, containerd, kubelet): run as root, \
through sudo, or with CLUSTER_REAL_NODE=0 for kwok nodes only"
  local t
  for t in runc iptables socat nsenter ip buildah debootstrap catatonit conntrack; do
    command -v "$t" >/dev/null || die "$t is not installed; as root: apt-get install -y \
runc containernetworking-plugins buildah debootstrap iptables conntrack catatonit socat util-linux"
  done
  for t in bridge host-local loopback portmap; do
    [ -x "/usr/lib/cni/$t" ] || die "CNI plugin /usr/lib/cni/$t is missing (apt-get install containernetworking-plugins)"
  done
}

# The cgroup hierarchies (v1, and the hybrid host's empty cgroup2) the kubelet and runc put pods
# under: one root per cluster, so two clusters' kubelets never clean up each other's pods.
cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/*/; do
    if [ -e "$d/cgroup.procs" ]; then echo "${d%/}/$NODE_CGROUP"; fi
  done
}

network_up() {
  if [ ! -e "$netns_path" ]; then
    ip netns add "$NODE_NETNS"
  fi
  if ! ip link show "$NODE_VETH" >/dev/null 2>&1; then
    ip link add "$NODE_VETH" type veth peer name eth0 netns "$NODE_NETNS"
    ip addr add "$NODE_HOST_IP/30" dev "$NODE_VETH"
    ip link set "$NODE_VETH" up
    in_node ip addr add "$NODE_IP/30" dev eth0
    in_node ip link set eth0 up
    in_node ip link set lo up
    in_node ip route add default via "$NODE_HOST_IP"
  fi
  # The host reaches the pods through the node (an operator on the host reads each broker pod's
  # management API at its pod IP, as it does in a cluster). Gone with the veth.
  ip route replace "$NODE_POD_CIDR" via "$NODE_IP" dev "$NODE_VETH"
  # Bridged pod traffic must pass iptables (Services between pods on the same bridge).
  in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
}

# put FILE [PROCESS]: write stdin to FILE only when it differs (kube-proxy exits when its
# configuration file is rewritten, even with the same content); when it did differ and PROCESS
# runs, stop PROCESS so that `up` starts it again with the new configuration.
put() {
  local file=$1 process=${2:-}
  cat >"$file.new"
  if cmp -s "$file.new" "$file"; then
    rm -f "$file.new"
    return 0
  fi
  mv "$file.new" "$file"
  if [ -n "$process" ] && alive "$process"; then
    echo "    $(basename "$file") changed: restarting $process"
    stop_pid "$process"
  fi
}

write_configs() {
  mkdir -p "$node"/{cni/net.d,cni/ipam,containerd,kubelet,pod-logs,pki} "$run"
  put "$node/cni/net.d/10-pingpong.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pingpong",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$node/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  put "$node/containerd.toml" containerd <<EOF
# Generated by scripts/cluster/node.sh.
version = 3
root = '$node/containerd/root'
state = '$run/containerd'
[grpc]
  address = '$run/containerd.sock'
[ttrpc]
  address = '$run/containerd.sock.ttrpc'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$(image_ref pause)'
[plugins.'io.containerd.cri.v1.runtime']
  # Pod network namespaces under the state directory (not /run/netns): down.sh finds them there.
  netns_mounts_under_state_dir = true
  # The VM lacks CAP_SYS_RESOURCE: a pause container's oom_score_adj of -998 would fail.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$(command -v runc)'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$node/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
EOF
  put "$node/resolv.conf" </dev/null # pods resolve cluster names only (CoreDNS); nothing upstream
  put "$node/kubelet.yaml" kubelet <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
containerRuntimeEndpoint: unix://$run/containerd.sock
# This host has cgroup v1 hierarchies (plus an empty cgroup2) and no systemd as PID 1.
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failCgroupV1: false
failSwapOn: false
# The kubelet sets kernel.panic, kernel.panic_on_oops and vm.overcommit_memory; node.sh records
# the values before and restores them at cluster-down.
protectKernelDefaults: false
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: cluster.local
resolvConf: $node/resolv.conf
podLogsDir: $node/pod-logs
registerWithTaints:
  - {key: pingpong.dev/node, value: real, effect: NoSchedule}
maxPods: 60
# Images are imported here, never pulled: image garbage collection would lose them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Absolute disk thresholds: on a large shared disk 1 % is gigabytes, and a neighbour's build would
# get the node's pods evicted (ephemeral-storage) long before the disk is really full.
evictionHard: {memory.available: 200Mi, nodefs.available: 300Mi, imagefs.available: 300Mi, nodefs.inodesFree: 1%}
evictionPressureTransitionPeriod: 30s
serializeImagePulls: false
EOF
  put "$node/kube-proxy.yaml" kube-proxy <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $NODE_POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection:
  kubeconfig: $CLUSTER_DIR/kube-proxy.kubeconfig
conntrack:
  # conntrack sizing is host-wide (nf_conntrack_max): leave it alone.
  maxPerCore: 0
EOF
}

node_certs() {
  if [ ! -s "$pki/kubelet-client.crt" ]; then
    issue_cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME"
    issue_cert kubelet-serving "/CN=system:node:$NODE_NAME" \
      "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
    issue_cert kube-proxy "/CN=system:kube-proxy"
  fi
  # Both reach the API server through the relay on the host end of the veth.
  write_kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" default \
    "    client-certificate: $pki/kubelet-client.crt
    client-key: $pki/kubelet-client.key"
  write_kubeconfig "$CLUSTER_DIR/kube-proxy.kubeconfig" system:kube-proxy default \
    "    client-certificate: $pki/kube-proxy.crt
    client-key: $pki/kube-proxy.key"
  sed -i "s#https://127.0.0.1:$APISERVER_PORT#https://$NODE_HOST_IP:$APISERVER_PORT#" \
    "$CLUSTER_DIR/kubelet.kubeconfig" "$CLUSTER_DIR/kube-proxy.kubeconfig"
}

# image_ref NAME: the reference images/build.sh built for NAME.
image_ref() { awk -v n="$1" '$1 == n {print $2}' "$CLUSTER_DIR/images.txt"; }

import_images() {
  local name ref archive id mark err
  mkdir -p "$node/imported"
  while read -r name ref archive; do
    id=$(basename "$archive" .tar)
    mark="$node/imported/$name"
    # The mark alone is not enough: under disk pressure the kubelet deletes images it does not
    # use, which would leave every new pod in ImagePullBackOff (no registry to pull from).
    if [ -f "$mark" ] && [ "$(cat "$mark")" = "$id" ] &&
      ctr --address "$run/containerd.sock" -n k8s.io images ls -q "name==$ref" 2>/dev/null | grep -qxF "$ref"; then
      continue
    fi
    # ctr warns about cgroup v1 on every call: its output only matters when the import fails.
    if ! err=$(ctr --address "$run/containerd.sock" -n k8s.io images import --local "$archive" 2>&1 >/dev/null); then
      printf '%s\n' "$err" >&2
      die "could not import $ref into containerd"
    fi
    echo "$id" >"$mark"
    echo "    imported $ref"
  done <"$CLUSTER_DIR/images.txt"
}

kubelet_sysctls_record() {
  [ -s "$node/sysctl.orig" ] && return 0
  sysctl -e kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes >"$node/sysctl.orig"
}

# addons FILE: apply FILE with the @...@ values filled in.
addons() {
  sed -e "s#@COREDNS_IMAGE@#$(image_ref coredns)#" -e "s#@TRAEFIK_IMAGE@#$(image_ref traefik)#" \
    -e "s#@DNS_IP@#$CLUSTER_DNS_IP#" -e "s#@GATEWAY_NODE_PORT@#$GATEWAY_NODE_PORT#" \
    "$1" | kubectl apply -f - >/dev/null
}

up() {
  require_tools
  [ -s "$CLUSTER_DIR/images.txt" ] || die "no images list: run images/build.sh first (up.sh does)"
  mkdir -p "$node"
  step "real node $NODE_NAME: network namespace $NODE_NETNS ($NODE_IP), pods on $NODE_POD_CIDR"
  network_up
  write_configs
  node_certs
  local d
  for d in $(cgroup_dirs); do
    [ -d "$d" ] && continue
    mkdir -p "$d"
    # A new cpuset cgroup starts without CPUs and memory nodes: inherit the parent's.
    if [ -e "$d/cpuset.cpus" ]; then
      cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
      cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
    fi
  done

  step "API server relay $NODE_HOST_IP:$APISERVER_PORT -> 127.0.0.1:$APISERVER_PORT"
  start_bg apiserver-relay socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_HOST_IP,fork,reuseaddr" \
    "TCP:127.0.0.1:$APISERVER_PORT"
  # The `kubernetes` Service leads to the relay (the API server's own endpoint reconciler is off).
  host_endpoint_slice default kubernetes-pingpong-node kubernetes https "$APISERVER_PORT" |
    kubectl apply -f - >/dev/null

  step "containerd $CONTAINERD_VERSION (runc $(runc --version | sed -n '1s/runc version //p'))"
  start_bg containerd nsenter --net="$netns_path" -- containerd --config "$node/containerd.toml"
  wait_until "containerd's socket" ctr --address "$run/containerd.sock" version
  import_images

  step "kubelet $KUBERNETES_VERSION and kube-proxy (iptables mode)"
  kubelet_sysctls_record
  start_bg kubelet nsenter --net="$netns_path" -- kubelet --config "$node/kubelet.yaml" \
    --kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --root-dir "$node/kubelet" --cert-dir "$node/pki" \
    --node-labels "pingpong.dev/node=real,type=real" --v=1
  start_bg kube-proxy nsenter --net="$netns_path" -- kube-proxy --config "$node/kube-proxy.yaml"
  wait_until "node $NODE_NAME Ready" node_ready

  step "CoreDNS ($CLUSTER_DNS_IP)"
  addons scripts/cluster/node-addons.yaml
  CLUSTER_WAIT=${CLUSTER_NODE_WAIT:-300} wait_until "CoreDNS rolled out" \
    kubectl -n kube-system rollout status deployment/coredns --timeout=2s
  # The Gateway API's standard kinds Traefik watches (its informers never sync without them).
  local crd
  for crd in "$CLUSTER_DIR"/crds/gatewayclasses.yaml "$CLUSTER_DIR"/crds/gateways.yaml \
    "$CLUSTER_DIR"/crds/httproutes.yaml "$CLUSTER_DIR"/crds/referencegrants.yaml \
    "$CLUSTER_DIR"/node-crds/grpcroutes.yaml "$CLUSTER_DIR"/node-crds/backendtlspolicies.yaml; do
    kubectl apply --server-side -f "$crd" >/dev/null
  done
  wait_until "the Gateway API CRDs" kubectl wait --for=condition=Established --timeout=2s \
    crd/gatewayclasses.gateway.networking.k8s.io crd/gateways.gateway.networking.k8s.io \
    crd/httproutes.gateway.networking.k8s.io crd/referencegrants.gateway.networking.k8s.io \
    crd/grpcroutes.gateway.networking.k8s.io crd/backendtlspolicies.gateway.networking.k8s.io
  [ -n "$(image_ref traefik)" ] || die "no Traefik image in $CLUSTER_DIR/images.txt (images/build.sh builds it)"
  step "the Gateway (Traefik $TRAEFIK_VERSION, GatewayClass traefik, Gateway gateway-system/public)"
  addons scripts/cluster/gateway-traefik.yaml
  ports_free gateway-relay:"$GATEWAY_PORT"
  start_bg gateway-relay socat "TCP-LISTEN:$GATEWAY_PORT,bind=127.0.0.1,fork,reuseaddr" \
    "TCP:$NODE_IP:$GATEWAY_NODE_PORT"
  CLUSTER_WAIT=${CLUSTER_NODE_WAIT:-300} wait_until "Traefik rolled out and the Gateway programmed" gateway_ready
  echo "http://127.0.0.1:$GATEWAY_PORT" >"$CLUSTER_DIR/gateway-url"
  jaeger_up
}

# jaeger_up: Jaeger v2 on the host end of the veth, and the Service observability/jaeger that
# leads the pods to its OTLP receiver.
jaeger_up() {
  local bin
  rm -f "$CLUSTER_DIR/jaeger-url"
  if ! bin=$(scripts/observability/build.sh --cached jaeger 2>/dev/null | tail -n 1); then
    if ! command -v go >/dev/null; then
      step "no Jaeger: not built and Go is missing; traces stay off (install Go, then make cluster again)"
      return 0
    fi
    step "building Jaeger v2 from Go modules once (cold: several minutes on 2 cores)"
    bin=$(scripts/observability/build.sh jaeger | tail -n 1)
  fi
  step "Jaeger v2: OTLP $NODE_HOST_IP:$JAEGER_OTLP_PORT (Service observability/jaeger:4318), UI http://$NODE_HOST_IP:$JAEGER_QUERY_PORT"
  start_bg jaeger env JAEGER_LISTEN_HOST="$NODE_HOST_IP" JAEGER_OTLP_HTTP_PORT="$JAEGER_OTLP_PORT" \
    JAEGER_QUERY_PORT="$JAEGER_QUERY_PORT" JAEGER_QUERY_GRPC_PORT="$JAEGER_GRPC_PORT" \
    "$bin" --config "$PWD/scripts/observability/jaeger.yaml"
  wait_until "Jaeger's query API" curl -fsS "http://$NODE_HOST_IP:$JAEGER_QUERY_PORT/api/services"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: observability
---
apiVersion: v1
kind: Service
metadata:
  name: jaeger
  namespace: observability
spec:
  ports:
    - {name: otlp-http, port: 4318, protocol: TCP}
---
$(host_endpoint_slice observability jaeger-host jaeger otlp-http "$JAEGER_OTLP_PORT")
EOF
  echo "http://$NODE_HOST_IP:$JAEGER_QUERY_PORT" >"$CLUSTER_DIR/jaeger-url"
}

# host_endpoint_slice NAMESPACE NAME SERVICE PORT_NAME PORT: the EndpointSlice (YAML on stdout)
# that leads the selector-less Service SERVICE to PORT on the host end of the node's link.
host_endpoint_slice() {
  cat <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $2
  namespace: $1
  labels:
    kubernetes.io/service-name: $3
    endpointslice.kubernetes.io/managed-by: pingpong-cluster
addressType: IPv4
endpoints:
  - addresses: ["$NODE_HOST_IP"]
    conditions: {ready: true}
ports:
  - {name: $4, port: $5, protocol: TCP}
EOF
}

node_ready() {
  [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

gateway_ready() {
  kubectl -n gateway-system rollout status deployment/traefik --timeout=2s &&
    [ "$(kubectl -n gateway-system get gateway public -o jsonpath='{.status.conditions[?(@.type=="Programmed")].status}')" = True ]
}

down() {
  local sock=$run/containerd.sock ids id f
  # The kubelet first, so it restarts nothing; then every container of this containerd is
  # killed and deleted while containerd still runs.
  stop_pid kubelet
  stop_pid kube-proxy
  if [ -S "$sock" ] && alive containerd; then
    ids=$(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null || true)
    for id in $ids; do ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do
      ctr --address "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 ||
        { sleep 1; ctr --address "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true; }
      ctr --address "$sock" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  for name in jaeger gateway-relay apiserver-relay containerd; do stop_pid "$name"; done
  # Shims whose containerd is gone, by the pid files in its state directory.
  for f in "$run"/containerd/io.containerd.runtime.v2.task/*/*/shim.pid; do
    if [ -s "$f" ]; then kill -KILL "$(cat "$f")" 2>/dev/null || true; fi
  done
  # Mounts under the node's directories (Secret and projected volumes, overlay root filesystems,
  # pod network namespaces), deepest first.
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($node|$run)/" | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # This cluster's pod cgroups, deepest first.
  local d
  for d in $(cgroup_dirs); do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  # The node's network namespace holds its iptables rules, routes, bridge and the pods' veths.
  if [ -e "$netns_path" ]; then ip netns delete "$NODE_NETNS"; fi
  if ip link show "$NODE_VETH" >/dev/null 2>&1; then ip link delete "$NODE_VETH"; fi
  if [ -s "$node/sysctl.orig" ]; then
    sed 's/ = /=/' "$node/sysctl.orig" | xargs sysctl -qw || true
  fi
  # The kubelet's links to this node's container logs (its log directory is fixed).
  if [ -d /var/log/containers ]; then find /var/log/containers -maxdepth 1 -lname "$node/*" -delete; fi
  rm -rf "$run" "$node"
  rm -f "$CLUSTER_DIR/gateway-url" "$CLUSTER_DIR/jaeger-url"
}

stop_pid() { # NAME: TERM, up to 10 s, then KILL
  local pidfile="$CLUSTER_DIR/run/$1.pid" p i
  [ -s "$pidfile" ] || return 0
  p=$(cat "$pidfile")
  if kill -0 "$p" 2>/dev/null; then
    echo "stopping $1 (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
