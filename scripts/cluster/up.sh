#!/usr/bin/env bash
# `make cluster`: a real Kubernetes control plane on this machine without Docker, with the operator
# installed by `helm install` and running on the host as the chart's ServiceAccount, and the sample
# stack Ready. Everything listens on 127.0.0.1; state lives in .cluster/ (git-ignored).
#
#   etcd, kube-apiserver (RBAC, OwnerReferencesPermissionEnforcement, audit log),
#   kube-controller-manager, kube-scheduler, kwok (three fake nodes, a default StorageClass whose
#   PVCs get bound), as root a real node (scripts/cluster/node.sh: kubelet, containerd, runc, CNI
#   bridge, kube-proxy, CoreDNS and the Gateway (Traefik), with images built here by
#   images/build.sh), then `helm install` of charts/pingpong-operator into pingpong-system, the
#   operator binary as a host process (token from the TokenRequest API), and the sample stack
#   applied and waited for (with the real node manifests/samples/local.yaml, whose HTTPRoute the
#   Gateway serves at the URL in .cluster/gateway-url).
#
# Pods of the namespace `default` run on the real node (the namespace's PodNodeSelector and
# PodTolerationRestriction annotations); every other namespace's pods go to the kwok nodes (the
# real node is tainted pingpong.dev/node=real:NoSchedule), where they are simulated.
#
# Running it twice starts nothing twice. `make cluster-down` (scripts/cluster/down.sh) stops exactly
# the processes this started, by their pid files.
#
# Environment:
#   CLUSTER_DIR            state directory (default .cluster)
#   CLUSTER_PORT_BASE      first of the loopback ports used (default 16440: apiserver +3, etcd +0/+1,
#                          controller-manager +7, scheduler +9, kwok +10, operator metrics +20/+21)
#   CLUSTER_SAMPLE         sample to apply and wait for (default manifests/samples/local.yaml
#                          with the real node, else minimal.yaml; empty applies none)
#   CLUSTER_OPERATOR       1 (default) runs the operator on the host; 0 leaves it to the caller
#   CLUSTER_REAL_NODE      1 adds the real node (needs root); 0: kwok nodes only; unset (default):
#                          the real node as root, kwok nodes only otherwise (saying so)
#   CLUSTER_WAIT           seconds to wait for each step (default 120)
#   CLUSTER_CONTROLLER_QPS client rate of kube-controller-manager and kube-scheduler towards the API
#                          server, as QPS/burst, e.g. 100/200, what managed control planes commonly
#                          run (make bench-operator-cluster's default); unset or `upstream`:
#                          upstream's defaults, 20/30 and 50/100
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/cluster/common.sh
source scripts/cluster/common.sh

real_node=${CLUSTER_REAL_NODE:-}
if [ -z "$real_node" ]; then
  if [ "$(id -u)" = 0 ]; then
    real_node=1
  else
    real_node=0
    cat <<'EOF'
==> skipping the real node (kubelet, containerd, CoreDNS, the Gateway): it needs root. Pods stay
    simulated by kwok and no Gateway URL is written; 'sudo make cluster' runs real containers,
    CLUSTER_REAL_NODE=0 says kwok nodes only on purpose.
EOF
  fi
fi
case $real_node in
  0 | 1) ;;
  *) die "CLUSTER_REAL_NODE must be 0 or 1, not '$real_node'" ;;
esac
if [ "$real_node" = 1 ] && [ "$(id -u)" != 0 ]; then
  die "the real node needs root (network namespace, containerd, kubelet): run 'sudo make cluster', \
or 'CLUSTER_REAL_NODE=0 make cluster' for kwok nodes only"
fi
bin=$(scripts/cluster/build.sh | tail -n 1)
mkdir -p "$CLUSTER_DIR"/{bin,pki,logs,run,data}
for tool in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok helm; do
  ln -sfn "$bin/$tool" "$CLUSTER_DIR/bin/$tool"
