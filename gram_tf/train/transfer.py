"""Transfer learning: a frozen backbone as a feature extractor plus a small head (the study's setup),
with optional partial fine-tuning.

With feature caching (the default) the backbone runs once per image (and once per augmented view),
so head epochs cost seconds. Everything lands in a run directory (gram_tf.run) that every later
stage reads: model.keras, labels.txt, preprocessing.json, history.json, metrics.json, run.json and
confusion_matrix.png.
"""
from __future__ import annotations

import math

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .. import data as data_mod
from ..deploy import LABELS_FILE
from ..config import ALWAYS, AUTO, TrainConfig, config_hash
from ..errors import GramTFError
from ..io_utils import (atomic_path, atomic_write_json, atomic_write_text, folder_lock, read_json,
                        require_dir)
from ..models import (HEAD_DENSE, HEAD_DROPOUT, backbone_layers, build_classifier, count_macs,
                      feature_extractor, get_backbone, quiet_tensorflow, save_model)
from ..metrics import SUMMARY, classification_metrics
from ..run import MODEL_FILE, RUN_FILE, library_versions
from .batchnorm import recalibrate_batchnorm
from .evaluate import plot_confusion, predict_probs


def get_strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":  # reads the cluster from TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise GramTFError(f"unknown strategy {name!r}; choose default, mirrored or multi_worker")


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> Optional[dict]:
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(float)
    counts[counts == 0] = 1.0
    w = len(y) / (n_classes * counts)
    return {i: float(w[i]) for i in range(n_classes)}


def _extract(feature_model, images, preprocessing, batch_size, augment=False, views=1, seed=0):
    ds = data_mod.make_dataset(images, None, preprocessing, batch_size, augment=augment,
                               seed=seed, repeat_views=views)
    feats = feature_model.predict(ds, verbose=0)
    return feats.astype(np.float32)


def _head_model(feat_dim: int, n_classes: int, dropout: float):
    import tf_keras

    inp = tf_keras.Input((feat_dim,), name="features")
    x = tf_keras.layers.Dropout(dropout, name=HEAD_DROPOUT)(inp)
    out = tf_keras.layers.Dense(n_classes, activation="softmax", name=HEAD_DENSE)(x)
    return tf_keras.Model(inp, out, name="head")


def _resume_point(state_file: Path, ckpt: Path, prefix: str) -> tuple[int, dict]:
    """(first epoch to run, history of the epochs already done) of an interrupted `prefix` stage."""
    if not (state_file.is_file() and ckpt.is_file()):
        return 0, {}
    state = read_json(state_file)
    if state.get("stage") != prefix:
        return 0, {}
    return int(state["epoch"]) + 1, dict(state.get("history") or {})


def _joined(previous: dict, hist) -> dict:
    """The epochs before an interruption followed by those after it."""
    keys = dict.fromkeys([*previous, *hist.history])
    return {k: [float(v) for v in previous.get(k, [])] + [float(v) for v in hist.history.get(k, [])] for k in keys}


def _callbacks(out_dir: Path, cfg: TrainConfig, ckpt: Path, state_file: Path, prefix: str, patience: int,
               previous: dict | None = None):
    import tf_keras

    class SaveState(tf_keras.callbacks.Callback):
        """Weights and the whole history so far after every epoch: a killed run resumes from here."""

        history = {k: list(v) for k, v in (previous or {}).items()}

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            if not math.isfinite(logs.get("loss", 0.0)):  # stop before a diverged model is saved
                raise GramTFError(f"training ({prefix}) diverged at epoch {epoch + 1}: loss is {logs['loss']}; "
                                  "lower train.learning_rate (or the stage's learning rate) and check the weights "
                                  "file and the images for NaN")
            for k, v in logs.items():
                self.history.setdefault(k, []).append(v)
            with atomic_path(ckpt, suffix=".weights.h5") as tmp:
                self.model.save_weights(str(tmp))
            atomic_write_json(state_file, {"stage": prefix, "epoch": epoch, "logs": logs, "history": self.history})

    cbs = [tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                            restore_best_weights=True),
           SaveState()]
    if cfg.tensorboard:
        cbs.append(tf_keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs" / prefix),
                                                  write_graph=False, profile_batch=0))
    return cbs


