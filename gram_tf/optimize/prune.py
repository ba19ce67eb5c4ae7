"""Magnitude pruning with TF-MOT (the study's "pruning" stage).

Like TF-MOT itself, layers are checked against an explicit registry before anything is wrapped:
every weighted layer is either pruned or reported with the reason it was left dense. Sparsity is
always measured from the weights after `strip_pruning`, never assumed from the schedule (a schedule
whose updates never fire prunes nothing, silently).
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import data as data_mod
from ..data import normalize_tf
from ..config import PruneConfig, config_hash
from ..errors import GramTFError
from ..io_utils import atomic_write_json, compressed_sizes, read_json
from ..metrics import SUMMARY, classification_metrics, within_drop
from ..models import custom_objects, load_model, save_model
from ..run import MODEL_FILE, RUN_FILE, library_versions, load_run
from ..train import evaluate_keras, predict_probs, recalibrate_batchnorm
from .finetune import finetune
from .fold import fold_batchnorm
from .reconstruct import reconstruct
from .sensitivity import SENSITIVITY_FILE, allocate, measure_sensitivity, plot_sensitivity

KERNEL_ATTRS = ("kernel", "depthwise_kernel")


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def _kernel_of(layer):
    for attr in KERNEL_ATTRS:
        w = getattr(layer, attr, None)
        if w is not None:
            return attr, w
    return None, None


def _why_not_prunable(layer, structured: bool) -> Optional[str]:
    """None when TF-MOT can prune this layer's kernel, else the reason."""
    import tf_keras

    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    tfmot = _tfmot()
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return None if layer.get_prunable_weights() else "declares no prunable weights"
    if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
        # TF-MOT's registry lists no prunable weight for depthwise kernels: they stay dense
        return "depthwise kernel (TF-MOT does not prune DepthwiseConv2D)"
    if not PruneRegistry.supports(layer):
        return f"{type(layer).__name__} is not in TF-MOT's prune registry"
    if structured and not isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense)):
        return "2:4 sparsity supports only Conv2D and Dense"
    return None


def prunable_layer_report(model, scope: str = "all", structured: bool = False,
                          head_layers=("head_dense",)) -> dict:
    """Which weighted layers would be pruned, and why the others would not."""
    layers, skipped = [], []
    n_weighted = 0
    for layer in model.layers:
        attr, kernel = _kernel_of(layer)
        if kernel is None and not hasattr(layer, "get_prunable_weights"):
            continue
        n_weighted += 1
        if scope == "head" and layer.name not in head_layers:
            skipped.append({"layer": layer.name, "reason": "outside scope 'head'"})
            continue
        reason = _why_not_prunable(layer, structured)
        if reason:
            skipped.append({"layer": layer.name, "reason": reason})
        else:
            layers.append(layer.name)
    return {"prunable": layers, "skipped": skipped, "n_prunable": len(layers), "n_weighted": n_weighted}


