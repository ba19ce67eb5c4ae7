"""Transfer learning: a frozen backbone as a feature extractor plus a small head (the study's setup),
with optional partial fine-tuning.

With feature caching (the default) the backbone runs once per image (and once per augmented view),
so head epochs cost seconds. Everything lands in a run directory that every later stage reads:
model.keras, labels.txt, preprocessing.json, history.json, metrics.json, run.json and
confusion_matrix.png.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from . import data as data_mod
from .config import TrainConfig, config_hash
from .errors import GramTFError
from .io_utils import atomic_path, atomic_write_json, atomic_write_text, read_json
from .metrics import classification_metrics

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"


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


def library_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "keras-cv", "numpy",
                "onnxruntime", "tf2onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def load_run(run_dir) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise GramTFError(f"{run_dir} is not a finished training run (no {RUN_FILE}); run 'gram-tf train' first")
    info = read_json(path)
    info["run_dir"] = str(run_dir)
    return info


def quiet_tensorflow() -> None:
    """Keep TensorFlow's Python logger to errors (its retracing notices drown the progress bars)."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")


def load_model(path):
    """Load a .keras model saved by gram_tf (custom transformer layers included)."""
    import tf_keras

    quiet_tensorflow()
    from .models import vit

    with tf_keras.utils.custom_object_scope(vit.custom_objects()):
        return tf_keras.models.load_model(str(path), compile=False)


def save_model(model, path) -> Path:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(str(tmp))
    return Path(path)


