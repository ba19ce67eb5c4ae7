"""Benchmark .tflite artifacts with the LiteRT interpreter on CPU (batch 1), like TFLite's
`benchmark_model`, and evaluate each one on the test split so speed and accuracy come from the
same file.

Timing runs in rounds (docs/benchmark-and-report.md): each (model, threads) gets its own warm worker process
(gram_tf.bench.worker --serve), and every round visits every worker of a backbone once, in a rotated
order, so drift and neighbours hit all of them alike. A row's p50 is the median of its round medians,
with the order-statistics CI; its speed-up vs fp32 is paired per round (gram_tf.report.schema).
Workers of one backbone (its artifacts and Keras reference) are alive together; backbones are timed
one after another, which bounds memory (~120 MB per LiteRT worker, ~600 MB per Keras one).
Results are flat rows in the one schema (gram_tf.report.schema): one per model x variant x threads,
`dataset` naming the in-domain split they were evaluated on. Each external test set adds one row per
model (`dataset` = the set's name) with its accuracy and no timing: latency is measured once, on the
in-domain rows (docs/generalization.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from .. import data as data_mod
from ..deploy import Classifier
from ..deploy.classifier import artifact_entries, verify_sha256
from ..config import check_name
from ..errors import GramTFError
from ..io_utils import compressed_sizes, require_regular_file
from ..metrics import classification_metrics
from ..models import load_model
from ..deploy.timing import round_stats, run_rounds
from ..report.schema import ROW_COLUMNS, add_noise_columns, add_relative_columns
from ..train import predict_probs
from .device import NeighbourMeter, device_info


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


class WarmWorker:
    """One (model, threads) in its own process, loaded and warmed once, answering timing visits."""

    def __init__(self, kind: str, path, threads: int, warmup: int):
        self.path, self.threads = path, threads
        self._err = tempfile.TemporaryFile(mode="w+")  # a pipe could fill up with TF's logging and block
        spec = json.dumps({"kind": kind, "path": str(path), "threads": threads, "warmup": warmup})
        self._proc = subprocess.Popen([sys.executable, "-m", "gram_tf.bench.worker", "--serve", spec],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        self.ready = None
        self.pid = self._proc.pid

    def _failed(self) -> GramTFError:
        self._err.seek(0)
        err = (self._err.read().strip().splitlines() or [f"the worker died (exit code {self._proc.poll()})"])[-1][:240]
        return GramTFError(f"benchmarking {self.path} with {self.threads} thread(s) failed: {err}")

    def _read(self) -> dict:
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise self._failed()
            if line.startswith("{"):
                result = json.loads(line)
                if "error" in result:
                    raise GramTFError(result["error"])
                return result

    def wait_ready(self) -> dict:
        if self.ready is None:
            self.ready = self._read()
        return self.ready

    def visit(self, runs: int, max_seconds=None) -> list:
        try:
            self._proc.stdin.write(json.dumps({"runs": runs, "max_seconds": max_seconds}) + "\n")
            self._proc.stdin.flush()
        except OSError:  # it died between visits (killed, out of memory)
            raise self._failed() from None
        return self._read()["ms"]

    def close(self) -> dict:
        """Stop the worker; its peak memory (empty if it had already died)."""
        out = {}
        try:
            if self._proc.poll() is None:
                self._proc.stdin.write("\n")
                self._proc.stdin.flush()
                out = self._read()
        except (OSError, GramTFError, ValueError):
            pass
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._err.close()
        return out


def time_in_rounds(jobs: dict, rounds: int, runs: int, warmup: int, max_seconds=None, bar=None) -> dict:
    """Time every job {key: (kind, path, threads)} in `rounds` rotated rounds of `runs` samples, each
    in its warm worker. `max_seconds` is a budget per job over all rounds. Returns {key: timing columns}."""
    workers = {}
    try:
        for key, (kind, path, threads) in jobs.items():  # start them all, then wait: imports overlap
            workers[key] = WarmWorker(kind, path, threads, warmup)
        ready = {key: w.wait_ready() for key, w in workers.items()}
        budget = None if max_seconds is None else max_seconds / rounds
        meter = NeighbourMeter(w.pid for w in workers.values()).start()

        def on_visit(key, r):
            if bar is not None:
                bar.update(1)

        visits = run_rounds({k: (lambda w=w: w.visit(runs, budget)) for k, w in workers.items()}, rounds,
                            on_visit=on_visit)
        busy = meter.stop()
    finally:
        closing = {key: w.close() for key, w in workers.items()}
    out = {}
    for key, v in visits.items():
        out[key] = {**ready[key], **round_stats(v), "peak_rss_mb": closing[key].get("peak_rss_mb"),
                    "busy_cores": busy}
    return out


class TestSet:
    """Decoded test images per (data manifest, size, resize rule), shared by every model, and each
    artifact's metrics on them."""

    def __init__(self):
        self._cache = {}
        self._metrics = {}
        self.split = {}  # manifest -> the split evaluated on: test, or val when test is empty

    def get(self, manifest, size, resize, labels):
        key = (str(manifest), size, resize)
        if key not in self._cache:
            rows = data_mod.read_manifest(manifest)
            split = "test"
            x, y, _ = data_mod.load_split(rows, split, size, resize, progress=False)
            if len(x) == 0:
                split = "val"
                x, y, _ = data_mod.load_split(rows, split, size, resize, progress=False)
            self._cache[key] = (x, y, data_mod.manifest_labels(rows))
            self.split[str(manifest)] = split
        x, y, manifest_labels = self._cache[key]
        if list(manifest_labels) != list(labels):
            raise GramTFError(f"labels of the model {labels} differ from the data manifest {manifest} ({manifest_labels})")
        return x, y

    def of(self, info: dict):
        """The test images and labels of an artifact (its manifest entry `info`)."""
        return self.get(info["data_manifest"], info["input_size"], info["preprocessing"]["resize"], info["labels"])

    def evaluate(self, path, info: dict) -> dict:
        """Metrics of one .tflite on its run's test split, computed once per file (already verified)."""
        if path not in self._metrics:
            x, y = self.of(info)
            self._metrics[path] = evaluate_tflite(path, x, y, info["labels"], verify=False)
        return self._metrics[path]