def make_schedule(cfg: PruneConfig, level: float, total_steps: int):
    """The TF-MOT schedule plus the (begin, end, frequency) actually used."""
    sparsity = _tfmot().sparsity.keras
    begin = max(0, int(cfg.begin_step))
    steps = (f"{total_steps} fine-tuning steps (prune.epochs {cfg.epochs} x {total_steps // max(1, cfg.epochs)} "
             f"batches of prune.batch_size {cfg.batch_size})")
    if begin >= total_steps:
        raise GramTFError(f"prune.begin_step {begin} is not before the end of the {steps}; lower prune.begin_step "
                          "or raise prune.epochs")
    if cfg.end_step is not None:  # the user's own value: name it
        end = cfg.end_step
        if end >= total_steps:
            raise GramTFError(f"prune.end_step {end} is past the {steps}; raise prune.epochs or lower end_step")
        if cfg.schedule == "polynomial" and end <= begin:
            raise GramTFError(f"prune.end_step {end} must be after prune.begin_step {begin}")
    else:
        # derived (70% of the steps), so it must fit whatever the data size: never blamed on a key the
        # user did not set (E19: 8 images, epochs 1 -> 1 step, and "prune.end_step 1 is past the 1 steps")
        end = min(max(begin + 1, int(0.7 * total_steps)), total_steps - 1)
        if cfg.schedule == "polynomial" and end <= begin:
            raise GramTFError(f"the polynomial pruning ramp needs at least {begin + 2} fine-tuning steps, but there "
                              f"are {steps}; raise prune.epochs, lower prune.batch_size or prune.begin_step, or "
                              "use prune.schedule constant")
    # TF-MOT updates masks only every `frequency` steps (default 100): with short fine-tunes the
    # default fires never. Aim for >= 10 updates, and land the last one exactly on end_step.
    freq = cfg.frequency or max(1, (end - begin) // 10)
    if end > begin:
        end = begin + freq * max(1, (end - begin) // freq)
    if cfg.schedule == "polynomial":
        sched = sparsity.PolynomialDecay(initial_sparsity=cfg.initial_sparsity, final_sparsity=level,
                                         begin_step=begin, end_step=end, frequency=freq)
    else:
        sched = sparsity.ConstantSparsity(target_sparsity=level, begin_step=begin, frequency=freq)
    return sched, {"begin_step": begin, "end_step": end, "frequency": freq, "total_steps": total_steps}


def apply_pruning(model, cfg: PruneConfig, level: float, total_steps: int, per_layer: Optional[dict] = None):
    """Wrap every prunable layer in scope; returns (wrapped_model, layer_report, schedule_info).

    per_layer maps layer names to their own final sparsity (TF-MOT takes one schedule per layer);
    layers it leaves out get `level`, and a layer mapped to 0 stays dense."""
    import tf_keras

    report = prunable_layer_report(model, cfg.scope, cfg.structured_2_4)
    if not report["prunable"]:
        raise GramTFError(f"no layer of {model.name} can be pruned in scope '{cfg.scope}'")
    per_layer = per_layer or {}
    _, sched_info = make_schedule(cfg, level, total_steps)
    targets = {name for name in report["prunable"] if per_layer.get(name, level) > 0}
    extra = {"sparsity_m_by_n": (2, 4)} if cfg.structured_2_4 else {}
    prune = _tfmot().sparsity.keras.prune_low_magnitude

    def wrap(layer):
        if layer.name not in targets:
            return layer
        schedule, _ = make_schedule(cfg, float(per_layer.get(layer.name, level)), total_steps)
        return prune(layer, pruning_schedule=schedule, **extra)

    with tf_keras.utils.custom_object_scope(custom_objects()):
        wrapped = tf_keras.models.clone_model(model, clone_function=wrap)
    return wrapped, report, sched_info


def strip(model):
    return _tfmot().sparsity.keras.strip_pruning(model)


def measure_sparsity(model) -> dict:
    """Per-layer and overall kernel sparsity measured from the weights (zeros / size)."""
    per_layer = {}
    zeros = total = 0
    for layer in model.layers:
        weights = []
        if hasattr(layer, "get_prunable_weights"):
            weights = list(layer.get_prunable_weights())
        else:
            _, k = _kernel_of(layer)
            weights = [k] if k is not None else []
        for w in weights:
            arr = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
            z = int(np.sum(arr == 0))
            per_layer[f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}"] = {
                "size": int(arr.size), "zeros": z, "sparsity": z / arr.size if arr.size else 0.0}
            zeros += z
            total += arr.size
    return {"overall": zeros / total if total else 0.0, "zeros": zeros, "total": total, "per_layer": per_layer}


def check_2_4(model, layer_names) -> bool:
    """True when every pruned kernel has at most 2 non-zeros in each group of 4 input channels."""
    for name in layer_names:
        _, k = _kernel_of(model.get_layer(name))
        arr = np.asarray(k.numpy())
        n_in, n_out = arr.shape[-2], arr.shape[-1]
        # blocks of 4 run along the input channels, per output channel and kernel position
        vecs = np.moveaxis(arr.reshape(-1, n_in, n_out), 1, 2).reshape(-1, n_in)
        pad = (-n_in) % 4
        vecs = np.pad(vecs, ((0, 0), (0, pad)))
        if np.any(np.count_nonzero(vecs.reshape(vecs.shape[0], -1, 4), axis=-1) > 2):
            return False
    return True


def keras_sizes(model, workdir: Path) -> dict:
    """Size of the model file with and without optimizer state, raw and zipped (honest baselines)."""
    out = {}
    workdir.mkdir(parents=True, exist_ok=True)
    weights_only = workdir / "_size_probe.weights.h5"
    model.save_weights(str(weights_only))
    out.update({f"keras_weights_{k}": v for k, v in compressed_sizes(weights_only).items()})
    weights_only.unlink()
    return out


MAX_DROP_SWEEP = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)  # levels tried by --max-drop when none are given
CHOICE_FILE = "pruning_choice.json"


