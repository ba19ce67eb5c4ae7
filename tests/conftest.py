"""Shared fixtures. Heavy TensorFlow objects are built once per session at tiny sizes."""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one TensorFlow op thread per test worker: the two workers' default two-thread pools oversubscribe
    # the 2 cores (a heavy subset of the suite: 240 s -> 222 s)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import gram_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS_DIR = SHARED / "weights"
REAL_DATA = SHARED / "data" / "real"


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocked call (a FIFO's open, a parser's loop), where a
    test framework's own deadline only reports after the fact."""
    def expired(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def shared_or_skip(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only on developer and CI machines)")
    return path


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return shared_or_skip(WEIGHTS_DIR)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder `build(folder)` writes once per test session, not once per test worker: the first xdist
    worker to ask builds it (the other waits on the lock), in the folder both workers' temp folders share.
    Tests only read it; what they change they copy first."""
    import fcntl
    import shutil

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent / "built_once"
        root.mkdir(exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder, done = root / name, root / f".{name}.done"
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half-way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic Gram-stain ImageFolder (both classes), shared by the whole session."""
    from gram_tf.data.synth import synthesize_dataset

    return built_once(tmp_path_factory, "synth", lambda out: synthesize_dataset(
        out, per_class=48, size=96, seed=0, fields_per_specimen=1, progress=False))


@pytest.fixture(scope="session")
def synth_manifest(synth_dir, tmp_path_factory) -> Path:
    from gram_tf.data import SYNTH_GROUP_PATTERN, split_dataset, write_manifest

    def build(out):
        write_manifest(split_dataset(synth_dir, val=0.2, test=0.25, seed=0, group_pattern=SYNTH_GROUP_PATTERN,
                                     progress=False), out / "manifest.csv")

    return built_once(tmp_path_factory, "manifest", build) / "manifest.csv"


TINY_RUN_CONFIG = dict(input_size=64, weights="none", epochs=30, augment_views=1, tensorboard=False)
PRUNED_RUN_CONFIG = dict(levels=[0.6], epochs=2, batch_size=16, allocation="uniform")


def _trained(synth_manifest, tmp_path_factory) -> Path:
    from gram_tf.config import TrainConfig
    from gram_tf.train import train

    return built_once(tmp_path_factory, "mnv1", lambda out: train(
        synth_manifest, "mobilenet_v1_050", out, TrainConfig(**TINY_RUN_CONFIG), seed=0, progress=False))


@pytest.fixture(scope="session")
def tiny_run(synth_manifest, tmp_path_factory) -> Path:
    """A trained run: MobileNet v1 0.50 at 64 px with random weights (fast to compile; for the
    pruning, conversion and benchmark tests). Trained once per session; each worker gets its own copy
    (tests prune into it and write next to it)."""
    import shutil

    own = tmp_path_factory.mktemp("run") / "mnv1"
    shutil.copytree(_trained(synth_manifest, tmp_path_factory), own)
    return own


@pytest.fixture(scope="session")
def pruned_run(tiny_run, synth_manifest, tmp_path_factory):
    """tiny_run pruned to 60% (backbone + head); returns (run_dir, prune summary). Pruned once per session
    (in a copy of the trained run); copied into this worker's tiny_run, where prune_run finds it done."""
    import json
    import shutil

    from gram_tf.config import PruneConfig
    from gram_tf.optimize import prune_run

    cfg = PruneConfig(**PRUNED_RUN_CONFIG)

    def build(out):
        shutil.copytree(_trained(synth_manifest, tmp_path_factory), out, dirs_exist_ok=True)
        prune_run(out, cfg, progress=False)

    pruned = tiny_run / "pruned_60"
    shutil.copytree(built_once(tmp_path_factory, "mnv1_pruned", build) / "pruned_60", pruned)
    run_file = pruned / "run.json"
    record = json.loads(run_file.read_text())
    record["parent_run"] = str(tiny_run.resolve())
    record["prune"]["summary"]["out_dir"] = str(pruned)
    run_file.write_text(json.dumps(record))
    [summary] = prune_run(tiny_run, cfg, progress=False)
    return pruned, summary


MNV3_SIZE = 32


def synthetic_images(n, seed=0, size=MNV3_SIZE):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def mnv3():
    """MobileNetV3-Small at 32 px: hard-swish, which XNNPACK does not take in int8."""
    import tf_keras

    from gram_tf.models import build_classifier

    tf_keras.utils.set_random_seed(0)
    model, info = build_classifier("mobilenet_v3_small", 2, MNV3_SIZE, weights="none")
    pre = info["preprocessing"]
    rep = synthetic_images(8)
    from gram_tf.convert import convert_model

    return {"model": model, "pre": pre, "rep": rep,
            "fp32": convert_model(model, "fp32", MNV3_SIZE, pre),
            "int8": convert_model(model, "int8", MNV3_SIZE, pre, rep)}


# Longest files first: xdist hands whole files to the two workers in collection order, so starting
# the long ones early keeps both workers busy to the end (longest-processing-time-first).
LONG_FILES = ("test_bench_scripts.py", "test_pipeline_ray.py", "test_deit_study.py", "test_timm_backbones_smoke.py", "test_convert.py", "test_registry.py", "test_train.py", "test_pipeline.py",
              "test_bench.py", "test_hardening.py", "test_prune.py", "test_vit.py", "test_stream.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: order inside a file is kept
