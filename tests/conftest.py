"""Shared fixtures. Heavy TensorFlow objects are built once per session at tiny sizes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import gram_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS_DIR = SHARED / "weights"
REAL_DATA = SHARED / "data" / "real"


def shared_or_skip(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only on developer and CI machines)")
    return path


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return shared_or_skip(WEIGHTS_DIR)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic Gram-stain ImageFolder (both classes), shared by the whole session."""
    from gram_tf.data.synth import synthesize_dataset

    out = tmp_path_factory.mktemp("synth")
    synthesize_dataset(out, per_class=48, size=96, seed=0, fields_per_specimen=1, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_manifest(synth_dir, tmp_path_factory) -> Path:
    from gram_tf.data import split_dataset, write_manifest

    rows = split_dataset(synth_dir, val=0.2, test=0.25, seed=0, group_pattern=r"^(gram_\w+?_s\d+)_f", progress=False)
    path = tmp_path_factory.mktemp("manifest") / "manifest.csv"
    write_manifest(rows, path)
    return path


@pytest.fixture(scope="session")
def tiny_run(synth_manifest, tmp_path_factory) -> Path:
    """A trained run: MobileNet v1 0.50 at 64 px with random weights (fast to compile; for the
    pruning, conversion and benchmark tests)."""
    from gram_tf.config import TrainConfig
    from gram_tf.train import train

    out = tmp_path_factory.mktemp("run") / "mnv1"
    cfg = TrainConfig(input_size=64, weights="none", epochs=30, augment_views=1, tensorboard=False)
    train(synth_manifest, "mobilenet_v1_050", out, cfg, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def pruned_run(tiny_run):
    """tiny_run pruned to 60% (backbone + head); returns (run_dir, prune summary)."""
    from gram_tf.config import PruneConfig
    from gram_tf.optimize import prune_run

    [summary] = prune_run(tiny_run, PruneConfig(levels=[0.6], epochs=2, batch_size=16), progress=False)
    return tiny_run / "pruned_60", summary