def _load_splits(run: dict, progress: bool):
    rows = data_mod.read_manifest(run["manifest"])
    xs, ys = {}, {}
    for split in data_mod.SPLITS:
        xs[split], ys[split], _ = data_mod.load_split(rows, split, run["input_size"],
                                                      run["preprocessing"]["resize"], progress)
    return xs, ys


def _model_to_prune(run_dir, cfg: PruneConfig):
    model = load_model(Path(run_dir) / MODEL_FILE)
    return fold_batchnorm(model)[0] if cfg.batchnorm == "fold" else model


def run_sensitivity(run_dir, cfg: Optional[PruneConfig] = None, progress: bool = True,
                    run: Optional[dict] = None, xs=None, ys=None) -> dict:
    """Each prunable layer pruned alone at cfg.sensitivity_levels (val loss and accuracy);
    cached in RUN_DIR/sensitivity.json for this model file, folding and level list."""
    from ..io_utils import sha256_file

    cfg = cfg or PruneConfig()
    run = run or load_run(run_dir)
    path = Path(run_dir) / SENSITIVITY_FILE
    key = config_hash({"levels": [float(v) for v in cfg.sensitivity_levels], "batchnorm": cfg.batchnorm,
                       "scope": cfg.scope, "model": sha256_file(Path(run_dir) / MODEL_FILE)})
    if path.is_file():
        cached = read_json(path)
        if cached.get("key") == key:
            return cached
    if xs is None:
        xs, ys = _load_splits(run, progress)
    split = "val" if len(xs["val"]) else "train"
    model = _model_to_prune(run_dir, cfg)
    layers = prunable_layer_report(model, cfg.scope)["prunable"]
    sens = measure_sensitivity(model, layers, cfg.sensitivity_levels, xs[split], ys[split],
                               run["preprocessing"], progress)
    sens.update({"key": key, "split": split, "batchnorm": cfg.batchnorm})
    atomic_write_json(path, sens)
    plot_sensitivity(sens, Path(run_dir) / "sensitivity.png")
    return sens


def pick_within_budget(summaries: list[dict], dense_val_accuracy: float, max_drop_pp: float) -> Optional[dict]:
    """The sparsest level whose validation accuracy is at most max_drop_pp points below the dense
    model's (None when no level is within it)."""
    ok = [s for s in summaries
          if s.get("val_accuracy") is not None and within_drop(dense_val_accuracy, s["val_accuracy"], max_drop_pp / 100)]
    return max(ok, key=lambda s: s["sparsity_target"]) if ok else None