done
if [ "$real_node" = 1 ]; then
  node_bin=$(scripts/cluster/build-node.sh | tail -n 1)
  for tool in containerd containerd-shim-runc-v2 ctr; do ln -sfn "$node_bin/$tool" "$CLUSTER_DIR/bin/$tool"; done
  ln -sfn "$node_bin/crds" "$CLUSTER_DIR/node-crds"
  step "images (images/build.sh: Debian base, RabbitMQ, PostgreSQL, Redis, ping, pong, operator, CoreDNS, Traefik)"
  images/build.sh "$node_bin" "$CLUSTER_DIR/images.txt"
  image_ref() { awk -v n="$1" '$1 == n {print $2}' "$CLUSTER_DIR/images.txt"; }
  # The stacks' default ping and pong images (for the chart's values and the operator on the
  # host): the local builds of the same Dockerfile targets. The broker's default stays the chart's
  # (RabbitMQ 4.2, the Kubernetes peer discovery the kwok scenarios check in their rendered
  # objects). Stacks on the real node name the local broker image themselves
  # (manifests/samples/local.yaml, the e2e suite), whose three-node clusters the operator forms by
  # classic_config (RabbitMQ 3.10).
  printf 'PINGPONG_PING_IMAGE=%s\nPINGPONG_PONG_IMAGE=%s\n' \
    "$(image_ref ping)" "$(image_ref pong)" >"$CLUSTER_DIR/operator.env"
else
  rm -f "$CLUSTER_DIR/operator.env"
fi
# CRDs of optional APIs (Gateway API, ServiceMonitor) for the scenarios that need them.
ln -sfn "$bin/crds" "$CLUSTER_DIR/crds"
export PATH="$CLUSTER_DIR/bin:$PATH"
export KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"

step "certificates and kubeconfigs ($CLUSTER_DIR/pki)"
if [ ! -s "$pki/ca.crt" ]; then
  command -v openssl >/dev/null || die "openssl is not installed (Debian: apt-get install openssl)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pingpong-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  issue_cert apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_HOST_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert admin "/O=system:masters/CN=pingpong-local-admin"
  issue_cert controller-manager "/CN=system:kube-controller-manager"
  issue_cert scheduler "/CN=system:kube-scheduler"
  issue_cert kwok "/O=system:masters/CN=kwok"
  # The API server's client certificate towards kubelets (logs, exec, port-forward).
  issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
fi
for who in admin controller-manager scheduler kwok; do
  write_cert_kubeconfig "$who" "$CLUSTER_DIR/$who.kubeconfig"
done

ports_free etcd:"$ETCD_PORT" etcd:"$ETCD_PEER_PORT" kube-apiserver:"$APISERVER_PORT" \
  kube-controller-manager:"$KCM_PORT" kube-scheduler:"$SCHEDULER_PORT" kwok:"$KWOK_PORT"

step "etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT"
alive etcd || rm -f "$CLUSTER_DIR"/logs/audit*.log  # a new cluster, a new audit log
start_bg etcd etcd --name pingpong-local --data-dir "$CLUSTER_DIR/data/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "pingpong-local=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn
wait_until "etcd health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

