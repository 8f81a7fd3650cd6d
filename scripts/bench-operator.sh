#!/usr/bin/env bash
# Reconcile benchmark: N stacks (default 1000) reconciled against the in-memory API
# (kube-fake-client), release build. Prints total time, per-reconcile p50/p99 and peak RSS, and
# writes them with the machine description into the Operator section of BENCHMARKS.md.
#   scripts/bench-operator.sh [STACKS]        BENCH_WRITE=0 to only print
set -euo pipefail
cd "$(dirname "$0")/.."

stacks="${1:-1000}"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
target_dir=${CARGO_TARGET_DIR:-target}

step "building the benchmark (release)"
cargo build --release -p pingpong-operator --example bench_reconcile >&2

step "reconciling $stacks stacks"
results="$("$target_dir/release/examples/bench_reconcile" "$stacks")"
echo "$results"

cpu="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
machine="$(nproc) CPUs (${cpu:-unknown CPU}), ${mem} RAM, Linux $(uname -r), $(date -u +%Y-%m-%d)"

section="$(cat <<EOF
<!-- operator results: edit only this section -->
Command: \`make bench-operator\` (\`scripts/bench-operator.sh $stacks\`): a release build of
\`operator/examples/bench_reconcile.rs\` creates $stacks PingPongStacks (default spec, one namespace
each) in the in-memory API and runs the real reconcile (observe → plan → apply → report) on each,
then a second, steady-state round, one reconcile at a time. The in-memory API runs in the same
process with no network, so the figures are the reconcile code plus the in-memory API's own work
(JSON merges, managedFields), without API-server round trips. A reconcile reads the stack's three
Secrets, server-side applies every child, lists each of the 6 prunable child kinds (this benchmark
gives the reconcile no watch caches; the operator reads those instead), and writes the status and
Events when something changed; in a cluster the latency of those calls, not this CPU cost,
dominates. The next section counts the requests per reconcile on a real API server.

Machine: $machine; other jobs were running on the machine at the same time.

$results
EOF
)"

if [[ "${BENCH_WRITE:-1}" != 0 ]]; then
  python3 - "$section" <<'PY'
import re, sys
path = "BENCHMARKS.md"
text = open(path).read()
head, sep, rest = text.partition("## Operator (`make bench-operator`)")
if not sep:
    sys.exit("BENCHMARKS.md has no Operator section")
nxt = rest.find("\n## ")
tail = rest[nxt:] if nxt >= 0 else ""
open(path, "w").write(head + sep + "\n\n" + sys.argv[1].strip() + "\n" + tail)
PY
  step "wrote the Operator section of BENCHMARKS.md"
fi