def prune_run(run_dir, cfg: Optional[PruneConfig] = None, seed: int = 0, progress: bool = True,
              levels=None) -> list[dict]:
    """Prune a trained run at each level in cfg.levels; writes RUN_DIR/pruned_<pct>/ per level.

    With cfg.max_drop_pp set, also writes RUN_DIR/pruning_choice.json naming the sparsest level
    within that validation-accuracy budget (the sweep defaults to MAX_DROP_SWEEP)."""
    cfg = cfg or PruneConfig()
    run = load_run(run_dir)
    levels = list(levels if levels is not None else cfg.levels)
    if not levels and cfg.max_drop_pp is not None:
        levels = list(MAX_DROP_SWEEP)
    if not levels:
        raise GramTFError("no pruning level given: pass --final-sparsity F, --sweep 0.1,...,0.9 or --max-drop-pp PP")
    for level in levels:
        if not 0 < float(level) < 1:
            raise GramTFError(f"sparsity level {level} must be between 0 and 1 (exclusive)")
    load_model(Path(run_dir) / MODEL_FILE)  # a model file gram_tf refuses fails before any data is read
    xs, ys = _load_splits(run, progress)
    sens = None
    if cfg.allocation == "sensitivity" and not cfg.structured_2_4:  # 2:4 is one pattern for every layer
        sens = run_sensitivity(run_dir, cfg, progress, run, xs, ys)
    results = []
    for level in sorted(float(v) for v in levels):
        out_dir = Path(run_dir) / f"pruned_{int(round(level * 100)):02d}"
        key = config_hash({"prune": cfg, "level": level, "parent": run.get("config_hash")})
        done = out_dir / RUN_FILE
        if done.is_file():
            prev = read_json(done)
            if prev.get("prune", {}).get("key") == key:
                results.append(prev["prune"]["summary"])
                continue
        per_layer = allocate(sens, level, cfg.max_layer_sparsity) if sens else None
        results.append(_prune_level(run_dir, run, xs, ys, cfg, level, key, out_dir, seed, progress, per_layer))
    if cfg.max_drop_pp is not None:
        dense = (run.get("metrics", {}).get("val") or run.get("metrics", {}).get("train") or {}).get("accuracy")
        chosen = pick_within_budget(results, dense, cfg.max_drop_pp) if dense is not None else None
        atomic_write_json(Path(run_dir) / CHOICE_FILE, {
            "max_drop_pp": cfg.max_drop_pp, "dense_val_accuracy": dense, "chosen": chosen,
            "candidates": [{k: r.get(k) for k in ("sparsity_target", "val_accuracy", "accuracy", "out_dir")}
                           for r in results]})
        for r in results:
            r["chosen"] = chosen is not None and r["sparsity_target"] == chosen["sparsity_target"]
    return results


