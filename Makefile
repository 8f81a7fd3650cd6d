# pingpong-operator: one entry point for every workflow.
#   make local       run ping, pong, RabbitMQ and an nginx gateway on this machine (no Kubernetes)
#   make local-down  stop exactly what `make local` started
#   make test        every test (what CI runs)
#   make generate    regenerate every generated file (CRD, chart crds/, manifests/install.yaml, goldens)
#   make up / down   a kind cluster with the stack, via skaffold
#   make cluster     a real control plane here (no Docker), the operator on the host, a Ready sample stack
#   make cluster-down  stop exactly what `make cluster` started
#   make e2e         end-to-end suite (tests/e2e) against KUBECONFIG (make cluster, or kind after make up)
#   make bench       data-plane benchmark through nginx, then the PostgreSQL store (see BENCHMARKS.md)
#   make bench-store pong's PostgreSQL store and Redis cache benchmark alone
#   make profile     where ping's and pong's CPU goes under load (perf; reports in .local/profile/results)
#   make bench-operator  reconcile benchmark against the in-memory API, then on the local control plane
#   make bench-ha    quorum queue on a private 3-node RabbitMQ cluster vs classic on one node
#   make bench-autoscale  pong's autoscaler: a 100,000-message burst, replicas out, drained, back to zero
#   make bench-autoscale-cost  the autoscaler's rounds over 200 stacks: requests per minute and CPU
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

.PHONY: help
help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

.PHONY: build
build:
	cargo build --workspace --all-targets

.PHONY: release
release:
	cargo build --release --workspace --bins

.PHONY: fmt
fmt:
	cargo fmt --all

.PHONY: lint
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: venv
venv:
	scripts/venv.sh

.PHONY: test
test:
	scripts/test.sh

.PHONY: local
local:
	scripts/local.sh up

.PHONY: local-down
local-down:
	scripts/local.sh down

.PHONY: generate
generate: venv
	scripts/generate.sh

.PHONY: check-generated
check-generated: venv
	scripts/generate.sh --check

.PHONY: up
up:
	scripts/kind.sh up

.PHONY: down
down:
	scripts/kind.sh down

.PHONY: cluster
cluster:
	scripts/cluster/up.sh

.PHONY: cluster-down
cluster-down:
	scripts/cluster/down.sh

.PHONY: e2e
e2e:
	scripts/e2e.sh

.PHONY: bench
bench:
	scripts/bench.sh
	scripts/bench-store.sh
	scripts/bench-ha.sh
	scripts/bench-autoscale.sh

.PHONY: profile
profile:
	scripts/profile.sh

.PHONY: bench-store
bench-store:
	scripts/bench-store.sh

.PHONY: bench-operator
bench-operator:
	scripts/bench-operator.sh
	$(MAKE) bench-operator-cluster

.PHONY: bench-operator-cluster
bench-operator-cluster: venv
	.venv/bin/python scripts/cluster/bench.py --write

.PHONY: bench-ha
bench-ha:
	scripts/bench-ha.sh

.PHONY: bench-autoscale
bench-autoscale:
	scripts/bench-autoscale.sh

.PHONY: bench-autoscale-cost
bench-autoscale-cost:
	scripts/bench-autoscale-cost.sh
