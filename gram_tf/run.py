"""The run directory every stage reads: `gram-tf train` writes it, prune/convert/bench read it.

A finished run holds model.keras, labels.txt, preprocessing.json, history.json, metrics.json and
run.json (backbone, input size, labels, preprocessing, data manifest, metrics, versions).
"""
from __future__ import annotations

from pathlib import Path

from .errors import GramTFError
from .io_utils import read_json

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"


def load_run(run_dir) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise GramTFError(f"{run_dir} is not a finished training run (no {RUN_FILE}); run 'gram-tf train' first")
    info = read_json(path)
    info["run_dir"] = str(run_dir)
    return info


def library_versions() -> dict:
    """Versions of the libraries an artifact's numbers depend on (recorded in run.json/manifests)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "keras-cv", "numpy",
                "onnxruntime", "tf2onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
