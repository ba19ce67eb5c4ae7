"""The timing worker: one (model, threads) per process that imports only LiteRT and numpy
(TensorFlow only for the Keras reference row), so thread pools do not leak between measurements and
peak resident memory belongs to that model.

Two entries:
- python -m gram_tf.bench.worker '<json>': one timing, then exit (the official-tool cross-check).
- python -m gram_tf.bench.worker --serve '<json>': load and warm the model, print one JSON line
  (init and first-call ms), then answer each stdin line {"runs": n, "max_seconds": s} with the
  samples of one visit (one untimed call first); an empty line or EOF -> peak memory, exit. This is
  what `gram-tf bench` times rounds with: a fresh process per visit costs ~0.9 s and 120 MB
  (measured), more than a whole round of a small model.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Optional

import numpy as np

from ..deploy import latency_stats, make_interpreter, peak_rss_mb, sample_ms
from ..deploy.timing import first_call_ms, random_input
from ..errors import GramTFError, one_line


def time_tflite(path, threads: int, runs: int = 50, warmup: int = 5,
                max_seconds: Optional[float] = None, seed: int = 0) -> dict:
    """Time one .tflite at batch 1 in this process (LiteRT + numpy only)."""
    t0 = time.perf_counter()
    interp = make_interpreter(str(path), threads=threads)
    interp.allocate_tensors()
    init_ms = (time.perf_counter() - t0) * 1000.0
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    rng = np.random.default_rng(seed)
    dtype = np.dtype(inp["dtype"])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, size=inp["shape"], endpoint=True).astype(dtype)
    else:
        x = rng.standard_normal(inp["shape"]).astype(dtype)

    def call():
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        interp.get_tensor(out["index"])

    first_ms = first_call_ms(call)
    times = sample_ms(call, runs, warmup, max_seconds)
    return {"init_ms": init_ms, "first_ms": first_ms, **latency_stats(times), "peak_rss_mb": peak_rss_mb()}


def time_keras(model_path, threads: int, runs: int = 50, warmup: int = 5,
               max_seconds: Optional[float] = None) -> dict:
    """Time the Keras float model at batch 1 (TensorFlow's own kernels, a graph-compiled call)."""
    import gram_tf  # noqa: F401  (legacy Keras switch)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from ..models import load_model

    t0 = time.perf_counter()
    model = load_model(model_path)
    fn = tf.function(lambda x: model(x, training=False))
    x = tf.random.normal([1, *model.input_shape[1:]])
    init_ms = (time.perf_counter() - t0) * 1000.0
    first_ms = first_call_ms(lambda: fn(x).numpy())
    times = sample_ms(lambda: fn(x).numpy(), runs, warmup, max_seconds)
    return {"init_ms": init_ms, "first_ms": first_ms, **latency_stats(times), "peak_rss_mb": peak_rss_mb()}


def _load(kind: str, path, threads: int):
    """(call, init_ms) for one model: a closure running one batch-1 inference."""
    t0 = time.perf_counter()
    if kind == "tflite":
        interp = make_interpreter(str(path), threads=threads)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        x = random_input(inp, np.random.default_rng(0))

        def call():
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            interp.get_tensor(out["index"])
    else:
        import gram_tf  # noqa: F401  (legacy Keras switch)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from ..models import load_model

        model = load_model(path)
        fn = tf.function(lambda v: model(v, training=False))
        xk = tf.random.normal([1, *model.input_shape[1:]])

        def call():
            fn(xk).numpy()
    return call, (time.perf_counter() - t0) * 1000.0


def serve(spec: dict, stdin=sys.stdin, stdout=sys.stdout) -> int:
    """The warm worker of `gram-tf bench`'s rounds (see the module docstring)."""
    def say(obj):
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    try:
        call, init_ms = _load(spec["kind"], spec["path"], spec["threads"])
        first_ms = first_call_ms(call)
        for _ in range(spec.get("warmup", 0)):
            call()
    except GramTFError as exc:
        say({"error": str(exc)})
        return 0
    except Exception as exc:  # the interpreter refuses the file
        say({"error": f"{spec['path']}: cannot run in LiteRT ({one_line(exc, 200)})"})
        return 0
    say({"init_ms": init_ms, "first_ms": first_ms})
    for line in stdin:
        if not line.strip():
            break
        visit = json.loads(line)
        say({"ms": sample_ms(call, visit["runs"], 1, visit.get("max_seconds")).tolist()})
    say({"peak_rss_mb": peak_rss_mb()})
    return 0


def _worker_main(arg: str) -> int:
    spec = json.loads(arg)
    try:
        if spec["kind"] == "tflite":
            result = time_tflite(spec["path"], spec["threads"], spec["runs"], spec["warmup"], spec["max_seconds"])
        else:
            result = time_keras(spec["path"], spec["threads"], spec["runs"], spec["warmup"], spec["max_seconds"])
    except GramTFError as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # the interpreter refuses the file
        msg = one_line(exc, 200)
        result = {"error": f"{spec['path']}: cannot run in LiteRT ({msg})"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        sys.exit(serve(json.loads(sys.argv[2])))
    sys.exit(_worker_main(sys.argv[1]))