@dataclass
class _Session:
    """What the steps of one training share: the model, decoded splits, settings, outputs."""
    model: object
    info: dict
    labels: list
    xs: dict
    ys: dict
    cfg: TrainConfig
    out_dir: Path
    seed: int
    strategy: object
    verbose: int
    val_split: str = "val"
    class_weight: Optional[dict] = None
    history: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    @property
    def pre(self) -> dict:
        return self.info["preprocessing"]

    def compile(self, model, learning_rate: float) -> None:
        import tf_keras

        with self.strategy.scope():
            model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                          loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=self.cfg.label_smoothing),
                          metrics=["accuracy"])


def train(manifest, backbone: str, out_dir, cfg: Optional[TrainConfig] = None, seed: int = 0,
          weights_dir=None, progress: bool = True, data_cache_dir=None) -> dict:
    """Train one backbone on a split manifest; returns the run info (also written to run.json)."""
    cfg = cfg or TrainConfig()
    get_backbone(backbone)  # a typo fails before any data is read
    quiet_tensorflow()
    out_dir = require_dir(out_dir, "the run directory (--out)")
    with folder_lock(out_dir, "gram-tf train"):
        return _train(manifest, backbone, out_dir, cfg, seed, weights_dir, progress, data_cache_dir)


def _train(manifest, backbone: str, out_dir: Path, cfg: TrainConfig, seed: int, weights_dir, progress: bool,
           data_cache_dir) -> dict:
    import tf_keras

    rows = data_mod.read_manifest(manifest)
    labels = data_mod.manifest_labels([r for r in rows if r["split"] != "excluded"])
    if len(labels) < 2:
        raise GramTFError(f"manifest {manifest} has fewer than 2 classes")
    tf_keras.utils.set_random_seed(seed)
    t_start = time.perf_counter()

    strategy = get_strategy(cfg.strategy)
    with strategy.scope():
        model, info = build_classifier(backbone, len(labels), cfg.input_size, cfg.weights,
                                       weights_dir, cfg.dropout, options={"gelu": cfg.gelu})
    s = _Session(model, info, labels, {}, {}, cfg, out_dir, seed, strategy, 1 if progress else 2)
    cache_dir = data_cache_dir or (out_dir / "cache" if cfg.cache == "disk" else None)
    for split in data_mod.SPLITS:
        s.xs[split], s.ys[split], _ = data_mod.load_split(rows, split, info["input_size"],
                                                          s.pre["resize"], progress, cache_dir=cache_dir)
    if len(s.xs["train"]) == 0:
        raise GramTFError(f"manifest {manifest} has no readable training images")
    s.val_split = "val" if len(s.xs["val"]) else "train"
    s.class_weight = class_weights(s.ys["train"], len(labels), cfg.class_weights)

    if cfg.recalibrate_bn == ALWAYS or (cfg.recalibrate_bn == AUTO and info["weights"] == "none"):
        recalibrate_batchnorm(model, s.xs["train"], s.pre)
    if cfg.cache != "none":
        _train_head_on_cached_features(s)
    else:
        _train_head_end_to_end(s)
    n_trainable_ft = _fine_tune(s) if cfg.unfreeze > 0 else 0
    for layer in model.layers:
        layer.trainable = True  # saved models are ready for pruning / QAT
    return _finish(s, manifest, backbone, n_trainable_ft, t_start)


