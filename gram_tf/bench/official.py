"""Our timing checked against LiteRT's official Python benchmark tool on the same artifacts and
threads (`gram-tf bench --check-official`). Both run in fresh processes, in interleaved rounds."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import GramTFError
from .litert import run_worker
from .logs import parse_log

OFFICIAL = "ai_edge_litert.tools.benchmark_litert_model"


def run_official(path, threads: int, runs: int = 50, warmup: int = 5) -> dict:
    """One run of the official tool (CPU, XNNPACK) -> parsed --result_json (latency in ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-m", OFFICIAL, f"--model={path}", f"--num_threads={threads}",
                               f"--num_runs={runs}", f"--warmup_runs={warmup}", f"--result_json={out}"],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise GramTFError(f"{path}: the official benchmark tool failed ({err})")
        return parse_log(out)


def check_official(files, threads=(1,), runs: int = 50, warmup: int = 5, rounds: int = 3) -> list[dict]:
    """Per (artifact, threads): mean latency by ours and by the official tool (median of `rounds`
    interleaved rounds) and their ratio official / ours."""
    rows = []
    for f in map(Path, files):
        for t in threads:
            ours, theirs = [], []
            for _ in range(rounds):
                ours.append(run_worker("tflite", f, t, runs, warmup, None)["latency_ms_mean"])
                theirs.append(run_official(f, t, runs, warmup)["latency_ms_mean"])
            o, p = float(np.median(ours)), float(np.median(theirs))
            rows.append({"file": f.name, "threads": t, "ours_ms_mean": round(o, 4), "official_ms_mean": round(p, 4),
                         "official_over_ours": round(p / o, 3) if o else None, "rounds": rounds})
    return rows
