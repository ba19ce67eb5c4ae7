"""Helpers shared by the benchmark scripts: synthetic data, artifact export, result files."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights"


def weights_dir_or_none():
    """Real ImageNet weights when ../shared is there (developer machines), else random weights."""
    return str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_dir() else None


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    from gram_tf.train import library_versions

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": sys.version.split()[0], **library_versions()}


def export_artifact(model, out_dir: Path, backbone: str, variant: str, size: int, preprocessing: dict,
                    representative, labels, macs: int, io_type: str = "int8",
                    fast_options: dict | None = None) -> Path:
    """Convert one Keras model variant and write it with metadata + a manifest-like sidecar
    (int8-fast: its report too, under "fast")."""
    from gram_tf import tflite_meta
    from gram_tf.convert import convert_model, tflite_weight_stats
    from gram_tf.io_utils import atomic_write_bytes, atomic_write_json

    fast = None
    if variant == "int8-fast":
        from gram_tf.fast_int8 import fast_int8

        blob, fast = fast_int8(model, size, preprocessing, representative, **(fast_options or {}))
    else:
        blob = convert_model(model, variant, size, preprocessing, representative, io_type)
    meta = {"format": "gram_tf/1", "labels": labels, "input_size": size, "preprocessing": preprocessing,
            "backbone": backbone, "variant": variant}
    path = out_dir / f"{backbone}__{variant}.tflite"
    atomic_write_bytes(path, tflite_meta.embed_metadata(blob, meta))
    stats = tflite_weight_stats(path)
    atomic_write_json(Path(str(path) + ".json"), {**meta, "artifact": {
        "file": path.name, "backbone": backbone, "variant": variant, "sparsity_target": 0.0,
        "macs": macs, "input_size": size, "preprocessing": preprocessing, "labels": labels, **stats,
        "fast": fast}})
    return path