def parse_external(pairs) -> dict:
    """`--external name=DIR` (repeatable) -> {name: DIR}; a name is one folder name, not a split's."""
    out = {}
    for pair in pairs or ():
        name, eq, folder = str(pair).partition("=")
        if not eq or not name.strip() or not folder.strip():
            raise GramTFError(f"--external {pair!r}: expected NAME=DIR, e.g. --external other_lab=data/other_lab")
        name = name.strip()
        if name in out:
            raise GramTFError(f"--external {name!r} is given twice; give each set its own name")
        check_external_name(name, f"--external {pair!r}")
        out[name] = folder.strip()
    return out


def check_external_name(name: str, where: str) -> None:
    check_name(name, f"{where}: the set's name")
    if name in data_mod.SPLITS:
        raise GramTFError(f"{where}: {name!r} names an in-domain split; call the external set something else, "
                          "e.g. other_lab")


class ExternalSets:
    """Decoded images of each external set per (size, resize rule), labelled in a model's class order."""

    def __init__(self, sets: dict):
        self.sets = dict(sets)
        self._cache = {}

    def get(self, name, size, resize, labels):
        key = (name, size, resize, tuple(labels))
        if key not in self._cache:
            items = data_mod.external_items(self.sets[name], labels, name, quiet=True)
            rows = [{"path": str(p), "label": c, "split": "test", "sha256": ""} for p, c in items]
            x, y, _, errors = data_mod.load_images(rows, size, resize, progress=False, labels=labels)
            for e in errors:
                print(f"warning: external set {name!r}: excluded {e['error']}", file=sys.stderr)
            self._cache[key] = (x, y)
        return self._cache[key]


