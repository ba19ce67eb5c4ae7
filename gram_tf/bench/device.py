"""Which machine a result row comes from: CPU model, cores, the ISA features the kernels use,
OS/architecture, runtime version, and a user-given device label. No host or user names."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Optional

from ..report.schema import DEVICE_COLUMNS

# ISA features that decide which XNNPACK kernels run (x86 flags / ARM "Features" names)
X86_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "fphp": "fp16", "asimdhp": "fp16-simd",
                "sve": "sve", "sve2": "sve2", "bf16": "bf16"}


def cpu_flags(cpuinfo: Optional[str] = None) -> dict:
    """Model name, the ISA features that matter for int8/fp32 throughput, nominal MHz (Linux)."""
    info = {"cpu": platform.processor() or platform.machine(), "mhz": None, "flags": []}
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return info
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and info["cpu"] in ("", platform.machine(), platform.processor()):
            info["cpu"] = value
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(value)
        elif key == "flags" and not info["flags"]:
            have = set(value.split())
            info["flags"] = [f for f in X86_FEATURES if f in have]
        elif key == "Features" and not info["flags"]:
            have = set(value.split())
            info["flags"] = sorted({name for flag, name in ARM_FEATURES.items() if flag in have})
    return info


def litert_version() -> str:
    import importlib.metadata as md

    for pkg in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{pkg} {md.version(pkg)}"
        except md.PackageNotFoundError:
            continue
    return "unknown"


def device_info(label: Optional[str] = None) -> dict:
    """The device columns of this machine (report.schema.DEVICE_COLUMNS, in that order); `label` defaults
    to the CPU model."""
    flags = cpu_flags()
    values = {"device": label or flags["cpu"], "cpu": flags["cpu"], "cores": os.cpu_count(),
              "isa": "+".join(flags["flags"]) or None, "os": platform.system(), "arch": platform.machine(),
              "runtime_version": litert_version()}
    return {c: values[c] for c in DEVICE_COLUMNS}  # a schema device column this does not fill: KeyError


class NeighbourMeter:
    """How much CPU other processes used while we timed, in cores (Linux /proc; None elsewhere).

    A steady neighbour (a build, another benchmark) does not show as round-to-round spread: it slows
    every round alike and changes the ranking of multi-threaded models. The machine's busy time minus
    ours (this process and the timing workers, `pids`) over the wall time catches it."""

    def __init__(self, pids=()):
        self.pids = list(pids)
        self._start = None

    @staticmethod
    def _machine_busy_s() -> float:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")

    def _ours_s(self) -> float:
        total = sum(os.times()[:2])
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    stat = fh.read().rsplit(")", 1)[1].split()
                total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return total

    def start(self) -> "NeighbourMeter":
        try:
            self._start = (time.perf_counter(), self._machine_busy_s(), self._ours_s())
        except (OSError, ValueError, AttributeError):
            self._start = None
        return self

    def stop(self) -> Optional[float]:
        """Cores other processes kept busy on average since `start` (>= 0), or None if unknown."""
        if self._start is None:
            return None
        try:
            wall = time.perf_counter() - self._start[0]
            others = (self._machine_busy_s() - self._start[1]) - (self._ours_s() - self._start[2])
        except (OSError, ValueError):
            return None
        return max(0.0, others / wall) if wall > 0 else None