def _prune_level(run_dir, run: dict, xs: dict, ys: dict, cfg: PruneConfig, level: float, key: str,
                 out_dir: Path, seed: int, progress: bool, per_layer: Optional[dict] = None) -> dict:
    """Prune + fine-tune one level, check the sparsity reached, evaluate and write pruned_<pct>/."""
    import tf_keras

    pre, labels = run["preprocessing"], run["labels"]
    val_split = "val" if len(xs["val"]) else "train"
    total_steps = math.ceil(len(xs["train"]) / cfg.batch_size) * cfg.epochs
    t0 = time.perf_counter()
    tf_keras.utils.set_random_seed(seed)
    teacher = load_model(Path(run_dir) / MODEL_FILE) if cfg.distill > 0 else None
    model = load_model(Path(run_dir) / MODEL_FILE)
    folded = []
    if cfg.batchnorm == "fold":
        model, folded = fold_batchnorm(model)
    dropout = {}
    for layer in model.layers:  # "frozen": BatchNorm in inference mode, as in fine-tuning
        layer.trainable = cfg.batchnorm != "frozen" or not isinstance(layer, tf_keras.layers.BatchNormalization)
        if isinstance(layer, tf_keras.layers.Dropout) and cfg.method == "refit":
            # the fine-tune repairs a refit model toward the dense one; dropout noise on the pooled
            # features only pushes it away (measured: val accuracy 0.94 -> 0.80 in the first epoch)
            dropout[layer.name], layer.rate = layer.rate, 0.0
    refit = {}
    if cfg.method == "refit":
        # masks chosen once, kept weights refit to the dense layer outputs; the fine-tune then
        # keeps these masks (constant schedule from step 0) and only recovers what is left
        report = prunable_layer_report(model, cfg.scope, cfg.structured_2_4)
        if not cfg.structured_2_4:
            dense_folded = fold_batchnorm(teacher or load_model(Path(run_dir) / MODEL_FILE))[0] \
                if cfg.batchnorm == "fold" else (teacher or load_model(Path(run_dir) / MODEL_FILE))
            targets = {name: float((per_layer or {}).get(name, level)) for name in report["prunable"]}
            refit = reconstruct(model, dense_folded, xs["train"], targets, lambda b: normalize_tf(b, pre),
                                seed=seed, progress=progress)
        cfg = dataclasses.replace(cfg, schedule="constant", begin_step=0)
    wrapped, report, sched_info = apply_pruning(model, cfg, level, total_steps, per_layer=per_layer)
    if cfg.method == "refit":
        sched_info["end_step"] = 0  # the masks are final from the first step
    hist = finetune(wrapped, teacher, xs, ys, pre, cfg, sched_info, seed, progress)
    stripped = strip(wrapped)
    for name, rate in dropout.items():
        stripped.get_layer(name).rate = rate
    bn_note = _maybe_recalibrate(stripped, xs, ys, val_split, pre) if cfg.batchnorm == "frozen" else {"kept": False}
    measured = measure_sparsity(stripped)
    pruned_sparsity = _pruned_layers_sparsity(measured, report["prunable"])
    if pruned_sparsity < 0.5 * level:
        raise GramTFError(
            f"pruning to {level} reached only {pruned_sparsity:.3f} sparsity on the pruned layers "
            f"(schedule {sched_info}); raise prune.epochs or lower prune.frequency")
    metrics = {split: classification_metrics(ys[split], predict_probs(stripped, xs[split], pre), labels)
               for split in ("val", "test") if len(xs[split])}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(stripped, out_dir / MODEL_FILE)
    sizes = keras_sizes(stripped, out_dir)
    two_four = check_2_4(stripped, report["prunable"]) if cfg.structured_2_4 else None
    summary = {
        "sparsity_target": level, "sparsity": measured["overall"],
        "pruned_layers_sparsity": pruned_sparsity,
        "pruned_layers": len(report["prunable"]), "skipped_layers": len(report["skipped"]),
        "accuracy": metrics.get("test", {}).get("accuracy"), "val_accuracy": metrics.get("val", {}).get("accuracy"),
        "zip_bytes": sizes["keras_weights_zip_bytes"],
        "structured_2_4_ok": two_four, "bn_recalibrated": bn_note["kept"], "batchnorm_folded": len(folded),
        "method": cfg.method, "refit_layers": len(refit),
        "allocation": "sensitivity" if per_layer else "uniform", "kept_epoch": int(hist["kept_epoch"][0]),
        "seconds": time.perf_counter() - t0, "out_dir": str(out_dir),
    }
    atomic_write_json(out_dir / "sparsity_report.json",
                      {"summary": summary, "schedule": {"type": cfg.schedule, **sched_info},
                       "pruned": report["prunable"], "skipped": report["skipped"],
                       "per_layer_target": per_layer or {name: level for name in report["prunable"]},
                       "refit": refit,
                       "per_layer": measured["per_layer"]})
    new_run = {k: v for k, v in run.items() if k != "run_dir"}
    new_run.update({
        "parent_run": str(Path(run_dir).resolve()),
        "metrics": {s: {k: m[k] for k in SUMMARY} for s, m in metrics.items()},
        "prune": {"key": key, "summary": summary, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                  "history": hist},
        "sparsity_target": level, "sparsity": measured["overall"], "sizes": sizes,
        "versions": library_versions(),
    })
    atomic_write_json(out_dir / RUN_FILE, new_run)
    tf_keras.backend.clear_session()
    return summary


def _maybe_recalibrate(model, xs, ys, val_split, pre) -> dict:
    """Pruning changes every layer's activation statistics, and BatchNorm was frozen during the
    fine-tune. Re-estimate BN statistics on the training images and keep them only if the
    validation loss improves (a random-feature backbone collapses without it; a pretrained one
    usually gains a little)."""
    def val_loss():
        labels = list(range(model.output_shape[-1]))
        return evaluate_keras(model, xs[val_split], ys[val_split], pre, labels)["loss"]

    import tf_keras

    bns = [l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    if not bns:
        return {"kept": False}
    before = val_loss()
    saved = [l.get_weights() for l in bns]
    recalibrate_batchnorm(model, xs["train"], pre)
    after = val_loss()
    if after < before:
        return {"kept": True, "val_loss_before": before, "val_loss_after": after}
    for l, w in zip(bns, saved):
        l.set_weights(w)
    return {"kept": False, "val_loss_before": before, "val_loss_after": after}


def _pruned_layers_sparsity(measured: dict, pruned_layers) -> float:
    z = t = 0
    names = set(pruned_layers)
    for key, v in measured["per_layer"].items():
        if key.split("/")[0] in names:
            z += v["zeros"]
            t += v["size"]
    return z / t if t else 0.0