step "kube-apiserver $KUBERNETES_VERSION on https://127.0.0.1:$APISERVER_PORT"
cat >"$CLUSTER_DIR/audit-policy.yaml" <<EOF
# Requests of ServiceAccounts outside kube-system (the operator, tests) at Metadata level: the e2e
# suite reads this log to prove the operator never got a 403. The lists of the operator's child
# kinds by ServiceAccounts of $OPERATOR_NAMESPACE (the operator's) also log the response as the API
# server wrote it, so the suite sees that the child watches are metadata-only on the wire
# (PartialObjectMetadataList). Only those lists: they happen when a watch starts or restarts,
# and never a Secret's (the operator reads those by name; their data stays out of the log).
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: RequestResponse
    userGroups: ["system:serviceaccounts:$OPERATOR_NAMESPACE"]
    verbs: ["list"]
    omitManagedFields: true
    resources:
      - {group: "", resources: [configmaps, services]}
      - {group: apps, resources: [deployments, statefulsets]}
      - {group: networking.k8s.io, resources: [networkpolicies, ingresses]}
      - {group: policy, resources: [poddisruptionbudgets]}
      - {group: gateway.networking.k8s.io, resources: [httproutes]}
      - {group: monitoring.coreos.com, resources: [servicemonitors, prometheusrules]}
      - {group: keda.sh, resources: [scaledobjects, triggerauthentications]}
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
EOF
start_bg kube-apiserver kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --endpoint-reconciler-type none \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins OwnerReferencesPermissionEnforcement,NodeRestriction,PodNodeSelector,PodTolerationRestriction \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
  --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --allow-privileged=true \
  --audit-policy-file "$CLUSTER_DIR/audit-policy.yaml" --audit-log-path "$CLUSTER_DIR/logs/audit.log" \
  --audit-log-maxsize 200 --audit-log-maxbackup 1 \
  --profiling=false
wait_until "kube-apiserver /readyz" kubectl get --raw /readyz

step "kube-controller-manager and kube-scheduler"
kcm_rate=() scheduler_rate=""
if [ -n "${CLUSTER_CONTROLLER_QPS:-}" ] && [ "$CLUSTER_CONTROLLER_QPS" != upstream ]; then
  [[ $CLUSTER_CONTROLLER_QPS =~ ^([0-9]+)/([0-9]+)$ ]] ||
    die "CLUSTER_CONTROLLER_QPS must be QPS/burst, e.g. 100/200, not '$CLUSTER_CONTROLLER_QPS'"
  kcm_rate=(--kube-api-qps "${BASH_REMATCH[1]}" --kube-api-burst "${BASH_REMATCH[2]}")
  scheduler_rate="  qps: ${BASH_REMATCH[1]}
  burst: ${BASH_REMATCH[2]}"
fi
start_bg kube-controller-manager kube-controller-manager "${kcm_rate[@]}" \
  --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*' --allocate-node-cidrs=false
cat >"$CLUSTER_DIR/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $CLUSTER_DIR/scheduler.kubeconfig
$scheduler_rate
leaderElection:
  leaderElect: false
EOF
start_bg kube-scheduler kube-scheduler --config "$CLUSTER_DIR/scheduler.yaml" \
  --authentication-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT"

step "kwok $KWOK_VERSION with three fake nodes and a default StorageClass"
stages="$bin/kwok-stage"
{
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
    volume/fast/pvc-provision.yaml volume/fast/pv-bind.yaml volume/fast/pv-delete.yaml \
    volume/fast/pvc-delete.yaml; do
    [ -f "$stages/$f" ] || die "kwok stage $f is missing from $stages"
    # Volumes of the StorageClass `standard` (kind's name for its default class) get provisioned.
    echo "---"; sed "s/'kwok-volume'/'standard'/g" "$stages/$f"
  done
} >"$CLUSTER_DIR/kwok-stages.yaml"
# kwok's pods get addresses in KWOK_POD_CIDR, where nothing answers: as root, the host routes it
# as unreachable (down.sh removes the route), so nothing sent to a simulated pod leaves the host.
if [ "$(id -u)" = 0 ]; then
  ip route replace unreachable "$KWOK_POD_CIDR" || die "could not route $KWOK_POD_CIDR as unreachable"
else
  echo "    not root: connections to kwok's pods ($KWOK_POD_CIDR) follow the default route"
fi
# kwok manages only its own (annotated) nodes: the real node's kubelet reports for itself.
start_bg kwok kwok --kubeconfig "$CLUSTER_DIR/kwok.kubeconfig" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr "$KWOK_POD_CIDR" --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
  --server-address "127.0.0.1:$KWOK_PORT" --config "$CLUSTER_DIR/kwok-stages.yaml"
