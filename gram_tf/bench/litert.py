"""Benchmark .tflite artifacts with the LiteRT interpreter on CPU (batch 1), like TFLite's
`benchmark_model`, and evaluate each one on the test split so speed and accuracy come from the
same file.

Each (model, threads) timing runs in a fresh worker process (gram_tf.bench.worker). Results are
flat rows in the one schema (gram_tf.report.schema): one per model x variant x threads.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from .. import data as data_mod
from ..deploy import Classifier
from ..deploy.classifier import artifact_entries, verify_sha256
from ..errors import GramTFError
from ..io_utils import compressed_sizes, require_regular_file
from ..metrics import classification_metrics
from ..models import load_model
from ..report.schema import ROW_COLUMNS, add_relative_columns
from ..train import evaluate_keras
from .device import device_info


def run_worker(kind: str, path, threads: int, runs: int, warmup: int, max_seconds) -> dict:
    args = json.dumps({"kind": kind, "path": str(path), "threads": threads, "runs": runs,
                       "warmup": warmup, "max_seconds": max_seconds})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "gram_tf.bench.worker", args], capture_output=True,
                          text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:240]
        raise GramTFError(f"benchmarking {path} with {threads} thread(s) failed: {err}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise GramTFError(result["error"])
    return result


class TestSet:
    """Decoded test images per (data manifest, size, resize rule), shared by every model."""

    def __init__(self):
        self._cache = {}

    def get(self, manifest, size, resize, labels):
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


def evaluate_tflite(path, images, y, labels, threads: int = 2, verify: bool = True) -> dict:
    clf = Classifier(str(path), threads=threads, verify=verify)
    probs = clf.predict_arrays(images)
    return classification_metrics(y, probs, labels)


def artifact_info(path: Path, verify: bool = True) -> dict:
    """Manifest entry for a .tflite (from its folder's manifest.json or its sidecar JSON). A manifest
    or sidecar that cannot be read is an error (it holds the sha256 to verify); with `verify` off the
    entry is guessed from the file name instead."""
    try:
        entries = artifact_entries(path)
    except GramTFError:
        if verify:
            raise
        entries = []
    if entries:
        return entries[0][1]
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
            found = sorted(f for f in p.glob("*.tflite") if not f.name.startswith("."))  # never a temp file
            if not found:
                raise GramTFError(f"{p} contains no .tflite files; run 'gram-tf convert' first")
            files.extend(found)
        else:
            if p.suffix != ".tflite":
                raise GramTFError(f"{p} is not a .tflite file")
            files.append(p)
    return files


def _check_tflite(path: Path) -> None:
    require_regular_file(path, "model file")  # a pipe or /dev/zero named x.tflite is never opened
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise GramTFError(f"{path} is not a TFLite model (no TFL3 identifier); re-export it with 'gram-tf convert'")


def bench_paths(paths, threads=(1,), runs: int = 50, warmup: int = 5, max_seconds=None,
                evaluate: bool = True, keras_reference: bool = True, progress: bool = True,
                run_name: Optional[str] = None, device: Optional[str] = None, verify: bool = True) -> list[dict]:
    """Benchmark and evaluate every .tflite under `paths`; returns flat result rows, each naming
    this machine (`device`: a label, default the CPU model; see gram_tf.bench.device). Every file is
    checked against the sha256 recorded at export before anything is timed (`verify=False` skips)."""
    here = {**device_info(device), "timing_source": "gram_tf (LiteRT Python, worker process)",
            "accuracy_source": "this machine"}
    files = discover(paths)
    for f in files:
        _check_tflite(f)
    infos = {f: artifact_info(f, verify) for f in files}
    if verify:  # all of them before the first timing: a changed file must not cost a run, nor write a row
        for f in files:
            verify_sha256(f)
    testset = TestSet()
    jobs = [(f, t) for f in files for t in threads]
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
        timing = run_worker("tflite", f, t, runs, warmup, max_seconds)
        row = base_row(f, info, run_name)
        row.update(compressed_sizes(f))
        row.update(threads=t, runtime="litert", **timing, **here)
        if evaluate and info.get("data_manifest"):
            if f not in evals:
                x, y = testset.get(info["data_manifest"], info["input_size"], info["preprocessing"]["resize"], info["labels"])
                evals[f] = evaluate_tflite(f, x, y, info["labels"], verify=False)  # verified above
            add_metrics(row, evals[f])
        rows.append(row)
        if bar:
            bar.update(1)
    for model_path, (f, info) in keras_models.items():
        metrics = None
        if evaluate and info.get("data_manifest"):
            metrics = _evaluate_keras(model_path, testset, info)
        for t in threads:
            timing = run_worker("keras", model_path, t, runs, warmup, max_seconds)
            row = base_row(f, info, run_name)
            row.update(variant="keras", runtime="keras", path=str(model_path), threads=t,
                       size_bytes=Path(model_path).stat().st_size, gzip_bytes=None, zip_bytes=None,
                       weight_quantization="none", io_type="float32", flagged=None, **timing,
                       **{**here, "timing_source": "gram_tf (TensorFlow, worker process)"})
            if metrics:
                add_metrics(row, metrics)
            rows.append(row)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    add_relative_columns(rows)
    return [{c: r.get(c) for c in ROW_COLUMNS} for r in rows]


def _evaluate_keras(model_path, testset, info) -> dict:
    x, y = testset.get(info["data_manifest"], info["input_size"], info["preprocessing"]["resize"], info["labels"])
    return evaluate_keras(load_model(model_path), x, y, info["preprocessing"], info["labels"])


def base_row(f: Path, info: dict, run_name) -> dict:
    return {
        "run": run_name or f.parent.name, "backbone": info.get("backbone"), "variant": info.get("variant"),
        "sparsity_target": float(info.get("sparsity_target") or 0.0), "path": str(f),
        "sparsity": info.get("sparsity"), "weight_quantization": info.get("weight_quantization"),
        "io_type": info.get("io_type"), "macs": info.get("macs"), "input_size": info.get("input_size"),
        "flagged": info.get("flagged"), "int8_recipe": (info.get("int8_recipe") or {}).get("tag"),
    }


def add_metrics(row: dict, m: dict) -> None:
    row.update(accuracy=m["accuracy"], loss=m["loss"], f1_macro=m["f1_macro"], auc=m["auc"],
               n_test=m["n"], correct=m["correct"])