def plot_confusion(cm, labels, path, title="") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(2 + 0.9 * len(labels), 1.6 + 0.9 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _extract(feature_model, images, preprocessing, batch_size, augment=False, views=1, seed=0):
    ds = data_mod.make_dataset(images, None, preprocessing, batch_size, augment=augment,
                               seed=seed, repeat_views=views)
    feats = feature_model.predict(ds, verbose=0)
    return feats.astype(np.float32)


def recalibrate_batchnorm(model, images: np.ndarray, preprocessing: dict, max_images: int = 256) -> int:
    """Set every BatchNormalization's moving statistics to the statistics of `images`.

    With random weights (no ImageNet file) the default statistics (mean 0, variance 1) let the
    signal vanish through a deep network and every image gets the same features; one forward
    pass in training mode with momentum 0 normalises each layer on real data instead, which
    turns the random backbone into a usable random-feature extractor. Also repairs the
    statistics after a short from-scratch fine-tune. Returns the number of layers updated.
    """
    import tf_keras

    bns = [l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    if not bns or len(images) == 0:
        return 0
    x = data_mod.normalize_tf(images[:max_images], preprocessing)
    saved = [(l.momentum, l.trainable) for l in bns]
    for l in bns:
        l.momentum, l.trainable = 0.0, True
    model(x, training=True)
    for l, (m, t) in zip(bns, saved):
        l.momentum, l.trainable = m, t
    return len(bns)


def _head_model(feat_dim: int, n_classes: int, dropout: float):
    import tf_keras

    from .models import HEAD_DENSE, HEAD_DROPOUT

    inp = tf_keras.Input((feat_dim,), name="features")
    x = tf_keras.layers.Dropout(dropout, name=HEAD_DROPOUT)(inp)
    out = tf_keras.layers.Dense(n_classes, activation="softmax", name=HEAD_DENSE)(x)
    return tf_keras.Model(inp, out, name="head")


def _callbacks(out_dir: Path, cfg: TrainConfig, ckpt: Path, state_file: Path, prefix: str, patience: int):
    import tf_keras

    class SaveState(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with atomic_path(ckpt, suffix=".weights.h5") as tmp:
                self.model.save_weights(str(tmp))
            atomic_write_json(state_file, {"stage": prefix, "epoch": epoch,
                                           "logs": {k: float(v) for k, v in (logs or {}).items()}})

    cbs = [tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                            restore_best_weights=True),
           SaveState()]
    if cfg.tensorboard:
        cbs.append(tf_keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs" / prefix),
                                                  write_graph=False, profile_batch=0))
    return cbs


def train(manifest, backbone: str, out_dir, cfg: Optional[TrainConfig] = None, seed: int = 0,
          weights_dir=None, progress: bool = True, data_cache_dir=None) -> dict:
    """Train one backbone on a split manifest; returns the run info (also written to run.json)."""
    import tf_keras

    from .models import (HEAD_DENSE, backbone_layers, build_classifier, count_macs,
                         feature_extractor, get_backbone)

    cfg = cfg or TrainConfig()
    get_backbone(backbone)  # a typo fails before any data is read
    quiet_tensorflow()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    size, pre = info["input_size"], info["preprocessing"]
    cache_dir = data_cache_dir or (out_dir / "cache" if cfg.cache == "disk" else None)
    xs, ys = {}, {}
    for split in data_mod.SPLITS:
        xs[split], ys[split], _ = data_mod.load_split(rows, split, size, pre["resize"], progress,
                                                      cache_dir=cache_dir)
    if len(xs["train"]) == 0:
        raise GramTFError(f"manifest {manifest} has no readable training images")
    val_split = "val" if len(xs["val"]) else "train"
    n_classes = len(labels)
    cw = class_weights(ys["train"], n_classes, cfg.class_weights)
    timing = {}
    history = {}
    state_file = out_dir / "train_state.json"
    head_ckpt = out_dir / "checkpoints" / "head.weights.h5"
    resume_state = read_json(state_file) if state_file.is_file() and head_ckpt.is_file() else None
    verbose = 1 if progress else 2

    if cfg.recalibrate_bn == "always" or (cfg.recalibrate_bn == "auto" and info["weights"] == "none"):
        recalibrate_batchnorm(model, xs["train"], pre)
    if cfg.cache != "none":
        # --- frozen backbone, cached features: the backbone runs once per image (view)
        t0 = time.perf_counter()
        feat_model = feature_extractor(model)
        feat_file = out_dir / "cache" / f"features_{config_hash({'b': backbone, 's': size, 'w': info['weights'], 'v': cfg.augment_views, 'a': cfg.augment, 'seed': seed, 'n': {k: len(v) for k, v in xs.items()}})}.npz"
        if cfg.cache == "disk" and feat_file.is_file():
            with np.load(feat_file) as z:
                feats = {k: z[k] for k in z.files}
        else:
            views = cfg.augment_views if cfg.augment else 1
            feats = {"train": _extract(feat_model, xs["train"], pre, 32, cfg.augment, views, seed),
                     "train_y": np.tile(ys["train"], views)}
            if cfg.augment:  # also the un-augmented view, so the head sees clean images
                feats["train"] = np.concatenate([_extract(feat_model, xs["train"], pre, 32), feats["train"]])
                feats["train_y"] = np.concatenate([ys["train"], feats["train_y"]])
            for split in ("val", "test"):
                feats[split] = _extract(feat_model, xs[split], pre, 32) if len(xs[split]) else np.zeros((0, feat_model.output_shape[-1]), np.float32)
            if cfg.cache == "disk":
                with atomic_path(feat_file, suffix=".npz") as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **feats)
        timing["feature_extraction_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with strategy.scope():
            head = _head_model(feats["train"].shape[1], n_classes, cfg.dropout)
            head.compile(optimizer=tf_keras.optimizers.Adam(cfg.learning_rate),
                         loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                         metrics=["accuracy"])
        initial_epoch = 0
        if resume_state and resume_state.get("stage") == "head":
            head.load_weights(str(head_ckpt))
            initial_epoch = int(resume_state["epoch"]) + 1
            print(f"resuming head training at epoch {initial_epoch + 1}")
        onehot = lambda y: tf_keras.utils.to_categorical(y, n_classes)  # noqa: E731
        vx = feats[val_split] if val_split != "train" else feats["train"]
        vy = ys["val"] if val_split != "train" else feats["train_y"]
        if initial_epoch < cfg.epochs:
            hist = head.fit(feats["train"], onehot(feats["train_y"]), batch_size=cfg.batch_size,
                            epochs=cfg.epochs, initial_epoch=initial_epoch,
                            validation_data=(vx, onehot(vy)), class_weight=cw, shuffle=True,
                            callbacks=_callbacks(out_dir, cfg, head_ckpt, state_file, "head",
                                                 cfg.early_stopping_patience),
                            verbose=verbose)
            history["head"] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        model.get_layer(HEAD_DENSE).set_weights(head.get_layer(HEAD_DENSE).get_weights())
        timing["head_training_s"] = time.perf_counter() - t0
    else:
        # --- no cache: the frozen backbone runs on every image in every epoch
        t0 = time.perf_counter()
        for layer in backbone_layers(model):
            layer.trainable = False
        with strategy.scope():
            model.compile(optimizer=tf_keras.optimizers.Adam(cfg.learning_rate),
                          loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                          metrics=["accuracy"])
        history["head"] = _fit_end_to_end(model, xs, ys, val_split, pre, cfg, cfg.epochs, cw, seed,
                                          out_dir, "head_uncached", verbose)
        timing["head_training_s"] = time.perf_counter() - t0

    n_trainable_ft = 0
    if cfg.unfreeze > 0:
        # --- partial fine-tuning: top fraction of backbone layers; BatchNorm stays frozen, which
        # in Keras 2 also keeps it in inference mode (its statistics are not disturbed)
        t0 = time.perf_counter()
        layers = backbone_layers(model)
        n_unfreeze = int(round(cfg.unfreeze * len(layers)))
        for i, layer in enumerate(layers):
            train_it = i >= len(layers) - n_unfreeze
            if isinstance(layer, tf_keras.layers.BatchNormalization) and not cfg.train_batchnorm:
                train_it = False
            layer.trainable = train_it
            n_trainable_ft += int(train_it and bool(layer.weights))
        with strategy.scope():
            model.compile(optimizer=tf_keras.optimizers.Adam(cfg.fine_tune_learning_rate),
                          loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                          metrics=["accuracy"])
        history["fine_tune"] = _fit_end_to_end(model, xs, ys, val_split, pre, cfg,
                                               cfg.fine_tune_epochs, cw, seed, out_dir,
                                               "fine_tune", verbose)
        if cfg.train_batchnorm and cfg.recalibrate_bn != "never":
            recalibrate_batchnorm(model, xs["train"], pre)
        timing["fine_tune_s"] = time.perf_counter() - t0
    for layer in model.layers:
        layer.trainable = True  # saved models are ready for pruning / QAT

    # --- evaluation and artifacts
    metrics = {}
    for split in ("val", "test"):
        if len(xs[split]):
            probs = model.predict(data_mod.make_dataset(xs[split], None, pre, 32), verbose=0)
            metrics[split] = classification_metrics(ys[split], probs, labels)
    timing["total_s"] = time.perf_counter() - t_start
    save_model(model, out_dir / MODEL_FILE)
    atomic_write_text(out_dir / "labels.txt", "\n".join(labels) + "\n")
    atomic_write_json(out_dir / "preprocessing.json", {"input_size": size, **pre})
    atomic_write_json(out_dir / "history.json", history)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if "test" in metrics:
        plot_confusion(metrics["test"]["confusion_matrix"], labels, out_dir / "confusion_matrix.png",
                       f"{backbone} test (n={metrics['test']['n']})")
    run = {
        "backbone": backbone, "input_size": size, "labels": labels, "preprocessing": pre,
        "manifest": str(Path(manifest).resolve()), "weights": info["weights"], "seed": seed,
        "train": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "config_hash": config_hash(cfg), "params": int(model.count_params()),
        "macs": count_macs(model), "fine_tuned_layers": n_trainable_ft, "timing": timing,
        "metrics": {s: {k: m[k] for k in ("n", "accuracy", "loss", "f1_macro", "auc")} for s, m in metrics.items()},
        "versions": library_versions(),
    }
    atomic_write_json(out_dir / RUN_FILE, run)
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
    hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=cw,
                     callbacks=_callbacks(out_dir, cfg, ckpt, out_dir / "train_state.json", prefix,
                                          cfg.early_stopping_patience),
                     verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def evaluate_keras(model, images, y, preprocessing, labels) -> dict:
    probs = model.predict(data_mod.make_dataset(images, None, preprocessing, 32), verbose=0)
    return classification_metrics(y, probs, labels)