wait_until "the default ServiceAccount exists" kubectl -n default get serviceaccount default
kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kwok.x-k8s.io/volume
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
EOF
for i in 0 1 2; do
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
    type: kwok
    topology.kubernetes.io/zone: zone-$i
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "250"}
  capacity: {cpu: "32", memory: 256Gi, pods: "250"}
EOF
done
wait_until "three Ready nodes" nodes_ready 3

if [ "$real_node" = 1 ]; then
  scripts/cluster/node.sh up
  # The namespace `default` runs its pods on the real node.
  kubectl annotate --overwrite namespace default >/dev/null \
    scheduler.alpha.kubernetes.io/node-selector=pingpong.dev/node=real \
    'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key":"pingpong.dev/node","operator":"Equal","value":"real","effect":"NoSchedule"}]'
fi

if [ "${CLUSTER_OPERATOR:-1}" = 1 ]; then
  step "helm upgrade --install charts/pingpong-operator (namespace $OPERATOR_NAMESPACE)"
  # upgrade --install: a second `make cluster` after a chart change (RBAC, values) applies it.
  images=()
  if [ "$real_node" = 1 ]; then
    images=(--set "stackImages.ping=$(image_ref ping)" --set "stackImages.pong=$(image_ref pong)")
  fi
  helm upgrade --install "$OPERATOR_RELEASE" charts/pingpong-operator -n "$OPERATOR_NAMESPACE" \
    --create-namespace "${images[@]}" >/dev/null
  start_operator operator "$OPERATOR_METRICS_PORT"
  wait_until "the operator holds the leader Lease" operator_leads operator
  wait_until "the operator's /readyz (leading, cache synced)" curl -fsS "http://127.0.0.1:$OPERATOR_METRICS_PORT/readyz"
fi

if [ "$real_node" = 1 ]; then default_sample=manifests/samples/local.yaml; else default_sample=manifests/samples/minimal.yaml; fi
sample=${CLUSTER_SAMPLE-$default_sample}
if [ -n "$sample" ]; then
  step "apply $sample and wait for Ready"
  kubectl apply -n default -f "$sample" >/dev/null
  name=$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$sample")
  kubectl wait -n default --for=condition=Ready "pingpongstack/$name" --timeout="${CLUSTER_STACK_WAIT:-300}s" >/dev/null ||
    { kubectl -n default get pingpongstack "$name" -o yaml >&2; tail -n 50 "$CLUSTER_DIR/operator.log" >&2; die "stack $name did not become Ready"; }
  kubectl get -n default pingpongstack "$name"
fi

if [ "$real_node" = 1 ]; then
  nodes="the real node $NODE_NAME for the namespace default, kwok nodes (simulated pods) for the others"
else
  nodes="kwok nodes; pods are simulated, never run"
fi
cat <<EOF

The local cluster is up (Kubernetes $KUBERNETES_VERSION, $nodes).
Use it with:
  export KUBECONFIG=$CLUSTER_DIR/admin.kubeconfig
  export PATH=$CLUSTER_DIR/bin:\$PATH
Operator log: $CLUSTER_DIR/operator.log   Stop everything: make cluster-down
EOF
if [ -s "$CLUSTER_DIR/gateway-url" ]; then
  url=$(cat "$CLUSTER_DIR/gateway-url")
  cat <<EOF
Gateway (Traefik, Gateway gateway-system/public): $url   (also in $CLUSTER_DIR/gateway-url)
  curl -X POST $url/ping -H 'content-type: application/json' -d '{"msg":"hello"}'
  curl $url/pong
EOF
fi
if [ -s "$CLUSTER_DIR/jaeger-url" ]; then
  url=$(cat "$CLUSTER_DIR/jaeger-url")
  cat <<EOF
Jaeger (traces of the stacks whose spec.observability.tracing.endpoint is
http://jaeger.observability:4318, as the sample's): $url   (also in $CLUSTER_DIR/jaeger-url)
  curl $url/api/traces/<trace id>
EOF
fi
