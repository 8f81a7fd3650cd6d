# shellcheck shell=bash
# shellcheck disable=SC2034  # variables for the scripts that source this file
# The one place the local cluster's versions are pinned (scripts/cluster/*.sh and bench.py read them
# from here; the README names them). They fit together: Kubernetes 1.36 ships etcd 3.6, k8s-openapi 0.28's newest
# feature is v1_36, and each module builds with Go 1.26.
KUBERNETES_VERSION=v1.36.3   # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v4.3.1
# The Go toolchain these were built and checked with (older ones refuse the modules' go lines).
GO_MIN_VERSION=1.26
# Optional APIs the e2e suite installs (CRDs only, taken from the Go modules that ship them).
GATEWAY_API_VERSION=v1.6.3
PROMETHEUS_OPERATOR_VERSION=v0.88.0
# The real node beside the kwok ones (scripts/cluster/node.sh): kubelet and kube-proxy come from
# KUBERNETES_VERSION above; these are built by scripts/cluster/build-node.sh.
CONTAINERD_VERSION=v2.4.2    # containerd, containerd-shim-runc-v2, ctr (kubelet 1.36 supports 2.x)
RUNC_VERSION=v1.5.3          # built only when the host has no runc (Debian's works)
COREDNS_VERSION=v1.15.0      # cluster DNS (*.svc.cluster.local), runs as a pod
TRAEFIK_VERSION=v3.6.13      # the Gateway (v3.7.x needs modules the module proxy does not serve)
