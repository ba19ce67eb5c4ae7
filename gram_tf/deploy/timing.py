"""The one latency primitive: every timing in gram_tf (bench rows, per-op profiles, the GEMM peak,
int8-fast's candidates, ONNX Runtime peers, benchmark scripts) samples through `sample_ms`.

Standard library + numpy (+ the LiteRT interpreter for `time_blob`), no TensorFlow.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import numpy as np

from .interpreter import make_interpreter


def sample_ms(call: Callable[[], object], runs: int = 50, warmup: int = 5,
              max_seconds: Optional[float] = None) -> np.ndarray:
    """Milliseconds of `runs` timed calls after `warmup` untimed ones.

    With `max_seconds`, sampling stops once that much time has passed (and at least 3 samples
    exist) instead of after `runs` calls.
    """
    for _ in range(warmup):
        call()
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if max_seconds is not None:
            if time.perf_counter() - start >= max_seconds and len(times) >= 3:
                break
        elif len(times) >= runs:
            break
    return np.asarray(times) * 1e3


def latency_stats(ms) -> dict:
    """The latency columns of a result row from samples in milliseconds."""
    ms = np.asarray(ms, dtype=np.float64)
    p50 = float(np.percentile(ms, 50))
    return {
        "latency_ms_mean": float(ms.mean()), "latency_ms_std": float(ms.std()),
        "latency_ms_p50": p50, "latency_ms_p90": float(np.percentile(ms, 90)),
        "latency_ms_p99": float(np.percentile(ms, 99)), "images_per_s": float(1000.0 / p50),
        "runs": int(ms.size),
    }


def first_call_ms(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1e3


# Orders in which `run_rounds` visits the models. rotated: every round visits every model once,
# starting one later each round, so drift and neighbours hit all models alike. sequential: all rounds of
# one model, then the next (what a loop over models does; kept to show what it gets wrong).
SCHEDULES = ("rotated", "sequential")
CI_LEVEL = 0.95  # confidence of every latency and speed-up interval


def run_rounds(samplers: dict, rounds: int, schedule: str = "rotated", on_visit=None) -> dict:
    """Time several models in rounds: `samplers[key]()` returns one visit's samples (ms).

    Returns {key: [visit samples, one per round, in round order]}. `on_visit(key, round)` is called
    after each visit (progress bars)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    keys = list(samplers)
    out = {k: [] for k in keys}
    if schedule == "sequential":
        visits = [(k, r) for k in keys for r in range(rounds)]
    else:
        visits = [(keys[(r + i) % len(keys)], r) for r in range(rounds) for i in range(len(keys))] if keys else []
    for key, r in visits:
        out[key].append(np.asarray(samplers[key](), dtype=np.float64))
        if on_visit is not None:
            on_visit(key, r)
    return out


def median_ci(values, level: float = CI_LEVEL) -> tuple:
    """(median, low, high): the distribution-free interval of the median from order statistics.

    The interval [x(k), x(n+1-k)] covers the median with probability 1 - 2 P(Binomial(n, 1/2) < k);
    k is the largest with coverage >= `level`. Below 6 values no pair reaches 95 %: the interval is
    [min, max] and covers 1 - 2^(1-n) (5 rounds: 93.8 %). One value: no interval (None, None)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        return None, None, None
    med = float(np.median(x))
    if n == 1:
        return med, None, None
    from math import comb

    cdf = np.cumsum([comb(n, i) for i in range(n + 1)]) / 2.0 ** n  # P(B <= i)
    k = 1
    for cand in range(1, n // 2 + 1):
        if 1 - 2 * cdf[cand - 1] >= level:
            k = cand
    return med, float(x[k - 1]), float(x[n - k])


def round_medians(visits) -> np.ndarray:
    """The median of each round's samples."""
    return np.asarray([float(np.median(v)) for v in visits], dtype=np.float64)


