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
import math
import re
from pathlib import Path
from typing import Optional

from ..errors import GramTFError
from ..io_utils import read_capped

# Numbers are captured as any token and checked by _Log.number, so '1.2.3', '...' or 'nan' is a
# one-line error naming the line instead of a parse failure somewhere else.
_N = r"([^\s,]+)"
_CPP_TIMINGS = re.compile(rf"Inference timings in us:\s*Init:\s*{_N},\s*First inference:\s*{_N},\s*"
                          rf"Warmup \(avg\):\s*{_N},\s*Inference \(avg\):\s*{_N}")
_CPP_STATS = re.compile(rf"count={_N}\s+first={_N}\s+curr={_N}\s+min={_N}\s+max={_N}\s+"
                        rf"avg={_N}\s+std={_N}(?:\s+p5={_N}\s+median={_N}\s+p95={_N})?")
_CPP_GRAPH = re.compile(r"Graph:\s*\[([^\]\n]+)\]")
_CPP_THREADS = re.compile(r"Num threads:\s*\[(-?\d{1,6})\]")
_CPP_SIZE = re.compile(rf"The input model file size \(MB\):\s*{_N}")  # bytes / 1e6 (benchmark_model.cc)
_PY_FIELD = re.compile(rf"^(Model initialization|Warmup \(first\)|Inference \(avg\)|Inference \(min\)|"
                       rf"Inference \(max\)|Inference \(median\)|Inference \(std\)|Inference \(p5\)|"
                       rf"Inference \(p95\)):[ \t]*{_N} ms(?: \({_N} runs\))?", re.M)
_PY_MODEL = re.compile(r"benchmark_litert_model: Model:[ \t]+(\S.*)$", re.M)
_PY_THREADS = re.compile(r"benchmark_litert_model: Num threads:[ \t]+(\d{1,6})", re.M)
_PY_SIZE = re.compile(rf"benchmark_litert_model: Model size:[ \t]+{_N} MB", re.M)  # MiB, 2 decimals

EXPECTED = ("a line 'Inference timings in us: Init: ..., Inference (avg): ...' (C++ benchmark_model / "
            "benchmark_litert_model), a 'BENCHMARK RESULTS' block (LiteRT's Python tool) or its --result_json")
MAX_LOG_BYTES = 64 << 20  # a benchmark log is kilobytes; never read a device or a huge file whole
MB, MIB = 1e6, float(2 ** 20)
# Latencies must be > 0 (the row divides by them); std, init and first may be 0 (one run, no warm-up)
_POSITIVE = ("latency_ms_mean", "latency_ms_p50", "latency_ms_min", "latency_ms_max")


