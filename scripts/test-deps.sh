#!/usr/bin/env bash
# Install what `make test` needs and is missing, from Debian packages, like `make local` does: as
# root, or through sudo (without a password prompt, or with one on a terminal); otherwise stop and
# print the one command that installs it. `make test` (scripts/test.sh) and `.ci/run` run this
# first, so on a fresh machine no test finds its server missing.
#
#   servers      rabbitmq-server, postgresql (then trust for 127.0.0.1, see below), redis-server,
#                nginx-light
#   tools        python3 + venv, make, a C compiler, curl, shellcheck, wrk, jq, openssl
#   real node    runc, containernetworking-plugins, buildah, debootstrap, iptables, conntrack,
#                catatonit, socat, util-linux (nsenter), binutils (objcopy) — only when the e2e suite's real node runs
#                (root, CLUSTER_REAL_NODE not 0)
#
# The Rust toolchain and Go are not Debian packages of a usable version: their absence stops
# with where to get them. PINGPONG_INSTALL=0 never installs (it only names what is missing).
#
# PostgreSQL: the tests connect as `postgres` over 127.0.0.1 without a password. A PostgreSQL this
# script installed (or any, under CI=true: a CI machine is throwaway) gets `trust` rules for
# 127.0.0.1 and ::1 added once at the top of its pg_hba.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

have cargo || fail "cargo is not installed: install a Rust toolchain >= 1.89 with rustfmt and clippy (https://rustup.rs)"
have go || fail "go is not installed: the e2e suite builds its control plane with Go >= 1.26 (https://go.dev/dl)"

pkgs=()
have nginx || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx-light)
have wrk || pkgs+=(wrk)
have rabbitmq-server || [[ -x /usr/sbin/rabbitmq-server ]] || pkgs+=(rabbitmq-server)
have redis-server || pkgs+=(redis-server)
fresh_postgres=false
if ! have pg_ctlcluster; then
  pkgs+=(postgresql)
  fresh_postgres=true
fi
have python3 || pkgs+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
have make || pkgs+=(make)
have cc || pkgs+=(build-essential)
have curl || pkgs+=(curl)
have shellcheck || pkgs+=(shellcheck)
# The local control plane of the e2e suite (scripts/cluster/build.sh, up.sh).
have jq || pkgs+=(jq)
have openssl || pkgs+=(openssl)
# As root, up.sh routes kwok's pod range as unreachable (`ip route`).
((EUID != 0)) || have ip || [[ -x /usr/sbin/ip || -x /sbin/ip ]] || pkgs+=(iproute2)
# Its real node (scripts/cluster/node.sh) and images (images/build.sh), which need root.
if ((EUID == 0)) && [[ ${CLUSTER_REAL_NODE:-} != 0 ]]; then
  have runc || pkgs+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || pkgs+=(containernetworking-plugins)
  have buildah || pkgs+=(buildah)
  have debootstrap || [[ -x /usr/sbin/debootstrap ]] || pkgs+=(debootstrap)
  have iptables || [[ -x /usr/sbin/iptables ]] || pkgs+=(iptables)
  have conntrack || [[ -x /usr/sbin/conntrack ]] || pkgs+=(conntrack)
  have catatonit || pkgs+=(catatonit)
  have socat || pkgs+=(socat)
  have nsenter || pkgs+=(util-linux)
  have objcopy || pkgs+=(binutils)
fi

((${#pkgs[@]} == 0)) || install_packages "make test" "${pkgs[@]}"

if $fresh_postgres || [[ ${CI:-} == true ]]; then
  sudo=()
  ((EUID == 0)) || sudo=(sudo)
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    [[ -e $hba ]] || continue
    "${sudo[@]}" grep -q '^host all all 127.0.0.1/32 trust$' "$hba" ||
      "${sudo[@]}" sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  done
  # apt may have started the cluster already: make it read the new rules.
  for conf in /etc/postgresql/*/main; do
    [[ -e $conf ]] || continue
    version=$(basename "$(dirname "$conf")")
    "${sudo[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
  done
fi
