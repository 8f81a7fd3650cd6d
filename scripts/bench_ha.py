"""Driver of scripts/bench-ha.sh: quorum queue on a private three-node cluster vs classic queue on
a private single node, same machine, same run (not a test; nothing is asserted).

For each setup it starts release ping and pong (quorum: ping on node 0, pong on node 1, pong
declares the queue so its leader is on node 1) and an nginx gateway on free ports, then measures:
  - the broker's ceiling: `pingpong-loadgen ceiling` (persistent, confirms, 256 in flight) on a
    queue of the setup's type;
  - POST /ping through nginx with wrk at 16 and 64 connections (--latency): req/s, p50/p99, errors;
  - CPU seconds per 1,000 acknowledged pings (ping's published counter) for ping, pong, nginx and
    the broker (all three nodes for quorum), from /proc/<pid>/stat during each wrk run.
Prints a markdown report and, unless BENCH_WRITE=0, writes it into BENCHMARKS.md between the
broker-HA markers. Reuses the system tests' fixtures (tests/system/broker_cluster.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "system"))

from bench_report import load, machine, write_section  # noqa: E402
from broker_cluster import BrokerCluster  # noqa: E402
from system_helpers import Broker, PrivateBroker, Stack, base_env, binaries  # noqa: E402

DURATION = int(os.environ.get("BENCH_DURATION", "15"))
CEILING_SECONDS = int(os.environ.get("BENCH_CEILING_SECONDS", "10"))
CONNECTIONS = (16, 64)
MARK_BEGIN = "<!-- broker-ha results: written by scripts/bench-ha.sh; edit only this section -->"
MARK_END = "<!-- end of broker-ha results -->"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def metric(url: str, name: str) -> float:
    text = subprocess.run(["curl", "-fsS", "--max-time", "5", f"{url}/metrics"], capture_output=True,
                          text=True, check=True).stdout
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


@dataclass
class Setup:
    name: str
    queue_type: str
    ping_addresses: str
    pong_addresses: str
    broker: Broker
    broker_pids: list[int]


def run_setup(setup: Setup, bins: dict[str, Path], workdir: Path) -> dict[str, object]:
    stack = Stack(bins=bins, broker=setup.broker, workdir=workdir)
    env = {"RABBITMQ_QUEUE_TYPE": setup.queue_type, "RUST_LOG": "warn"}
    result: dict[str, object] = {"setup": setup.name}
    try:
        stack.start_pong({**env, "RABBITMQ_ADDRESSES": setup.pong_addresses})
        stack.wait_ready("pong", timeout=90)
        stack.start_ping({**env, "RABBITMQ_ADDRESSES": setup.ping_addresses})
        stack.wait_ready("ping", timeout=90)
        stack.start_gateway()
        stack.wait_gateway()

        tool_env = base_env()
        tool_env.update(setup.broker.env("unused"))
        tool_env.update({"RABBITMQ_QUEUE_TYPE": setup.queue_type, "RABBITMQ_ADDRESSES": setup.pong_addresses})
        ceiling = subprocess.run([str(bins["pingpong-loadgen"]), "ceiling", "--seconds", str(CEILING_SECONDS),
                                  "--in-flight", "256"], capture_output=True, text=True, env=tool_env,
                                 check=True, timeout=CEILING_SECONDS + 120)
        result["ceiling"] = json.loads(ceiling.stdout)["msg_per_s"]

        nginx = stack.procs["nginx"].pid
        groups = {"ping": lambda: [stack.procs["ping"].pid], "pong": lambda: [stack.procs["pong"].pid],
                  "nginx": lambda: [nginx, *children(nginx)], "broker": lambda: setup.broker_pids}
        for conns in CONNECTIONS:
            before = {k: cpu_seconds(f()) for k, f in groups.items()}
            published = metric(stack.ping_url, "pingpong_ping_messages_published_total")
            wrk = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{DURATION}s", "--timeout", "10s", "--latency",
                                  "-s", "services/loadgen/wrk/post-ping.lua", f"{stack.gateway_url}/ping"],
                                 capture_output=True, text=True, cwd=ROOT, check=True, timeout=DURATION + 60)
            after = {k: cpu_seconds(f()) for k, f in groups.items()}
            acked = metric(stack.ping_url, "pingpong_ping_messages_published_total") - published
            report = json.loads(re.search(r"^BENCH_JSON (.*)$", wrk.stdout, re.M).group(1))  # type: ignore[union-attr]
            errors = sum(report[k] for k in ("non2xx", "connect_errors", "read_errors", "write_errors", "timeouts"))
            per_1000 = {k: (after[k] - before[k]) / (acked / 1000) if acked else float("nan") for k in groups}
            result[f"c{conns}"] = {"rps": report["rps"], "p50": report["p50_ms"], "p99": report["p99_ms"],
                                   "errors": errors, "acked": int(acked), "cpu_per_1000": per_1000}
    finally:
        stack.stop_all()
        subprocess.run([str(bins["pingpong-loadgen"]), "delete-queue", stack.queue, stack.dead_queue],
                       capture_output=True, env={**base_env(), **setup.broker.env("unused"),
                                                 "RABBITMQ_ADDRESSES": setup.pong_addresses})
    return result


def render(results: list[dict[str, object]], machine: str, started: str, load: tuple[str, str]) -> str:
    lines = [
        MARK_BEGIN,
        f"Run of {started} on {machine}; load average before: {load[0]}, after: {load[1]}. "
        "Everything (wrk, nginx, ping, pong, every broker node) shares these CPUs. Command: "
        "`scripts/bench-ha.sh` (release build, RUST_LOG=warn, wrk -t2 --latency through nginx on "
        f"127.0.0.1 for {DURATION} s per row, ceiling {CEILING_SECONDS} s with 256 in flight). "
        "quorum: private three-node cluster, ping on node 0, pong and the queue leader on node 1; "
        "classic: private single node.",
        "",
        "| setup | connections | req/s | p50 / p99 (ms) | errors | acknowledged | CPU s per 1,000 acknowledged: ping / pong / nginx / broker |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for conns in CONNECTIONS:
            row = r[f"c{conns}"]
            assert isinstance(row, dict)
            cpu = row["cpu_per_1000"]
            lines.append(f"| {r['setup']} | {conns} | {row['rps']:.0f} | {row['p50']:.2f} / {row['p99']:.2f} | "
                         f"{row['errors']} | {row['acked']} | {cpu['ping']:.3f} / {cpu['pong']:.3f} / "
                         f"{cpu['nginx']:.3f} / {cpu['broker']:.3f} |")
    lines += ["", "| setup | broker ceiling (msg/s) | ping at 64 connections / ceiling |", "| --- | --- | --- |"]
    for r in results:
        row = r["c64"]
        assert isinstance(row, dict)
        ceiling = float(r["ceiling"])  # type: ignore[arg-type]
        lines.append(f"| {r['setup']} | {ceiling:.0f} | {100 * row['rps'] / ceiling:.0f}% |")
    lines.append(MARK_END)
    return "\n".join(lines)


def main() -> None:
    os.environ.setdefault("PINGPONG_BIN_DIR", str(ROOT / "target" / "release"))
    bins = binaries()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load()
    cluster = BrokerCluster()
    single = PrivateBroker()
    results = []
    with tempfile.TemporaryDirectory(prefix="pp-bench-ha-") as tmp:
        try:
            print("==> starting a private three-node cluster and a private single node", flush=True)
            cluster.start()
            single.start()
            setups = [
                Setup("classic, 1 node", "classic", f"127.0.0.1:{single.port}", f"127.0.0.1:{single.port}",
                      single.address, [p for p in [single_pid(single)] if p]),
                Setup("quorum, 3 nodes", "quorum", cluster.addresses([0, 1, 2]), cluster.addresses([1, 2, 0]),
                      cluster.broker(0), [p for n in cluster.nodes if (p := n.beam_pid())]),
            ]
            for setup in setups:
                print(f"==> {setup.name}", flush=True)
                workdir = Path(tmp) / setup.queue_type
                workdir.mkdir()
                results.append(run_setup(setup, bins, workdir))
        finally:
            single.destroy()
            cluster.destroy()
    section = render(results, machine(), started, (load_before, load()))
    print(section)
    if os.environ.get("BENCH_WRITE", "1") != "0":
        write_section(section, MARK_BEGIN, MARK_END,
                      "## Broker HA: quorum on three nodes vs classic on one (`make bench-ha`)", "## Operator")
        print("wrote BENCHMARKS.md")


def single_pid(broker: PrivateBroker) -> int | None:
    pid_file = broker.dir / "rabbitmq.pid"
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    return int(text) if text.isdigit() else None


if __name__ == "__main__":
    main()
