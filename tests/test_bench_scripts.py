"""The benchmark scripts' own logic: the sweep table and the int8 weight simulation."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _row(variant, ms, acc, partitions=1, choice=""):
    return {"runtime": "litert", "threads": "2", "variant": variant, "latency_ms_p50": str(ms),
            "accuracy": str(acc), "macs": "300000000", "n_test": "96", "partitions": str(partitions),
            "fast_choice": choice}


def test_sweep_table_ratios_and_within_1pp():
    from sweep_table import table

    rows = {
        # int8 faster but loses 2 images; int8-fast slower than fp32 but accurate
        "a": {"fp32": _row("fp32", 10.0, 0.80), "int8": _row("int8", 8.0, 0.78, 1),
              "int8-fast": _row("int8-fast", 12.5, 0.80, 2, "delegate-only (3 float)")},
        "b": {"fp32": _row("fp32", 10.0, 0.80), "int8": _row("int8", 20.0, 0.50, 19),
              "int8-fast": _row("int8-fast", 9.0, 0.60, 2, "accuracy-guarded (64 float)")},
    }
    lines, ratios = table(rows)
    assert ratios["a"]["int8-fast"] == 0.8 and ratios["a"]["best_within_1pp"] == 0.8
    assert ratios["b"]["best_within_1pp"] is None and abs(ratios["b"]["int8-fast"] - 10 / 9) < 1e-9
    line_a = next(ln for ln in lines if ln.startswith("| a |"))
    assert "8.0 (-2.0)" in line_a and "1.25x / 0.80x" in line_a and "0.80x (int8-fast)" in line_a
    assert "none within 1 pp" in next(ln for ln in lines if ln.startswith("| b |"))


def test_int8_weight_simulation_rounds_per_channel_and_restores():
    import tf_keras

    from int8_accuracy import int8_weight_probs

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same")(inp)
    x = tf_keras.layers.Conv2D(4, 1)(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(2, activation="softmax")(x))
    conv = model.layers[2]
    # one output channel 1000x larger than the others: per-tensor rounding would zero the rest
    k = conv.kernel.numpy()
    k[..., 0] *= 1000.0
    conv.kernel.assign(k)
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3)).astype(np.uint8)
    from gram_tf.runtime import DEFAULT_PREPROCESSING

    pre = dict(DEFAULT_PREPROCESSING)

    seen = {}
    original = tf_keras.Model.predict

    def spy(self, *a, **kw):  # look at the kernel while the rounded weights are in place
        seen["kernel"] = conv.kernel.numpy().copy()
        return original(self, *a, **kw)

    tf_keras.Model.predict = spy
    try:
        probs = int8_weight_probs(model, images, pre)
    finally:
        tf_keras.Model.predict = original
    assert probs.shape == (4, 2)
    rounded = seen["kernel"]
    scale = np.abs(k).max(axis=(0, 1, 2)) / 127.0
    steps = rounded / scale
    assert np.allclose(steps, np.round(steps), atol=1e-3)  # on each channel's own int8 grid
    assert np.count_nonzero(rounded[..., 1:]) > 0  # small channels not flushed to zero
    for w0, w1 in zip(before, model.get_weights()):
        assert np.array_equal(w0, w1)


def test_activation_ranges_flags_per_image_scale_drift():
    import tf_keras

    from gram_tf.runtime import DEFAULT_PREPROCESSING
    from int8_accuracy import activation_ranges

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(4, 1, use_bias=False)(inp)
    model = tf_keras.Model(inp, tf_keras.layers.BatchNormalization()(x))
    pre = dict(DEFAULT_PREPROCESSING)
    rng = np.random.default_rng(0)
    steady = rng.integers(100, 156, (8, 8, 8, 3)).astype(np.uint8)  # every image spans the same range
    drifting = steady.copy()
    drifting[0] = np.where(rng.random((8, 8, 3)) < 0.5, 0, 255)  # one image with a 9x wider range

    calm, wild = activation_ranges(model, steady, pre), activation_ranges(model, drifting, pre)
    assert calm["tensors"] == wild["tensors"] == 1  # the conv output is left out (BN folds into it)
    assert calm["median_calib_over_image_range"] < 2 < 4 < wild["median_calib_over_image_range"]
    assert wild["median_int8_steps_per_std"] < calm["median_int8_steps_per_std"] / 3


def test_bench_int8_smoke_run_compares_onnx_runtime(tmp_path):
    """The int8 benchmark end to end at the smallest size, ONNX Runtime included (its import broke once
    behind a broad except that printed 'peers skipped')."""
    import csv
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "bench_int8.py"), "--backbones", "mobilenet_v1_025",
           "--variants", "fp32,int8", "--threads", "1", "--target-threads", "1", "--size", "32", "--train", "8",
           "--test", "8", "--val", "8", "--runs", "2", "--rounds", "1", "--warmup", "1", "--fast-runs", "1",
           "--calibration", "4", "--name", "smoke"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "GRAM_TF_RESULTS_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "peers skipped" not in done.stdout, done.stdout[-2000:]
    with open(tmp_path / "smoke.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["runtime"] for r in rows} >= {"litert", "onnxruntime"}
