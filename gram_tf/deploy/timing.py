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


def time_interleaved(runners: dict, rounds: int = 5, runs: int = 30, warmup: int = 5) -> dict:
    """Latency of several models measured in turns: each round runs every model `runs` times.

    On a shared 2-vCPU machine the speed drifts by 20-30 % over minutes (measured); timing
    variants one after another turns that drift into fake speed-ups. Interleaving gives every
    variant the same conditions. Returns {key: latency stats over all samples, plus the lowest and
    highest per-round median (the drift the numbers carry)}.
    """
    samples = {k: [] for k in runners}
    round_medians = {k: [] for k in runners}
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for key, fn in runners.items():
            times = sample_ms(fn, runs=runs, warmup=1)
            samples[key].extend(times.tolist())
            round_medians[key].append(float(np.median(times)))
    out = {}
    for key, values in samples.items():
        stats = latency_stats(values)
        out[key] = {k: stats[k] for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_mean",
                                          "latency_ms_std")}
        out[key].update(round_p50_min=min(round_medians[key]), round_p50_max=max(round_medians[key]),
                        images_per_s=stats["images_per_s"], runs=stats["runs"])
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
