"""What the Python benchmark drivers share: the machine line of a report and writing a report into
its own marked section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPUs, model, RAM, kernel and the installed RabbitMQ, for the first line of a report."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    version = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem} GiB RAM, Linux {platform.release()}, "
            f"RabbitMQ {version.splitlines()[-1] if version else 'unknown'}")


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def write_section(section: str, begin: str, end: str, heading: str, before: str) -> None:
    """Replaces the text between the markers `begin` and `end` of BENCHMARKS.md with `section`
    (which holds both markers); without them, adds `heading` and `section` before the heading
    `before` (or at the end)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        block = f"\n{heading}\n\n{section}\n"
        anchor = f"\n{before}"
        text = text.replace(anchor, block + anchor, 1) if anchor in text else text + block
    path.write_text(text)
