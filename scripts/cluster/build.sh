#!/usr/bin/env bash
# Build the local cluster's binaries from Go modules only (no Docker, no release downloads):
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, the real node's kubelet and
# kube-proxy, etcd, kwok and helm, at the
# versions in scripts/cluster/versions.sh. Each version is built once and cached outside git in
# $PINGPONG_CLUSTER_CACHE (default ~/.cache/pingpong-operator/cluster); a second run is instant.
# Prints the directory that holds the binaries on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/cluster/versions.sh
source "$here/versions.sh"

cache=${PINGPONG_CLUSTER_CACHE:-$HOME/.cache/pingpong-operator/cluster}
bin="$cache/bin-k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
say() { printf '  [cluster build] %s\n' "$*" >&2; }
die() { printf 'cluster build: %s\n' "$*" >&2; exit 1; }

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok helm)
have_all() {
  local t
  for t in "${want[@]}"; do [ -x "$bin/$t" ] || return 1; done
  [ -d "$bin/kwok-stage" ] && [ -f "$bin/crds/servicemonitors.yaml" ] && [ -f "$bin/crds/httproutes.yaml" ]
}
if have_all; then echo "$bin"; exit 0; fi

command -v go >/dev/null || die "Go is not installed: Go >= $GO_MIN_VERSION is needed to build the control plane (https://go.dev/dl, or your distribution's golang package)"
gov=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$GO_MIN_VERSION" "$gov" | sort -V | head -n1)" != "$GO_MIN_VERSION" ]; then
  die "Go $gov is too old: the Kubernetes $KUBERNETES_VERSION modules need Go >= $GO_MIN_VERSION"
fi
command -v jq >/dev/null || die "jq is not installed (Debian: apt-get install jq)"
go env GOPROXY | grep -qv '^off$' || die "GOPROXY is off: the build needs the Go module proxy"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

# A throwaway module per piece, so the pieces' requirements never meet.
module_dir() {
  local d="$cache/src/$1"
  mkdir -p "$d"
  [ -f "$d/go.mod" ] || (cd "$d" && go mod init "pingpong.local/build/$1" >/dev/null 2>&1)
  echo "$d"
}

build_kubernetes() { # OUT_DIR COMMAND...
  local out=$1 d staging gomod date ld=() pkgs=() c
  shift
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  d=$(module_dir "kubernetes-$KUBERNETES_VERSION")
  staging="v0.${KUBERNETES_VERSION#v1.}"
  say "kubernetes $KUBERNETES_VERSION (staging modules $staging): resolving modules"
  gomod=$(cd "$d" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | jq -r .GoMod)
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging
  # paths that only exist in its own repository: replace each with its published tag instead.
  (
    cd "$d"
    go mod edit -json "$gomod" | jq -r '.Replace[] | select(.New.Path | startswith("./staging")) | .Old.Path' |
      while read -r m; do go mod edit -replace="$m=$m@$staging"; done
    go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
  )
  date=2026-01-01T00:00:00Z
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=("-X $pkg.gitVersion=$KUBERNETES_VERSION" "-X $pkg.gitMajor=1" "-X $pkg.gitMinor=$minor"
      "-X $pkg.gitTreeState=clean" "-X $pkg.gitCommit=0000000000000000000000000000000000000000"
      "-X $pkg.buildDate=$date")
  done
  say "kubernetes $KUBERNETES_VERSION: go build $* (cold: 15-30 min and several GB of memory on 2 cores)"
  ( cd "$d" && go build -trimpath -ldflags "-s -w ${ld[*]}" -o "$out/" "${pkgs[@]}" ) ||
    die "go build of Kubernetes $KUBERNETES_VERSION failed (see above)"
}

kubernetes_commands=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
# A cache made before the real node existed lacks kubelet and kube-proxy: add them beside the
# others (running clusters use that directory, so it is never moved away). Go's build cache still
# holds the shared packages, so this mostly compiles the two commands' own packages and links.
if [ -x "$bin/kubectl" ] && [ -f "$bin/crds/httproutes.yaml" ] && [ ! -d "$bin.tmp" ]; then
  missing=()
  for t in kubelet kube-proxy; do [ -x "$bin/$t" ] || missing+=("$t"); done
  rm -rf "$bin.add" && mkdir -p "$bin.add"
  build_kubernetes "$bin.add" "${missing[@]}"
  mv "$bin.add"/* "$bin/" && rmdir "$bin.add"
  have_all || die "binaries are missing in $bin"
  echo "$bin"
  exit 0
fi
[ -d "$bin" ] && [ ! -d "$bin.tmp" ] && mv "$bin" "$bin.tmp"  # complete an older partial cache
mkdir -p "$bin.tmp"

build_etcd() {
  local d
  d=$(module_dir "etcd-$ETCD_VERSION")
  say "etcd $ETCD_VERSION"
  # etcd's server module has replace directives, so `go install ...@version` is refused.
  ( cd "$d" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
    go build -trimpath -ldflags "-s -w" -o "$bin.tmp/etcd" go.etcd.io/etcd/server/v3 ) ||
    die "go build of etcd $ETCD_VERSION failed"
}

build_installable() { # name module-path version [ldflags]
  local d
  d=$(module_dir "$1-$3")
  say "$1 $3"
  ( cd "$d" && go get "$2@$3" >/dev/null 2>&1 &&
    go build -trimpath -ldflags "-s -w ${4:-}" -o "$bin.tmp/$1" "$2" ) || die "go build of $1 $3 failed"
}

[ -x "$bin.tmp/etcd" ] || build_etcd
[ -x "$bin.tmp/kwok" ] || build_installable kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
[ -x "$bin.tmp/helm" ] || build_installable helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
# One `go build` for the six Kubernetes commands: they share most packages.
if [ ! -x "$bin.tmp/kubectl" ] || [ ! -x "$bin.tmp/kubelet" ] || [ ! -x "$bin.tmp/kube-proxy" ]; then
  build_kubernetes "$bin.tmp" "${kubernetes_commands[@]}"
fi

# kwok has no built-in stages: keep the ones its module ships next to the binaries.
kwokdir=$(cd "$(module_dir "kwok-$KWOK_VERSION")" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | jq -r .Dir)
[ -d "$kwokdir/kustomize/stage" ] || die "kwok $KWOK_VERSION module has no kustomize/stage directory"
rm -rf "$bin.tmp/kwok-stage" && cp -r "$kwokdir/kustomize/stage" "$bin.tmp/kwok-stage" && chmod -R u+w "$bin.tmp/kwok-stage"

# The optional APIs' CRDs (Gateway API, Prometheus Operator's ServiceMonitor), from their modules.
crd_module() { cd "$(module_dir crds)" && go mod download -json "$1" | jq -r .Dir; }
gw=$(crd_module "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
po=$(crd_module "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
mkdir -p "$bin.tmp/crds"
for r in gatewayclasses gateways httproutes referencegrants; do
  cp "$gw/config/crd/standard/gateway.networking.k8s.io_$r.yaml" "$bin.tmp/crds/$r.yaml" ||
    die "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION has no $r CRD"
done
cp "$po/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$bin.tmp/crds/servicemonitors.yaml" ||
  die "prometheus-operator@$PROMETHEUS_OPERATOR_VERSION has no ServiceMonitor CRD"
chmod -R u+w "$bin.tmp/crds"

rm -rf "$bin" && mv "$bin.tmp" "$bin"
have_all || die "build finished but binaries are missing in $bin"
say "built into $bin"
echo "$bin"
