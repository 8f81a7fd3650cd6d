"""Driver of scripts/bench-autoscale.sh: the autoscaler's step response on real processes (not a
test; nothing here is asserted beyond what the system test it runs asserts).

Runs tests/system/test_system_autoscale.py with the binaries of PINGPONG_BIN_DIR (release unless
BENCH_PROFILE=debug): a private RabbitMQ node with the
management API, a private PostgreSQL, pong replicas as host processes started and SIGTERMed as
`pingpong-operator autoscale` decides, a burst of AUTOSCALE_BURST (100,000) confirmed messages into
an empty queue with pong at zero, then a small burst. Renders the times from the burst to the first
replica, to the maximum, to an empty backlog and back to zero, and writes them into the autoscaling
section of BENCHMARKS.md (BENCH_WRITE=0 to skip).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_report import ROOT, load, machine, write_section

MARK_BEGIN = "<!-- autoscale results: written by scripts/bench-autoscale.sh; edit only this section -->"
MARK_END = "<!-- end of autoscale results -->"


def seconds(marks: dict[str, float], key: str) -> str:
    return f"{marks[key]:.1f} s" if key in marks else "-"


def render(report: dict, started: str, load_before: str, load_after: str) -> str:
    marks = report["marks"]
    wake = marks.get("wake", 0.0)
    rel = {k: v - wake for k, v in marks.items() if k.startswith("wake_")}
    lines = [
        MARK_BEGIN,
        f"Run of {started} on {machine()}; load average before: {load_before}, after: {load_after}. "
        f"{os.environ.get('BENCH_PROFILE', 'release').capitalize()} binaries; `pingpong-operator autoscale` deciding every 500 ms from the management API "
        f"(whose queue statistics refresh every 5 s), target {report['target']} messages per replica, "
        f"max {report['max_replicas']} replicas, min 0, scale-down delay {report['delay_seconds']} s; "
        "pong on PostgreSQL. Times from the start of the burst (the publisher's own run took "
        f"{report['fill_seconds'][0]:.1f} s for the burst).",
        "",
        "| step | messages | first replica | max replicas | backlog empty | back to zero |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| burst from zero | {report['burst']:,} | {seconds(marks, 'burst_first_replica')} | "
        f"{seconds(marks, 'burst_max')} | {seconds(marks, 'burst_drained')} | {seconds(marks, 'burst_zero')} |",
        f"| second burst (wake) | {report['small_burst']:,} | {seconds(rel, 'wake_first_replica')} | - | "
        f"{seconds(rel, 'wake_drained')} | {seconds(rel, 'wake_zero')} |",
        "",
        f"Stored {report['stored']:,} rows ({report['distinct']:,} distinct) of "
        f"{report['burst'] + report['small_burst']:,} confirmed; the broker redelivered {report['redelivered']}; "
        f"{report['decisions']} decisions.",
        MARK_END,
    ]
    return "\n".join(lines)


def main() -> int:
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="pp-bench-autoscale-") as tmp:
        out = Path(tmp) / "report.json"
        env = {**os.environ, "AUTOSCALE_REPORT": str(out), "CI": "true"}
        run = subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "-q", "-s", "-p", "no:cacheprovider",
                              str(ROOT / "tests" / "system" / "test_system_autoscale.py")], env=env, cwd=ROOT)
        if run.returncode != 0 or not out.exists():
            print("the autoscale run failed; nothing written", file=sys.stderr)
            return 1
        report = json.loads(out.read_text())
    section = render(report, started, load_before, load())
    print(section)
    if os.environ.get("BENCH_WRITE", "1") != "0":
        write_section(section, MARK_BEGIN, MARK_END,
                      "## Autoscaling pong: step response (`make bench-autoscale`, also run by `make bench`)",
                      "## Operator")
        print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
