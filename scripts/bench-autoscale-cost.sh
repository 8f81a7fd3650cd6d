#!/usr/bin/env bash
# The autoscaler's cost with many stacks: N autoscaled stacks (default 200) in the in-memory API,
# a stub RabbitMQ management API on 127.0.0.1, one minute's worth of the real autoscaler's rounds
# (release build of operator/examples/bench_autoscale.rs). Prints the requests per round and per
# minute and the operator's CPU, and writes them with the machine description into the
# "Autoscaler cost" section of BENCHMARKS.md.
#   scripts/bench-autoscale-cost.sh [STACKS]   BENCH_WRITE=0 to only print;
#                                              BENCH_PROFILE=dev for a debug build (less disk)
set -euo pipefail
cd "$(dirname "$0")/.."

stacks="${1:-200}"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
target_dir=${CARGO_TARGET_DIR:-target}

profile=${BENCH_PROFILE:-release}
case $profile in
  release) out=release build="release build" ;;
  dev) out=debug build="debug build" ;;
  *) echo "BENCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac

step "building the benchmark ($build)"
cargo build --profile "$profile" -p pingpong-operator --example bench_autoscale >&2

step "one minute of autoscaler rounds over $stacks stacks"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
results="$("$target_dir/$out/examples/bench_autoscale" "$stacks")"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "$results"

cpu="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
machine="$(nproc) CPUs (${cpu:-unknown CPU}), ${mem} RAM, Linux $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"

section="$(cat <<SECTION
<!-- autoscaler cost results: written by scripts/bench-autoscale-cost.sh; edit only this section -->
Command: \`make bench-autoscale-cost\` (\`BENCH_PROFILE=$profile scripts/bench-autoscale-cost.sh $stacks\`): a
$build of \`operator/examples/bench_autoscale.rs\` puts $stacks autoscaled PingPongStacks (one
namespace each, with their credentials Secrets) into the in-memory API (kube-fake-client) and
runs the operator's own autoscaler rounds (\`Autoscaler::round\`, the code the leader runs every
\`AUTOSCALE_INTERVAL_SECONDS\`) back to back, one minute's worth at the default 5 s. One stub
management API on 127.0.0.1 answers every queue (a steady backlog below the target, so the first
round writes each stack's first decision and later rounds write nothing), so the broker side is
a local HTTP round trip, not $stacks brokers. Kubernetes requests are counted at the in-memory
API by verb; operator CPU is the process's user+system time minus the stub server's thread, and
includes the in-memory API's own handling of the requests.

Machine: $machine; load average before: $load_before, after: $load_after (other jobs shared the machine).

$results
<!-- end of autoscaler cost results -->
SECTION
)"

if [[ "${BENCH_WRITE:-1}" != 0 ]]; then
  python3 - "$section" <<'PY'
import sys
path = "BENCHMARKS.md"
text = open(path).read()
title = "## Autoscaler cost with many stacks (`make bench-autoscale-cost`)"
start = text.find(title)
if start < 0:
    # New section, after the autoscaling step response.
    anchor = text.find("## Operator (`make bench-operator`)")
    if anchor < 0:
        sys.exit("BENCHMARKS.md has no Operator section to put the autoscaler cost before")
    text = text[:anchor] + title + "\n\n" + "<!-- end of autoscaler cost results -->\n\n" + text[anchor:]
    start = text.find(title)
begin = text.find("<!--", start)
end_marker = "<!-- end of autoscaler cost results -->"
end = text.find(end_marker, begin) + len(end_marker)
open(path, "w").write(text[:begin] + sys.argv[1].strip() + text[end:])
PY
  step "wrote the autoscaler cost section of BENCHMARKS.md"
fi