def evaluate_tflite(path, images, y, labels, threads: int = 2, verify: bool = True) -> dict:
    """Metrics of the model's own scores, and (`_ts` keys) of the scores after the temperature recorded
    in its metadata, which is what `gram-tf predict` shows by default."""
    clf = Classifier(str(path), threads=threads, verify=verify, temperature=False)
    return _metrics(y, clf.predict_arrays(images), labels, clf.recorded_temperature)


def _metrics(y, probs, labels, temperature=None) -> dict:
    """classification_metrics (with a temperature also its `_ts` keys) plus `predicted`: each image's top-1
    class index, ';'-separated (agreement between two models on the same images needs them; `correct` alone
    cannot tell two errors apart)."""
    m = classification_metrics(y, probs, labels, temperature=temperature)
    m["predicted"] = ";".join(str(int(i)) for i in np.asarray(probs).argmax(axis=1)) if len(probs) else None
    return m


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


def bench_paths(paths, threads=(1,), runs: int = 10, warmup: int = 5, max_seconds=None,
                evaluate: bool = True, keras_reference: bool = True, progress: bool = True,
                run_name: Optional[str] = None, device: Optional[str] = None, verify: bool = True,
                rounds: int = 7, external: Optional[dict] = None) -> list[dict]:
    """Benchmark and evaluate every .tflite under `paths`; returns flat result rows, each naming
    this machine (`device`: a label, default the CPU model; see gram_tf.bench.device). Every file is
    checked against the sha256 recorded at export before anything is timed (`verify=False` skips).

    Timing: `rounds` rounds of `runs` samples per (model, threads), after `warmup` untimed calls
    (module docstring); `max_seconds`, if set, is the time per (model, threads) over all rounds.
    `external` {name: ImageFolder}: every model (the Keras reference included) is also evaluated on each
    set, one untimed row per model and set (module docstring)."""
    here = {**device_info(device), "timing_source": f"gram_tf (LiteRT Python, warm worker, {rounds} rounds)",
            "accuracy_source": "this machine"}
    external = dict(external or {})
    if external and not evaluate:
        raise GramTFError("external test sets are for evaluation; drop --no-eval or the external sets")
    for name in external:
        check_external_name(name, "external set")
    files = discover(paths)
    for f in files:
        _check_tflite(f)
    infos = {f: artifact_info(f, verify) for f in files}
    for name, folder in external.items():  # class names checked (a missing class said) before any timing
        for labels in {tuple(i["labels"]) for i in infos.values() if i.get("labels")}:
            data_mod.external_items(folder, labels, name)
    if verify:  # all of them before the first timing: a changed file must not cost a run, nor write a row
        for f in files:
            verify_sha256(f)
    keras_models = {}
    for f, info in infos.items():
        if keras_reference and info.get("keras_model") and Path(info["keras_model"]).is_file():
            keras_models.setdefault(info["keras_model"], (f, info))
    # one timing group per backbone: its artifacts and its Keras reference, interleaved
    groups: dict = {}
    for f, info in infos.items():
        for t in threads:
            groups.setdefault(info.get("backbone"), {})[("tflite", f, t)] = ("tflite", f, t)
    for model_path, (f, info) in keras_models.items():
        for t in threads:
            groups.setdefault(info.get("backbone"), {})[("keras", model_path, t)] = ("keras", model_path, t)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(g) for g in groups.values()) * rounds, desc="benchmarking (rounds)", leave=False)
    timings = {}
    try:
        for backbone, jobs in groups.items():
            if bar:
                bar.set_postfix_str(f"{backbone}: {len(jobs)} models x threads")
            timings.update(time_in_rounds(jobs, rounds, runs, warmup, max_seconds, bar))
    finally:
        if bar:
            bar.close()
    testset = TestSet()
    rows = []
    for f in files:
        info = infos[f]
        for t in threads:
            row = base_row(f, info, run_name)
            row.update(compressed_sizes(f))
            row.update(threads=t, runtime="litert", **timings[("tflite", f, t)], **here)
            if evaluate and info.get("data_manifest"):
                add_metrics(row, testset.evaluate(f, info))
                row["dataset"] = testset.split[str(info["data_manifest"])]
            rows.append(row)
    for model_path, (f, info) in keras_models.items():
        metrics = None
        if evaluate and info.get("data_manifest"):
            metrics = _evaluate_keras(model_path, testset, info)
        for t in threads:
            row = base_row(f, info, run_name)
            row.update(variant="keras", runtime="keras", path=str(model_path), threads=t,
                       size_bytes=Path(model_path).stat().st_size, gzip_bytes=None, zip_bytes=None,
                       weight_quantization="none", io_type="float32", flagged=None,
                       **timings[("keras", model_path, t)],
                       **{**here, "timing_source": f"gram_tf (TensorFlow, warm worker, {rounds} rounds)"})
            if metrics:
                add_metrics(row, metrics)
                row["dataset"] = testset.split[str(info["data_manifest"])]
            rows.append(row)
    add_relative_columns(rows)
    add_noise_columns(rows)
    rows += _external_rows(external, files, infos, keras_models, run_name, here)
    return [{c: r.get(c) for c in ROW_COLUMNS} for r in rows]


