"""Benchmark .tflite artifacts with the LiteRT interpreter on CPU (batch 1), like TFLite's
`benchmark_model`, and evaluate each one on the test split so speed and accuracy come from the
same file.

Each (model, threads) timing runs in a fresh worker process that imports only LiteRT and numpy:
thread pools do not leak between measurements and peak resident memory belongs to that model.
Results are flat rows (one per model x variant x threads) written to CSV and JSON.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import GramTFError

ROW_COLUMNS = [
    "run", "backbone", "variant", "runtime", "sparsity_target", "threads", "path",
    "size_bytes", "gzip_bytes", "zip_bytes", "sparsity", "weight_quantization", "io_type",
    "accuracy", "loss", "f1_macro", "auc", "n_test",
    "latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
    "first_ms", "init_ms", "images_per_s", "peak_rss_mb", "runs",
    "speedup_vs_fp32", "size_ratio_vs_fp32", "macs", "gmacs_per_s", "input_size",
    "flagged", "correct",
]
SUMMARY_COLUMNS = ["backbone", "sparsity_target", "variant", "threads", "accuracy", "size_bytes",
                   "zip_bytes", "latency_ms_p50", "images_per_s", "speedup_vs_fp32", "peak_rss_mb"]


# ------------------------------------------------------------------------------- timing workers

def _peak_rss_mb() -> Optional[float]:
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


def _stats(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1000.0
    return {
        "latency_ms_mean": float(ms.mean()), "latency_ms_std": float(ms.std()),
        "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p90": float(np.percentile(ms, 90)),
        "latency_ms_p99": float(np.percentile(ms, 99)), "images_per_s": float(1000.0 / np.median(ms)),
        "runs": int(len(ms)),
    }


def _timed_loop(call, runs: int, warmup: int, max_seconds: Optional[float]) -> list[float]:
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
    return times


def time_tflite(path, threads: int, runs: int = 50, warmup: int = 5,
                max_seconds: Optional[float] = None, seed: int = 0) -> dict:
    """Time one .tflite at batch 1 in this process (LiteRT + numpy only)."""
    from .runtime import make_interpreter

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

    t0 = time.perf_counter()
    call()
    first_ms = (time.perf_counter() - t0) * 1000.0
    times = _timed_loop(call, runs, warmup, max_seconds)
    return {"init_ms": init_ms, "first_ms": first_ms, **_stats(times), "peak_rss_mb": _peak_rss_mb()}


def time_keras(model_path, threads: int, runs: int = 50, warmup: int = 5,
               max_seconds: Optional[float] = None) -> dict:
    """Time the Keras float model at batch 1 (TensorFlow's own kernels, a graph-compiled call)."""
    import gram_tf  # noqa: F401  (legacy Keras switch)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from .train import load_model

    t0 = time.perf_counter()
    model = load_model(model_path)
    fn = tf.function(lambda x: model(x, training=False))
    x = tf.random.normal([1, *model.input_shape[1:]])
    init_ms = (time.perf_counter() - t0) * 1000.0
    t0 = time.perf_counter()
    fn(x).numpy()
    first_ms = (time.perf_counter() - t0) * 1000.0
    times = _timed_loop(lambda: fn(x).numpy(), runs, warmup, max_seconds)
    return {"init_ms": init_ms, "first_ms": first_ms, **_stats(times), "peak_rss_mb": _peak_rss_mb()}


def _run_worker(kind: str, path, threads: int, runs: int, warmup: int, max_seconds) -> dict:
    args = json.dumps({"kind": kind, "path": str(path), "threads": threads, "runs": runs,
                       "warmup": warmup, "max_seconds": max_seconds})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "gram_tf.bench", args], capture_output=True,
                          text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:240]
        raise GramTFError(f"benchmarking {path} with {threads} thread(s) failed: {err}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise GramTFError(result["error"])
    return result


# --------------------------------------------------------------------------------- evaluation

class _TestSet:
    """Decoded test images per (data manifest, size, resize rule), shared by every model."""

    def __init__(self):
        self._cache = {}

    def get(self, manifest, size, resize, labels):
        from . import data as data_mod

        key = (str(manifest), size, resize)
        if key not in self._cache:
            rows = data_mod.read_manifest(manifest)
            x, y, _ = data_mod.load_split(rows, "test", size, resize, progress=False)
            if len(x) == 0:
                x, y, _ = data_mod.load_split(rows, "val", size, resize, progress=False)
            self._cache[key] = (x, y, data_mod.manifest_labels(rows))
        x, y, manifest_labels = self._cache[key]
        if list(manifest_labels) != list(labels):
            raise GramTFError(f"labels of the model {labels} differ from the data manifest {manifest} ({manifest_labels})")
        return x, y


def evaluate_tflite(path, images, y, labels, threads: int = 2) -> dict:
    from .metrics import classification_metrics
    from .runtime import Classifier

    clf = Classifier(str(path), threads=threads)
    probs = clf.predict_arrays(images)
    return classification_metrics(y, probs, labels)


# --------------------------------------------------------------------------------- discovery

def _artifact_info(path: Path) -> dict:
    """Manifest entry for a .tflite (from its folder's manifest.json or its sidecar JSON)."""
    from .io_utils import read_json

    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            for entry in read_json(manifest).get("artifacts", []):
                if entry.get("file") == path.name:
                    return entry
        except ValueError:
            raise GramTFError(f"{manifest} is not valid JSON; re-run 'gram-tf convert'") from None
    sidecar = Path(str(path) + ".json")
    if sidecar.is_file():
        return read_json(sidecar).get("artifact", {})
    stem = path.stem
    backbone, _, variant = stem.partition("__")
    return {"file": path.name, "backbone": backbone, "variant": variant or "unknown"}


def discover(paths) -> list[Path]:
    files = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise GramTFError(f"{p} does not exist; pass .tflite files or a tflite_models/<run> folder")
        if p.is_dir():
            found = sorted(p.glob("*.tflite"))
            if not found:
                raise GramTFError(f"{p} contains no .tflite files; run 'gram-tf convert' first")
            files.extend(found)
        else:
            if p.suffix != ".tflite":
                raise GramTFError(f"{p} is not a .tflite file")
            files.append(p)
    return files


def _check_tflite(path: Path) -> None:
    head = path.read_bytes()[:8]
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise GramTFError(f"{path} is not a TFLite model (no TFL3 identifier); re-export it with 'gram-tf convert'")


# ------------------------------------------------------------------------------------ driver

def bench_paths(paths, threads=(1,), runs: int = 50, warmup: int = 5, max_seconds=None,
                evaluate: bool = True, keras_reference: bool = True, progress: bool = True,
                run_name: Optional[str] = None) -> list[dict]:
    """Benchmark and evaluate every .tflite under `paths`; returns flat result rows."""
    from .io_utils import compressed_sizes

    files = discover(paths)
    for f in files:
        _check_tflite(f)
    testset = _TestSet()
    jobs = [(f, t) for f in files for t in threads]
    infos = {f: _artifact_info(f) for f in files}
    keras_models = {}
    for f, info in infos.items():
        if keras_reference and info.get("keras_model") and Path(info["keras_model"]).is_file():
            keras_models.setdefault(info["keras_model"], (f, info))
    total = len(jobs) + len(keras_models) * len(threads)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="benchmarking", leave=False)
    rows = []
    evals = {}
    for f, t in jobs:
        info = infos[f]
        if bar:
            bar.set_postfix_str(f"{f.name} x{t}")
        timing = _run_worker("tflite", f, t, runs, warmup, max_seconds)
        row = _base_row(f, info, run_name)
        row.update(compressed_sizes(f))
        row.update(threads=t, runtime="litert", **timing)
        if evaluate and info.get("data_manifest"):
            if f not in evals:
                x, y = testset.get(info["data_manifest"], info["input_size"], info["preprocessing"]["resize"], info["labels"])
                evals[f] = evaluate_tflite(f, x, y, info["labels"])
            _add_metrics(row, evals[f])
        rows.append(row)
        if bar:
            bar.update(1)
    for model_path, (f, info) in keras_models.items():
        metrics = None
        if evaluate and info.get("data_manifest"):
            metrics = _evaluate_keras(model_path, testset, info)
        for t in threads:
            timing = _run_worker("keras", model_path, t, runs, warmup, max_seconds)
            row = _base_row(f, info, run_name)
            row.update(variant="keras", runtime="keras", path=str(model_path), threads=t,
                       size_bytes=Path(model_path).stat().st_size, gzip_bytes=None, zip_bytes=None,
                       weight_quantization="none", io_type="float32", flagged=None, **timing)
            if metrics:
                _add_metrics(row, metrics)
            rows.append(row)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    add_relative_columns(rows)
    return [{c: r.get(c) for c in ROW_COLUMNS} for r in rows]