def _features(s: _Session) -> dict:
    """Backbone features of every split (and augmented views of train), cached on disk if asked."""
    cfg, xs, pre = s.cfg, s.xs, s.pre
    feat_model = feature_extractor(s.model)
    key = config_hash({"b": s.info["backbone"], "s": s.info["input_size"], "w": s.info["weights"],
                       "v": cfg.augment_views, "a": cfg.augment, "seed": s.seed,
                       "n": {k: len(v) for k, v in xs.items()}})
    feat_file = s.out_dir / "cache" / f"features_{key}.npz"
    if cfg.cache == "disk" and feat_file.is_file():
        with np.load(feat_file) as z:
            return {k: z[k] for k in z.files}
    views = cfg.augment_views if cfg.augment else 1
    feats = {"train": _extract(feat_model, xs["train"], pre, 32, cfg.augment, views, s.seed),
             "train_y": np.tile(s.ys["train"], views)}
    if cfg.augment:  # also the un-augmented view, so the head sees clean images
        feats["train"] = np.concatenate([_extract(feat_model, xs["train"], pre, 32), feats["train"]])
        feats["train_y"] = np.concatenate([s.ys["train"], feats["train_y"]])
    for split in ("val", "test"):
        feats[split] = (_extract(feat_model, xs[split], pre, 32) if len(xs[split])
                        else np.zeros((0, feat_model.output_shape[-1]), np.float32))
    if cfg.cache == "disk":
        with atomic_path(feat_file, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **feats)
    return feats