def _external_rows(external: dict, files, infos, keras_models, run_name, here) -> list[dict]:
    """One row per model and external set: its accuracy there, no timing (threads and latency empty)."""
    if not external:
        return []
    sets = ExternalSets(external)
    here = {**here, "timing_source": None}  # not timed
    rows = []
    for name in external:
        for f in files:
            info = infos[f]
            if not (info.get("labels") and info.get("input_size") and info.get("preprocessing")):
                continue  # a file without its manifest entry (--no-verify): nothing says how to feed it
            x, y = sets.get(name, info["input_size"], info["preprocessing"]["resize"], info["labels"])
            row = base_row(f, info, run_name)
            row.update(compressed_sizes(f))
            row.update(runtime="litert", dataset=name, **here)
            add_metrics(row, evaluate_tflite(f, x, y, info["labels"], verify=False))
            rows.append(row)
    for model_path, (f, info) in keras_models.items():
        model = load_model(model_path)
        for name in external:
            x, y = sets.get(name, info["input_size"], info["preprocessing"]["resize"], info["labels"])
            row = base_row(f, info, run_name)
            row.update(variant="keras", runtime="keras", path=str(model_path),
                       size_bytes=Path(model_path).stat().st_size, weight_quantization="none", io_type="float32",
                       flagged=None, dataset=name, **here)
            add_metrics(row, _metrics(y, predict_probs(model, x, info["preprocessing"]), info["labels"],
                                      info.get("temperature")))
            rows.append(row)
    return rows


def _evaluate_keras(model_path, testset, info) -> dict:
    x, y = testset.of(info)
    return _metrics(y, predict_probs(load_model(model_path), x, info["preprocessing"]), info["labels"],
                    info.get("temperature"))


def base_row(f: Path, info: dict, run_name) -> dict:
    return {
        "run": run_name or f.parent.name, "backbone": info.get("backbone"), "variant": info.get("variant"),
        "sparsity_target": float(info.get("sparsity_target") or 0.0), "path": str(f),
        "sparsity": info.get("sparsity"), "weight_quantization": info.get("weight_quantization"),
        "io_type": info.get("io_type"), "macs": info.get("macs"), "input_size": info.get("input_size"),
        "flagged": info.get("flagged"), "int8_recipe": (info.get("int8_recipe") or {}).get("tag"),
    }


# the metrics (gram_tf.metrics.classification_metrics keys) a result row carries under the same name
_ROW_METRICS = ("accuracy", "loss", "f1_macro", "auc", "correct", "ece", "ece_adaptive", "brier", "confidence",
                "temperature", "ece_ts", "ece_adaptive_ts", "brier_ts", "nll_ts", "confidence_ts", "predicted")


def add_metrics(row: dict, m: dict) -> None:
    row.update(n_test=m["n"], **{k: m.get(k) for k in _ROW_METRICS})