def _evaluate_keras(model_path, testset, info) -> dict:
    from .train import evaluate_keras, load_model

    x, y = testset.get(info["data_manifest"], info["input_size"], info["preprocessing"]["resize"], info["labels"])
    return evaluate_keras(load_model(model_path), x, y, info["preprocessing"], info["labels"])


def _base_row(f: Path, info: dict, run_name) -> dict:
    return {
        "run": run_name or f.parent.name, "backbone": info.get("backbone"), "variant": info.get("variant"),
        "sparsity_target": float(info.get("sparsity_target") or 0.0), "path": str(f),
        "sparsity": info.get("sparsity"), "weight_quantization": info.get("weight_quantization"),
        "io_type": info.get("io_type"), "macs": info.get("macs"), "input_size": info.get("input_size"),
        "flagged": info.get("flagged"),
    }


def _add_metrics(row: dict, m: dict) -> None:
    row.update(accuracy=m["accuracy"], loss=m["loss"], f1_macro=m["f1_macro"], auc=m["auc"],
               n_test=m["n"], correct=m["correct"])


def add_relative_columns(rows: list[dict]) -> None:
    """speed-up and size ratio against the dense fp32 .tflite of the same run/backbone/threads,
    and achieved GMAC/s."""
    ref = {}
    for r in rows:
        if r.get("variant") == "fp32" and r.get("runtime") == "litert" and not r.get("sparsity_target"):
            ref[(r["run"], r["backbone"], r["threads"])] = r
    for r in rows:
        base = ref.get((r["run"], r["backbone"], r["threads"]))
        if base and r.get("latency_ms_p50"):
            r["speedup_vs_fp32"] = base["latency_ms_p50"] / r["latency_ms_p50"]
            if r.get("size_bytes"):
                r["size_ratio_vs_fp32"] = r["size_bytes"] / base["size_bytes"]
        if r.get("macs") and r.get("latency_ms_p50"):
            r["gmacs_per_s"] = r["macs"] / (r["latency_ms_p50"] / 1000.0) / 1e9


