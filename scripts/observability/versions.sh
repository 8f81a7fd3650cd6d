# shellcheck shell=bash
# shellcheck disable=SC2034  # variables for the scripts that source this file
# The one place the observability tools' versions are pinned (scripts/observability/build.sh builds
# them from Go modules; the README names them).
PROMETHEUS_VERSION=v0.316.0   # github.com/prometheus/prometheus: cmd/promtool (`promtool test rules`)
JAEGER_VERSION=v1.75.0        # github.com/jaegertracing/jaeger: cmd/jaeger (Jaeger v2, OTLP + UI)