class _Log:
    """The log's text and name, for numbers checked where they are read: finite, in range, and
    otherwise a one-line error naming the file and the line."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def line(self, pos: int) -> int:
        return self.text.count("\n", 0, max(pos, 0)) + 1

    def fail(self, pos: int, message: str):
        raise GramTFError(f"{self.path}, line {self.line(pos)}: {message}")

    def number(self, raw, pos: int, what: str, integer: bool = False, positive: bool = False):
        """`raw` (a token of the text or a JSON value) as a finite number >= 0 (> 0 when `positive`,
        >= 1 and whole when `integer`)."""
        value = None
        if isinstance(raw, str):
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                value = None
        elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = raw
        ok = (value is not None and math.isfinite(value) and value >= 0 and (value > 0 or not positive)
              and (not integer or (value == int(value) and value >= 1)))
        if not ok:
            shown = raw if isinstance(raw, str) else json.dumps(raw)
            want = "a whole number >= 1" if integer else "a finite number > 0" if positive else "a finite number >= 0"
            self.fail(pos, f"{what} reads {shown[:40]!r}; expected {want}: fix or re-run the benchmark")
        return int(value) if integer else float(value)

    def size(self, raw, pos: int, unit: float, digits: int) -> dict:
        """The logged model size: bytes, the rounding of the printed figure, and its line."""
        mb = self.number(raw, pos, "the model size")  # 0.00: under 5 KiB, printed to 2 decimals
        return {"bytes": mb * unit, "slack": 0.5 * 10 ** -digits * unit, "shown": f"{raw} MB", "line": self.line(pos)}


def parse_log(path) -> dict:
    """One benchmark log -> {tool, model (path as logged, or None), threads (or None), latency columns
    in ms, runs, model_size (None, or the logged size: bytes, slack, line)}. Every figure is checked
    (finite, > 0, runs >= 1); a bad one or a missing line is a GramTFError naming the file and line."""
    path = Path(path)
    text = read_capped(path, MAX_LOG_BYTES, "benchmark log").decode("utf-8", errors="replace")
    # notes added by hand are blanked, not removed, so line numbers stay those of the file
    text = "\n".join("" if line.startswith("#") else line for line in text.split("\n"))
    log = _Log(path, text)
    if text.lstrip().startswith("{"):
        parsed = _parse_json(log)
    elif "BENCHMARK RESULTS" in text:
        parsed = _parse_python(log)
    elif "Inference timings in us" in text:
        parsed = _parse_cpp(log)
    else:
        raise GramTFError(f"{path}: not a benchmark log: expected {EXPECTED}")
    return parsed


def _parse_json(log: _Log) -> dict:
    try:
        data = json.loads(log.text)
    except (ValueError, RecursionError) as exc:
        raise GramTFError(f"{log.path}: not valid JSON ({str(exc)[:80]}); expected a benchmark_litert_model "
                          "--result_json file") from None
    lat = data.get("latency") if isinstance(data, dict) else None
    if not isinstance(lat, dict):
        raise GramTFError(f"{log.path}: not a benchmark_litert_model --result_json file (expected an object "
                          "with 'latency': {avg_ms, median_ms, std_ms, ...})")

    def pos(key):  # where the key is written (for the line number in errors)
        return max(log.text.find(f'"{key}"'), 0)

    def get(key, **kind):
        if key not in lat:
            log.fail(pos("latency"), f"'latency' has no '{key}'; expected a benchmark_litert_model --result_json file")
        return log.number(lat[key], pos(key), f"latency.{key}", **kind)

    model, threads = data.get("model"), data.get("num_threads")
    if model is not None and not isinstance(model, str):
        log.fail(pos("model"), "'model' is not a path")
    size = data.get("model_size_mb")
    return {"tool": "benchmark_litert_model (Python, --result_json)", "model": model,
            "threads": None if threads is None else log.number(threads, pos("num_threads"), "num_threads", integer=True),
            "latency_ms_mean": get("avg_ms", positive=True), "latency_ms_std": get("std_ms"),
            "latency_ms_p50": get("median_ms", positive=True), "latency_ms_min": get("min_ms", positive=True),
            "latency_ms_max": get("max_ms", positive=True), "init_ms": get("init_ms"),
            "first_ms": get("warmup_first_ms"), "runs": get("num_runs", integer=True),
            "model_size": None if size is None else log.size(size, pos("model_size_mb"), MIB, 2)}


def _parse_python(log: _Log) -> dict:
    fields = {m.group(1): m for m in _PY_FIELD.finditer(log.text)}
    if "Inference (avg)" not in fields:
        log.fail(log.text.find("BENCHMARK RESULTS"), "BENCHMARK RESULTS block without the line "
                 "'Inference (avg): X ms (N runs)'")
    columns = {"Inference (avg)": "latency_ms_mean", "Inference (std)": "latency_ms_std",
               "Inference (median)": "latency_ms_p50", "Inference (min)": "latency_ms_min",
               "Inference (max)": "latency_ms_max", "Model initialization": "init_ms", "Warmup (first)": "first_ms"}
    out = {"tool": "benchmark_litert_model (Python)", "model": None, "threads": None, "runs": None, "model_size": None}
    for name, column in columns.items():
        m = fields.get(name)
        out[column] = None if m is None else log.number(m.group(2), m.start(2), name, positive=column in _POSITIVE)
    avg = fields["Inference (avg)"]
    if avg.group(3) is not None:
        out["runs"] = log.number(avg.group(3), avg.start(3), "the number of runs", integer=True)
    if (model := _PY_MODEL.search(log.text)):
        out["model"] = model.group(1).strip()
    if (threads := _PY_THREADS.search(log.text)):
        out["threads"] = log.number(threads.group(1), threads.start(1), "Num threads", integer=True)
    if (size := _PY_SIZE.search(log.text)):
        out["model_size"] = log.size(size.group(1), size.start(1), MIB, 2)
    return out


def _parse_cpp(log: _Log) -> dict:
    text = log.text
    timings = _CPP_TIMINGS.search(text)
    if not timings:
        log.fail(text.find("Inference timings in us"), "expected 'Inference timings in us: Init: N, "
                 "First inference: N, Warmup (avg): X, Inference (avg): X'")
    names = ("Init", "First inference", "Warmup (avg)", "Inference (avg)")
    init_us, first_us, _, avg_us = (log.number(timings.group(i), timings.start(i), names[i - 1], positive=i == 4)
                                    for i in range(1, 5))
    stats = list(_CPP_STATS.finditer(text))
    last = stats[-1] if stats else None  # the timed runs follow the warm-up statistics
    graph = _CPP_GRAPH.search(text)
    threads = _CPP_THREADS.search(text)
    size = _CPP_SIZE.search(text)
    tool = "benchmark_litert_model (C++)" if "benchmark_litert_model" in text else "benchmark_model (C++)"
    names = {4: "min", 5: "max", 7: "std", 9: "median"}

    def ms(group: int) -> Optional[float]:
        if not last or last.group(group) is None:
            return None
        return log.number(last.group(group), last.start(group), names[group], positive=group != 7) / 1e3

    return {"tool": tool, "model": graph.group(1) if graph else None,
            "threads": int(threads.group(1)) if threads and int(threads.group(1)) > 0 else None,
            "latency_ms_mean": avg_us / 1e3, "latency_ms_std": ms(7), "latency_ms_p50": ms(9),
            "latency_ms_min": ms(4), "latency_ms_max": ms(5), "init_ms": init_us / 1e3, "first_ms": first_us / 1e3,
            "runs": log.number(last.group(1), last.start(1), "count", integer=True) if last else None,
            "model_size": log.size(size.group(1), size.start(1), MB, _decimals(size.group(1))) if size else None}


def _decimals(raw: str) -> int:
    """Digits after the point of a printed number ('0.872' -> 3): the precision it was rounded to."""
    return len(raw.partition(".")[2]) if "e" not in raw.lower() else 6