def _train_head_on_cached_features(s: _Session) -> None:
    """Frozen backbone, cached features: the backbone runs once per image (view)."""
    import tf_keras

    cfg, n_classes = s.cfg, len(s.labels)
    t0 = time.perf_counter()
    feats = _features(s)
    s.timing["feature_extraction_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with s.strategy.scope():
        head = _head_model(feats["train"].shape[1], n_classes, cfg.dropout)
    s.compile(head, cfg.learning_rate)
    state_file = s.out_dir / "train_state.json"
    head_ckpt = s.out_dir / "checkpoints" / "head.weights.h5"
    initial_epoch, previous = _resume_point(state_file, head_ckpt, "head")
    if initial_epoch:
        head.load_weights(str(head_ckpt))
        print(f"resuming head training at epoch {initial_epoch + 1}")
    s.history["head"] = previous
    onehot = lambda y: tf_keras.utils.to_categorical(y, n_classes)  # noqa: E731
    vx = feats[s.val_split] if s.val_split != "train" else feats["train"]
    vy = s.ys["val"] if s.val_split != "train" else feats["train_y"]
    if initial_epoch < cfg.epochs:
        hist = head.fit(feats["train"], onehot(feats["train_y"]), batch_size=cfg.batch_size,
                        epochs=cfg.epochs, initial_epoch=initial_epoch,
                        validation_data=(vx, onehot(vy)), class_weight=s.class_weight, shuffle=True,
                        callbacks=_callbacks(s.out_dir, cfg, head_ckpt, state_file, "head",
                                             cfg.early_stopping_patience, previous),
                        verbose=s.verbose)
        s.history["head"] = _joined(previous, hist)
    s.model.get_layer(HEAD_DENSE).set_weights(head.get_layer(HEAD_DENSE).get_weights())
    s.timing["head_training_s"] = time.perf_counter() - t0


def _train_head_end_to_end(s: _Session) -> None:
    """No cache: the frozen backbone runs on every image in every epoch."""
    t0 = time.perf_counter()
    for layer in backbone_layers(s.model):
        layer.trainable = False
    s.compile(s.model, s.cfg.learning_rate)
    s.history["head"] = _fit_end_to_end(s.model, s.xs, s.ys, s.val_split, s.pre, s.cfg, s.cfg.epochs,
                                        s.class_weight, s.seed, s.out_dir, "head_uncached", s.verbose)
    s.timing["head_training_s"] = time.perf_counter() - t0


def _fine_tune(s: _Session) -> int:
    """Partial fine-tuning of the top fraction of backbone layers; BatchNorm stays frozen, which in
    Keras 2 also keeps it in inference mode (its statistics are not disturbed). Returns how many
    weighted layers were trained."""
    import tf_keras

    cfg = s.cfg
    t0 = time.perf_counter()
    layers = backbone_layers(s.model)
    n_unfreeze = int(round(cfg.unfreeze * len(layers)))
    n_trainable = 0
    for i, layer in enumerate(layers):
        train_it = i >= len(layers) - n_unfreeze
        if isinstance(layer, tf_keras.layers.BatchNormalization) and not cfg.train_batchnorm:
            train_it = False
        layer.trainable = train_it
        n_trainable += int(train_it and bool(layer.weights))
    s.compile(s.model, cfg.fine_tune_learning_rate)
    s.history["fine_tune"] = _fit_end_to_end(s.model, s.xs, s.ys, s.val_split, s.pre, cfg,
                                             cfg.fine_tune_epochs, s.class_weight, s.seed, s.out_dir,
                                             "fine_tune", s.verbose)
    if cfg.train_batchnorm and cfg.recalibrate_bn != "never":
        recalibrate_batchnorm(s.model, s.xs["train"], s.pre)
    s.timing["fine_tune_s"] = time.perf_counter() - t0
    return n_trainable


def _finish(s: _Session, manifest, backbone: str, n_trainable_ft: int, t_start: float) -> dict:
    """Evaluate on val/test and write the run directory; returns run.json's content."""
    import tf_keras

    model, labels, out_dir, cfg = s.model, s.labels, s.out_dir, s.cfg
    metrics = {}
    for split in ("val", "test"):
        if len(s.xs[split]):
            metrics[split] = classification_metrics(s.ys[split], predict_probs(model, s.xs[split], s.pre), labels)
    s.timing["total_s"] = time.perf_counter() - t_start
    save_model(model, out_dir / MODEL_FILE)
    atomic_write_text(out_dir / LABELS_FILE, "\n".join(labels) + "\n")
    atomic_write_json(out_dir / "preprocessing.json", {"input_size": s.info["input_size"], **s.pre})
    atomic_write_json(out_dir / "history.json", s.history)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if "test" in metrics:
        plot_confusion(metrics["test"]["confusion_matrix"], labels, out_dir / "confusion_matrix.png",
                       f"{backbone} test (n={metrics['test']['n']})")
    run = {
        "backbone": backbone, "input_size": s.info["input_size"], "labels": labels, "preprocessing": s.pre,
        "manifest": str(Path(manifest).resolve()), "weights": s.info["weights"], "seed": s.seed,
        "train": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "config_hash": config_hash(cfg), "params": int(model.count_params()),
        "macs": count_macs(model), "fine_tuned_layers": n_trainable_ft, "timing": s.timing,
        "metrics": {sp: {k: m[k] for k in SUMMARY} for sp, m in metrics.items()},
        "versions": library_versions(),
    }
    atomic_write_json(out_dir / RUN_FILE, run)
    state_file = out_dir / "train_state.json"
    if state_file.exists():
        state_file.unlink()
    tf_keras.backend.clear_session()
    return run


def _fit_end_to_end(model, xs, ys, val_split, pre, cfg, epochs, cw, seed, out_dir, prefix, verbose):
    import tf_keras

    n_classes = model.output_shape[-1]
    to_oh = lambda y: tf_keras.utils.to_categorical(y, n_classes)  # noqa: E731
    train_ds = data_mod.make_dataset(xs["train"], to_oh(ys["train"]), pre, cfg.batch_size,
                                     augment=cfg.augment, shuffle=True, seed=seed)
    val_ds = data_mod.make_dataset(xs[val_split], to_oh(ys[val_split]), pre, cfg.batch_size)
    ckpt = out_dir / "checkpoints" / f"{prefix}.weights.h5"
    state_file = out_dir / "train_state.json"
    initial_epoch, previous = _resume_point(state_file, ckpt, prefix)
    if initial_epoch:  # every cache mode resumes: the whole model's weights are checkpointed per epoch
        model.load_weights(str(ckpt))
        print(f"resuming {prefix} at epoch {initial_epoch + 1}")
    if initial_epoch >= epochs:
        return previous
    hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch, class_weight=cw,
                     callbacks=_callbacks(out_dir, cfg, ckpt, state_file, prefix, cfg.early_stopping_patience,
                                          previous),
                     verbose=verbose)
    return _joined(previous, hist)