def write_results(rows: list[dict], out, columns=None) -> tuple[Path, Path]:
    from .io_utils import atomic_write_json, atomic_write_text

    columns = list(columns or ROW_COLUMNS)
    out = Path(out)
    csv_path = out if out.suffix == ".csv" else out.with_suffix(".csv")
    json_path = csv_path.with_suffix(".json")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_json(json_path, rows)
    return csv_path, json_path


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
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        result = {"error": f"{spec['path']}: cannot run in LiteRT ({msg})"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # worker entry: python -m gram_tf.bench '<json>'
    sys.exit(_worker_main(sys.argv[1]))


def time_interleaved(runners: dict, rounds: int = 5, runs: int = 30, warmup: int = 5) -> dict:
    """Latency of several models measured in turns: each round runs every model `runs` times.

    On a shared 2-vCPU machine the speed drifts by 20-30 % over minutes (measured); timing
    variants one after another turns that drift into fake speed-ups. Interleaving gives every
    variant the same conditions. Returns {key: p50, p90 over all samples, and the lowest and
    highest per-round median (the drift the numbers carry)}.
    """
    samples = {k: [] for k in runners}
    round_medians = {k: [] for k in runners}
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for key, fn in runners.items():
            fn()
            times = np.empty(runs)
            for i in range(runs):
                t0 = time.perf_counter()
                fn()
                times[i] = (time.perf_counter() - t0) * 1e3
            samples[key].extend(times.tolist())
            round_medians[key].append(float(np.median(times)))
    out = {}
    for key, values in samples.items():
        values = np.asarray(values)
        p50 = float(np.percentile(values, 50))
        out[key] = {"latency_ms_p50": p50, "latency_ms_p90": float(np.percentile(values, 90)),
                    "latency_ms_mean": float(values.mean()), "latency_ms_std": float(values.std()),
                    "round_p50_min": min(round_medians[key]), "round_p50_max": max(round_medians[key]),
                    "images_per_s": 1e3 / p50, "runs": int(values.size)}
    return out
