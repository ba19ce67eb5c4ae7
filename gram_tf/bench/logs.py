"""Reading the official benchmark tools' output, so numbers measured on a phone or a board become
result rows beside this machine's.

Formats:
- TFLite's C++ `benchmark_model` and LiteRT's C++ `benchmark_litert_model` (tensorflow/lite/tools/
  benchmark/benchmark_model.cc, `BenchmarkLoggingListener::OnBenchmarkEnd`): a line
  `Inference timings in us: Init: N, First inference: N, Warmup (avg): X, Inference (avg): X`,
  the run statistics `count=N first=N curr=N min=N max=N avg=X std=N [p5=N median=N p95=N]`
  (microseconds; the last such line is the timed runs), `Graph: [PATH]` and `Num threads: [N]`.
- LiteRT's Python tool (`python -m ai_edge_litert.tools.benchmark_litert_model`): its printed
  `BENCHMARK RESULTS` block (milliseconds), with its log lines `Model: PATH` / `Num threads: N` when
  they were captured too (they go to stderr), or its `--result_json` file.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from ..errors import GramTFError

_CPP_TIMINGS = re.compile(r"Inference timings in us:\s*Init:\s*([\d.]+),\s*First inference:\s*([\d.]+),\s*"
                          r"Warmup \(avg\):\s*([\d.]+),\s*Inference \(avg\):\s*([\d.]+)")
_CPP_STATS = re.compile(r"count=(\d+)\s+first=([\d.]+)\s+curr=([\d.]+)\s+min=([\d.]+)\s+max=([\d.]+)\s+"
                        r"avg=([\d.]+)\s+std=([\d.]+)(?:\s+p5=([\d.]+)\s+median=([\d.]+)\s+p95=([\d.]+))?")
_CPP_GRAPH = re.compile(r"Graph:\s*\[([^\]]+)\]")
_CPP_THREADS = re.compile(r"Num threads:\s*\[(-?\d+)\]")
_PY_FIELD = re.compile(r"^(Model initialization|Warmup \(first\)|Inference \(avg\)|Inference \(min\)|"
                       r"Inference \(max\)|Inference \(median\)|Inference \(std\)|Inference \(p5\)|"
                       r"Inference \(p95\)):\s*([\d.]+) ms(?: \((\d+) runs\))?", re.M)
_PY_MODEL = re.compile(r"benchmark_litert_model: Model:\s+(\S.*)$", re.M)
_PY_THREADS = re.compile(r"benchmark_litert_model: Num threads:\s+(\d+)", re.M)

EXPECTED = ("a line 'Inference timings in us: Init: ..., Inference (avg): ...' (C++ benchmark_model / "
            "benchmark_litert_model), a 'BENCHMARK RESULTS' block (LiteRT's Python tool) or its --result_json")


def parse_log(path) -> dict:
    """One benchmark log -> {tool, model (path as logged, or None), threads (or None), latency columns
    in ms}. Raises GramTFError naming the file and the line it expected."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise GramTFError(f"{path}: cannot read benchmark log ({exc.strerror})") from None
    text = "\n".join(line for line in text.splitlines() if not line.startswith("#"))  # notes added by hand
    if text.lstrip().startswith("{"):
        return _parse_json(path, text)
    if "BENCHMARK RESULTS" in text:
        return _parse_python(path, text)
    if "Inference timings in us" in text:
        return _parse_cpp(path, text)
    raise GramTFError(f"{path}: not a benchmark log: expected {EXPECTED}")


def _parse_json(path: Path, text: str) -> dict:
    try:
        data = json.loads(text)
        lat = data["latency"]
        return {"tool": "benchmark_litert_model (Python, --result_json)", "model": data.get("model"),
                "threads": data.get("num_threads"), "latency_ms_mean": float(lat["avg_ms"]),
                "latency_ms_std": float(lat["std_ms"]), "latency_ms_p50": float(lat["median_ms"]),
                "latency_ms_min": float(lat["min_ms"]), "latency_ms_max": float(lat["max_ms"]),
                "init_ms": float(lat["init_ms"]), "first_ms": float(lat["warmup_first_ms"]),
                "runs": int(lat["num_runs"]), "model_size_mb": data.get("model_size_mb")}
    except (ValueError, KeyError, TypeError) as exc:
        raise GramTFError(f"{path}: not a benchmark_litert_model --result_json file (expected "
                          f"'latency' with avg_ms, median_ms, std_ms...; {type(exc).__name__}: {exc})") from None


def _parse_python(path: Path, text: str) -> dict:
    fields = {m.group(1): (float(m.group(2)), m.group(3)) for m in _PY_FIELD.finditer(text)}
    if "Inference (avg)" not in fields:
        raise GramTFError(f"{path}: BENCHMARK RESULTS block without the line 'Inference (avg): X ms (N runs)'")

    def get(key):
        return fields[key][0] if key in fields else None

    model = _PY_MODEL.search(text)
    threads = _PY_THREADS.search(text)
    runs = fields["Inference (avg)"][1]
    return {"tool": "benchmark_litert_model (Python)", "model": model.group(1).strip() if model else None,
            "threads": int(threads.group(1)) if threads else None, "latency_ms_mean": get("Inference (avg)"),
            "latency_ms_std": get("Inference (std)"), "latency_ms_p50": get("Inference (median)"),
            "latency_ms_min": get("Inference (min)"), "latency_ms_max": get("Inference (max)"),
            "init_ms": get("Model initialization"), "first_ms": get("Warmup (first)"),
            "runs": int(runs) if runs else None}


def _parse_cpp(path: Path, text: str) -> dict:
    timings = _CPP_TIMINGS.search(text)
    if not timings:
        raise GramTFError(f"{path}: expected a line 'Inference timings in us: Init: N, First inference: N, "
                          "Warmup (avg): X, Inference (avg): X'")
    init_us, first_us, _, avg_us = map(float, timings.groups())
    stats = list(_CPP_STATS.finditer(text))
    last = stats[-1] if stats else None  # the timed runs follow the warm-up statistics
    graph = _CPP_GRAPH.search(text)
    threads = _CPP_THREADS.search(text)
    tool = "benchmark_litert_model (C++)" if "benchmark_litert_model" in text else "benchmark_model (C++)"

    def ms(group: int) -> Optional[float]:
        return float(last.group(group)) / 1e3 if last and last.group(group) else None

    return {"tool": tool, "model": graph.group(1) if graph else None,
            "threads": int(threads.group(1)) if threads and int(threads.group(1)) > 0 else None,
            "latency_ms_mean": avg_us / 1e3, "latency_ms_std": ms(7), "latency_ms_p50": ms(9),
            "latency_ms_min": ms(4), "latency_ms_max": ms(5), "init_ms": init_us / 1e3, "first_ms": first_us / 1e3,
            "runs": int(last.group(1)) if last else None}