def spread_pct(medians) -> float | None:
    """Round-to-round spread of one model: the interquartile range of its round medians / their median,
    in percent. One hiccup round (which the median of rounds already ignores) barely moves it; a machine
    that keeps changing speed does."""
    m = np.asarray(medians, dtype=np.float64)
    if m.size < 2 or not np.median(m) > 0:
        return None
    q75, q25 = np.percentile(m, [75, 25])
    return float(100.0 * (q75 - q25) / np.median(m))


def round_stats(visits) -> dict:
    """Latency columns of a row timed in rounds: p50 and its CI over the round medians; mean, std,
    p90, p99 over all samples; the round medians themselves (for paired comparisons)."""
    meds = round_medians(visits)
    p50, lo, hi = median_ci(meds)
    stats = latency_stats(np.concatenate([np.asarray(v) for v in visits]))
    stats.update(latency_ms_p50=p50, latency_ms_ci_low=lo, latency_ms_ci_high=hi, images_per_s=1000.0 / p50,
                 rounds=int(meds.size), round_ms=format_rounds(meds), spread_pct=spread_pct(meds))
    return stats


def format_rounds(medians) -> str:
    """Round medians as one result-row cell: ms, ';'-separated, in round order."""
    return ";".join(f"{m:.6g}" for m in medians)


def parse_rounds(cell) -> np.ndarray | None:
    """The inverse of `format_rounds`; None for an empty cell or one that is not numbers."""
    if cell is None or not str(cell).strip():
        return None
    try:
        values = np.asarray([float(v) for v in str(cell).split(";")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.size and np.all(np.isfinite(values)) and np.all(values > 0) else None


def paired_speedup(reference_medians, medians, level: float = CI_LEVEL) -> tuple:
    """Speed-up of a model over a reference timed in the same rounds: the median of the per-round
    ratios reference / model, with its CI (`median_ci`). Pairing cancels drift common to a round."""
    ref = np.asarray(reference_medians, dtype=np.float64)
    m = np.asarray(medians, dtype=np.float64)
    if ref.size != m.size or ref.size == 0:
        raise ValueError(f"paired speed-up needs the same rounds, got {ref.size} and {m.size}")
    return median_ci(ref / m, level)


def time_interleaved(runners: dict, rounds: int = 5, runs: int = 30, warmup: int = 5) -> dict:
    """Latency of several callables in this process, timed in rotated rounds (`run_rounds`).

    On a shared 2-vCPU machine the speed drifts over minutes (docs/benchmark-and-report.md); timing
    variants one after another turns that drift into fake speed-ups. Returns {key: `round_stats`
    columns, plus the lowest and highest round median (the drift the numbers carry)}.
    """
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    visits = run_rounds({k: (lambda fn=fn: sample_ms(fn, runs=runs, warmup=1)) for k, fn in runners.items()}, rounds)
    out = {}
    for key, v in visits.items():
        out[key] = round_stats(v)
        meds = round_medians(v)
        out[key].update(round_p50_min=float(meds.min()), round_p50_max=float(meds.max()))
    return out


def random_input(detail: dict, rng) -> np.ndarray:
    """A random tensor for an interpreter input: full-range integers, normal floats, zero indices."""
    dtype = detail["dtype"]
    shape = detail["shape"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if dtype == np.int32 or dtype == np.int64:  # indices/shapes: small, valid
            return np.zeros(shape, dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def invoker(model, threads: int, rng=None) -> Callable[[], None]:
    """`interpreter.invoke` of a model (path or bytes) whose inputs hold random (or zero) data."""
    interp = make_interpreter(model, threads)
    for d in interp.get_input_details():
        x = random_input(d, rng) if rng is not None else np.zeros(d["shape"], d["dtype"])
        interp.set_tensor(d["index"], x)
    return interp.invoke


def time_blob(model, threads: int, runs: int, warmup: int, rng) -> float:
    """Median ms of one invoke of a model (path or bytes) on random inputs."""
    return float(np.median(sample_ms(invoker(model, threads, rng), runs, warmup)))


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0
    except Exception:  # pragma: no cover
        return None
