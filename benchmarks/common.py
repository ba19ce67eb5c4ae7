"""Helpers shared by the benchmark scripts: synthetic data, artifact export, result files."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# where results files go; the smoke runs in the tests point it at a temporary folder
RESULTS = Path(os.environ.get("GRAM_TF_RESULTS_DIR") or ROOT / "benchmarks" / "results")
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights"


def weights_dir_or_none():
    """Real ImageNet weights when ../shared is there (developer machines), else random weights."""
    return str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_dir() else None


def require_real_weights() -> None:
    """Stop a benchmark that measures real ImageNet weights when ../shared/weights is absent."""
    if not SHARED_WEIGHTS.is_dir():
        raise SystemExit(f"error: {SHARED_WEIGHTS} is missing; this benchmark needs the real ImageNet weights")


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Machine, library versions, and the command line and date of this run (for the results file)."""
    import time

    from gram_tf.bench import cpu_flags
    from gram_tf.run import library_versions

    return {"cpu": cpu_name(), "isa": cpu_flags()["flags"], "cores": os.cpu_count(), "python": sys.version.split()[0],
            **library_versions(),
            "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M")}


def export_artifact(model, out_dir: Path, backbone: str, variant: str, size: int, preprocessing: dict,
                    representative, labels, macs: int, io_type: str = "int8",
                    options: dict | None = None, validation=None) -> Path:
    """Convert one Keras model variant with gram_tf's artifact writer (metadata, sidecar, checks);
    `options`/`validation` go to builders that measure accuracy (int8-fast, int8-selective)."""
    from gram_tf.convert import VARIANTS, export_artifact as write_artifact

    spec = VARIANTS[variant]
    guarded = spec.uses_validation or spec.needs_validation
    path = out_dir / f"{backbone}__{variant}.tflite"
    write_artifact(model, path, variant, size=size, preprocessing=preprocessing, labels=labels, backbone=backbone,
                   representative=representative, io_type=io_type, options=options if guarded else None,
                   validation=validation if guarded else None, entry_extra={"macs": macs})
    return path


def write_results(name: str, rows: list[dict], environment_extra: dict | None = None) -> Path:
    """RESULTS/NAME.csv (one row per dict, columns of the first) and NAME.json (rows with the
    environment: machine, versions, command, date, plus `environment_extra`, e.g. a wall time),
    each written atomically."""
    import csv
    import io

    from gram_tf.io_utils import atomic_write_json, atomic_write_text

    RESULTS.mkdir(exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(RESULTS / f"{name}.csv", buf.getvalue())
    atomic_write_json(RESULTS / f"{name}.json", {"environment": {**environment(), **(environment_extra or {})}, "rows": rows})
    return RESULTS / f"{name}.csv"

