"""The pruning fine-tune: TF-MOT masks driven by hand, distillation from the dense model, a warm-up
+ cosine learning rate, and the best epoch after the last mask update kept.

A hand-written loop (TF-MOT's documented custom-loop protocol: the UpdatePruningStep callback
called per batch and per epoch) because `fit` cannot give the distillation loss a teacher that
sees the same augmented batch, nor keep the best *sparse* epoch.
"""
from __future__ import annotations

import math

import numpy as np

from .. import data as data_mod
from ..train import evaluate_keras


def learning_rate_at(step: int, total: int, base: float, schedule: str, warmup_fraction: float) -> float:
    """Linear warm-up over warmup_fraction of the steps, then cosine decay to 0 (or constant)."""
    if schedule == "constant":
        return base
    warm = max(1, int(round(warmup_fraction * total)))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def distillation_loss(y_true, student_probs, teacher_probs, weight: float, temperature: float):
    """(1 - w) * cross-entropy(labels) + w * T^2 * KL(teacher_T || student_T) (Hinton et al. 2015).

    The models end in softmax, so log-probabilities stand in for logits (softmax(log p / T) is the
    tempered distribution of the same logits)."""
    import tensorflow as tf

    eps = 1e-7
    ce = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y_true, student_probs))
    if weight <= 0:
        return ce
    t = tf.nn.softmax(tf.math.log(teacher_probs + eps) / temperature)
    s = tf.nn.log_softmax(tf.math.log(student_probs + eps) / temperature)
    kl = tf.reduce_mean(tf.reduce_sum(t * (tf.math.log(t + eps) - s), axis=-1))
    return (1.0 - weight) * ce + weight * temperature ** 2 * kl


def finetune(wrapped, teacher, xs: dict, ys: dict, pre: dict, cfg, sched_info: dict, seed: int,
             progress: bool = True) -> dict:
    """Fine-tune a model holding PruneLowMagnitude wrappers; returns the history (per epoch).

    Weights of the epoch with the lowest validation loss among those after the final mask update
    are restored when cfg.keep == 'best' (the masks are fixed by then, so every candidate has the
    target sparsity)."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    n = wrapped.output_shape[-1]
    labels = list(range(n))
    val_split = "val" if len(xs["val"]) else "train"
    train_ds = data_mod.make_dataset(xs["train"], tf_keras.utils.to_categorical(ys["train"], n), pre,
                                     cfg.batch_size, augment=True, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(len(xs["train"]) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = tf_keras.optimizers.Adam(cfg.learning_rate)
    weight, temperature = float(cfg.distill), float(cfg.temperature)
    use_teacher = teacher is not None and weight > 0

    # one trace: slots built beforehand (creating them in the first call traces the step twice) and the
    # batch dimension left open (a smaller last batch would trace it again); a trace costs seconds
    opt.build(wrapped.trainable_variables)

    @tf.function(input_signature=train_ds.element_spec)
    def train_step(x, y):
        t = teacher(x, training=False) if use_teacher else y
        with tf.GradientTape() as tape:
            p = wrapped(x, training=True)
            loss = distillation_loss(y, p, t, weight if use_teacher else 0.0, temperature)
        variables = wrapped.trainable_variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    step_cb = tfmot.sparsity.keras.UpdatePruningStep()
    step_cb.set_model(wrapped)
    step_cb.on_train_begin()
    history = {"loss": [], "val_loss": [], "val_accuracy": [], "learning_rate": []}
    best = (np.inf, None, -1)
    if cfg.keep == "best" and sched_info["end_step"] <= 0:
        # masks final before the first step (refit): the untouched refit is a candidate too, once
        # TF-MOT has computed its masks (step 0, a forward pass in training mode) and applied them
        step_cb.on_train_batch_begin(batch=-1)
        for x, _ in train_ds.take(1):
            wrapped(x, training=True)
        step_cb.on_epoch_end(batch=-1)
        start = evaluate_keras(wrapped, xs[val_split], ys[val_split], pre, labels)
        best = (start["loss"], [v.numpy() for v in wrapped.weights], -1)
        history["start_val_loss"], history["start_val_accuracy"] = [float(start["loss"])], [float(start["accuracy"])]
    step = 0
    bar = _bar(total, progress)
    for epoch in range(cfg.epochs):
        losses = []
        for x, y in train_ds:
            lr = learning_rate_at(step, total, cfg.learning_rate, cfg.lr_schedule, cfg.warmup_fraction)
            opt.learning_rate.assign(lr)
            step_cb.on_train_batch_begin(batch=-1)
            losses.append(float(train_step(x, y)))
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses):.3f}")
        step_cb.on_epoch_end(batch=-1)
        val = evaluate_keras(wrapped, xs[val_split], ys[val_split], pre, labels)
        history["loss"].append(float(np.mean(losses)))
        history["val_loss"].append(float(val["loss"]))
        history["val_accuracy"].append(float(val["accuracy"]))
        history["learning_rate"].append(float(lr))
        masks_final = step > sched_info["end_step"]
        if cfg.keep == "best" and masks_final and val["loss"] < best[0]:
            best = (val["loss"], [v.numpy() for v in wrapped.weights], epoch)
    if bar is not None:
        bar.close()
    if cfg.keep == "best" and best[1] is not None:
        for v, value in zip(wrapped.weights, best[1]):
            v.assign(value)
    # 0 = the weights before the fine-tune were the best on validation
    history["kept_epoch"] = [float(best[2] + 1 if best[1] is not None else cfg.epochs)]
    return history


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="prune fine-tune", leave=False, dynamic_ncols=True)
