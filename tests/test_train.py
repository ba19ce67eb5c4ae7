"""Transfer learning: cached features, ImageNet vs random, outputs, resume, fine-tuning, strategies."""
import json

import h5py
import numpy as np
import pytest

from gram_tf.train import transfer as train_mod
from gram_tf.config import TrainConfig
from gram_tf.models import load_model
from gram_tf.train import class_weights, train

from .conftest import REAL_DATA, shared_or_skip


def _cfg(**kw):
    base = dict(input_size=48, weights="none", epochs=20, augment_views=1, tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def test_imagenet_features_beat_random_weights_on_synthetic(synth_manifest, weights_dir, tmp_path):
    acc = {}
    for w in ("imagenet", "none"):
        run = train(synth_manifest, "mobilenet_v2_035", tmp_path / w,
                    _cfg(input_size=64, weights=w, epochs=30, recalibrate_bn="never"),
                    weights_dir=weights_dir, progress=False)
        acc[w] = run["metrics"]["test"]["accuracy"]
    assert acc["imagenet"] >= acc["none"] + 0.15, acc


def test_imagenet_beats_random_features_on_real_micrographs(weights_dir, tmp_path):
    """E. coli vs P. aeruginosa (both Gram-negative rods): only morphology and texture differ."""
    from gram_tf import data

    root = shared_or_skip(REAL_DATA / "gramstainr_reference")
    rows = data.split_dataset(root, val=0.2, test=0.3, seed=0, progress=False)
    data.write_manifest(rows, tmp_path / "m.csv")
    acc = {}
    for w in ("imagenet", "none"):  # "none" with BN recalibration: the strong random baseline
        run = train(tmp_path / "m.csv", "mobilenet_v2_035", tmp_path / w, _cfg(input_size=96, weights=w, epochs=40),
                    weights_dir=weights_dir, progress=False, data_cache_dir=tmp_path / "cache")
        acc[w] = run["metrics"]["test"]["accuracy"]
    assert acc["imagenet"] >= 0.8 and acc["imagenet"] >= acc["none"] + 0.2, acc


def test_run_directory_holds_every_output(tiny_run):
    for name in ("model.keras", "labels.txt", "preprocessing.json", "history.json", "metrics.json",
                 "run.json", "confusion_matrix.png"):
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tiny_run / "metrics.json").read_text())["test"]
    for key in ("accuracy", "loss", "f1_macro", "auc", "per_class", "confusion_matrix"):
        assert key in metrics
    assert set(metrics["per_class"]) == {"gram_negative", "gram_positive"}
    assert all({"precision", "recall"} <= set(v) for v in metrics["per_class"].values())
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n"]
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["labels"] == ["gram_negative", "gram_positive"] and run["input_size"] == 64
    assert run["timing"]["feature_extraction_s"] > 0 and run["macs"] > 0
    pre = json.loads((tiny_run / "preprocessing.json").read_text())
    assert pre["input_size"] == 64 and pre["mean"] == [127.5] * 3
    model = load_model(tiny_run / "model.keras")
    assert model.output_shape == (None, 2)
    assert metrics["accuracy"] >= 0.75  # random features, recalibrated: far better than chance


def test_recalibration_makes_random_features_informative():
    from gram_tf.models import build_classifier, feature_extractor

    images = np.random.default_rng(0).integers(0, 255, (16, 48, 48, 3), np.uint8)
    pre = {"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}
    model, _ = build_classifier("mobilenet_v2_035", 2, 48, weights="none")
    feats = feature_extractor(model)
    x = (images / 127.5 - 1).astype(np.float32)
    before = feats(x).numpy().std(axis=0).mean()
    assert train_mod.recalibrate_batchnorm(model, images, pre) > 10
    after = feats(x).numpy().std(axis=0).mean()
    assert after > 100 * max(before, 1e-12)


@pytest.mark.parametrize("cache", ["disk", "none"])
def test_resume_after_interrupt(synth_manifest, tmp_path, monkeypatch, cache):
    import tf_keras

    original = train_mod._callbacks

    class Boom(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    def with_boom(*a, **k):
        return original(*a, **k) + [Boom()]

    cfg = _cfg(epochs=8, early_stopping_patience=100, cache=cache)
    monkeypatch.setattr(train_mod, "_callbacks", with_boom)
    with pytest.raises(KeyboardInterrupt):
        train(synth_manifest, "mobilenet_v2_035", tmp_path / "run", cfg, progress=False)
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["epoch"] == 2 and not (tmp_path / "run" / "run.json").exists()
    if cache == "disk":
        assert list((tmp_path / "run" / "cache").glob("features_*.npz"))
    monkeypatch.setattr(train_mod, "_callbacks", original)
    train(synth_manifest, "mobilenet_v2_035", tmp_path / "run", cfg, progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["head"]["loss"]) == 8  # every epoch: 1-3 before the interruption, 4-8 after
    assert history["head"]["loss"][:3] == state["history"]["loss"]  # resumed, not restarted
    assert not (tmp_path / "run" / "train_state.json").exists()


def test_partial_fine_tune_keeps_batchnorm_frozen(synth_manifest, weights_dir, tmp_path):
    run = train(synth_manifest, "mobilenet_v2_035", tmp_path / "ft",
                _cfg(weights="imagenet", epochs=2, unfreeze=0.3, fine_tune_epochs=1),
                weights_dir=weights_dir, progress=False)
    assert run["fine_tuned_layers"] > 5 and "fine_tune_s" in run["timing"]
    model = load_model(tmp_path / "ft" / "model.keras")
    with h5py.File(run["weights"], "r") as f:
        top_bn = f["Conv_1_bn"]["Conv_1_bn"]
        np.testing.assert_array_equal(model.get_layer("Conv_1_bn").moving_mean.numpy(), top_bn["moving_mean:0"][()])
        np.testing.assert_array_equal(model.get_layer("Conv_1_bn").gamma.numpy(), top_bn["gamma:0"][()])
        top_conv = f["Conv_1"]["Conv_1"]["kernel:0"][()]
    assert not np.array_equal(model.get_layer("Conv_1").kernel.numpy(), top_conv)  # it was fine-tuned


def test_mirrored_strategy_and_uncached_training(synth_manifest, tmp_path):
    run = train(synth_manifest, "mobilenet_v2_035", tmp_path / "m", _cfg(epochs=2, strategy="mirrored", cache="none"),
                progress=False)
    assert run["train"]["strategy"] == "mirrored" and run["metrics"]["test"]["n"] > 0


def test_balanced_class_weights():
    w = class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert w[1] == pytest.approx(3 * w[0]) and class_weights(np.array([0, 1]), 2, "none") is None


def test_a_diverged_epoch_stops_training_before_anything_is_saved(tmp_path):
    """A NaN loss ends the run with a one-line error naming the epoch, and no NaN weights are saved."""
    import tf_keras

    from gram_tf.config import TrainConfig
    from gram_tf.errors import GramTFError

    ckpt, state = tmp_path / "head.weights.h5", tmp_path / "state.json"
    save_state = [cb for cb in train_mod._callbacks(tmp_path, TrainConfig(tensorboard=False), ckpt, state, "head", 3)
                  if type(cb).__name__ == "SaveState"][0]
    save_state.set_model(tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)]))
    save_state.on_epoch_end(0, {"loss": 0.5})
    assert ckpt.is_file()
    ckpt.unlink()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(GramTFError, match=r"diverged at epoch 2: loss is (nan|inf).*train.learning_rate"):
            save_state.on_epoch_end(1, {"loss": bad})
    assert not ckpt.exists()
