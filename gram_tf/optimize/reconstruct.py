"""One-shot pruning with layer-wise least-squares reconstruction (no labels needed).

Layer by layer, in graph order: collect the layer's inputs in the network pruned so far and its
outputs in the dense network on the same calibration images; choose each output channel's
weights to keep by |w| * ||x|| (Sun et al. 2023, "Wanda"); then refit the kept weights and the
bias by ridge-regularised least squares so the pruned layer reproduces the dense layer's outputs
(the layer-wise objective of Optimal Brain Compression, Frantar & Alistarh 2022, solved exactly
for a fixed mask). Each layer also absorbs the error of the layers pruned before it.

This is what lets a pretrained backbone keep its features at 80-90 % sparsity from a few
hundred images, where gradient fine-tuning alone drifts away (docs/pruning.md has the numbers).
Supported: Conv2D (groups 1; k x k via patches) and Dense on the last axis. Other layers are
left to the fine-tune, and reported.
"""
from __future__ import annotations

import numpy as np

ROWS_PER_IMAGE = 64  # spatial positions sampled per image and layer (plenty for <= 1280 inputs)
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # pull toward the dense weights, x the mean diagonal of X^T X
CALIBRATION_IMAGES = 160  # a random subset of the training images (sorted by class in the manifest)


def _rows(layer, x: np.ndarray) -> np.ndarray:
    """The layer's input as a (rows, features) matrix whose product with the flattened kernel
    gives the pre-activation output."""
    import tensorflow as tf
    import tf_keras

    if isinstance(layer, tf_keras.layers.Conv2D) and tuple(layer.kernel_size) != (1, 1):
        kh, kw = layer.kernel_size
        sh, sw = layer.strides
        x = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, 1, 1, 1],
                                     padding=layer.padding.upper()).numpy()
    elif isinstance(layer, tf_keras.layers.Conv2D):
        x = x[:, ::layer.strides[0], ::layer.strides[1], :]
    return x


def reconstructable(layer) -> bool:
    import tf_keras

    if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
        return False
    if isinstance(layer, tf_keras.layers.Conv2D):
        return (layer.activation is tf_keras.activations.linear and layer.groups == 1 and tuple(layer.dilation_rate) == (1, 1) and layer.data_format == "channels_last"
                and (tuple(layer.kernel_size) == (1, 1) or layer.padding in ("valid", "same")))
    return isinstance(layer, tf_keras.layers.Dense)


def _sample(rows: np.ndarray, out: np.ndarray, rng: np.random.Generator):
    """Flatten (N, ..., F) pairs to 2-D and keep ROWS_PER_IMAGE random positions per image."""
    n = rows.shape[0]
    r = rows.reshape(n, -1, rows.shape[-1])
    o = out.reshape(n, -1, out.shape[-1])
    if r.shape[1] > ROWS_PER_IMAGE:
        idx = rng.choice(r.shape[1], ROWS_PER_IMAGE, replace=False)
        r, o = r[:, idx], o[:, idx]
    return r.reshape(-1, r.shape[-1]).astype(np.float64), o.reshape(-1, o.shape[-1]).astype(np.float64)


def _solve(gram, cross, kernel2d, keeps, lam_rel: float):
    """Kept weights + bias per output column for one ridge strength (pulled toward the dense weights)."""
    f, c = kernel2d.shape
    lam = lam_rel * float(np.mean(np.diag(gram)[:f])) + 1e-12
    g = gram.copy()
    g[np.arange(f), np.arange(f)] += lam
    prior = np.concatenate([kernel2d, np.zeros((1, c))]) * lam  # the bias is not pulled
    new_k = np.zeros(kernel2d.shape)
    new_b = np.zeros(c)
    for j in range(c):
        sel = np.append(keeps[j], f)
        sol = np.linalg.solve(g[np.ix_(sel, sel)], cross[sel, j] + prior[sel, j])
        new_k[keeps[j], j] = sol[:-1]
        new_b[j] = sol[-1]
    return new_k, new_b


def prune_and_refit(kernel2d: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, sparsity: float):
    """Mask and refit one layer. kernel2d (F, C), bias (C,), x (N, F) inputs, y (N, C) targets.

    Returns (kernel2d, bias, info) with exactly round(sparsity * F) zeros in every output column.
    The refit minimises ||x w + b - y||^2 + lambda ||w - w_dense||^2. lambda (or no refit at all:
    the masked dense weights) is chosen by two-fold validation over the rows, first half against
    second half (rows come image by image, so the folds are different images): a head on pooled
    features has fewer rows than weights and needs a strong pull, a 1x1 conv with 10^4 rows none."""
    f, c = kernel2d.shape
    n_zero = int(round(sparsity * f))
    if n_zero <= 0:
        return kernel2d, bias, {"refit": False, "ridge": None}
    xa = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)  # last column: the bias
    norms = np.sqrt((x ** 2).sum(0))
    keeps = [np.sort(np.argsort(np.abs(kernel2d[:, j]) * norms, kind="stable")[n_zero:]) for j in range(c)]
    masked = _mask_only(kernel2d, x, sparsity)  # the same keeps: same score, same stable order
    half = x.shape[0] // 2
    folds = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
    errors = {None: sum(float(((xa[te, :f] @ masked + bias - y[te]) ** 2).sum()) for _, te in folds)}
    for lam_rel in RIDGE_GRID:
        err = 0.0
        for tr, te in folds:
            k, b_ = _solve(xa[tr].T @ xa[tr], xa[tr].T @ y[tr], kernel2d, keeps, lam_rel)
            err += float(((xa[te, :f] @ k + b_ - y[te]) ** 2).sum())
        errors[lam_rel] = err
    best = min(errors, key=errors.get)
    if best is None:
        return masked.astype(kernel2d.dtype), bias, {"refit": False, "ridge": None}
    new_k, new_b = _solve(xa.T @ xa, xa.T @ y, kernel2d, keeps, best)
    return new_k.astype(kernel2d.dtype), new_b.astype(np.float32), {"refit": True, "ridge": best}


def reconstruct(model, teacher, images: np.ndarray, targets: dict, normalize, seed: int = 0,
                batch_size: int = 32, progress: bool = True) -> dict:
    """Prune `model` in place: targets maps layer name -> sparsity. `teacher` is the dense model
    with the same layer names (the same folding). `normalize` maps raw images to model input.

    Returns {layer: {'sparsity': s, 'rel_error_before': e0, 'rel_error_after': e1}} (output error
    of the masked layer relative to the dense output, before and after the refit)."""
    import tf_keras

    rng = np.random.default_rng(seed)
    if len(images) > CALIBRATION_IMAGES:
        images = images[np.sort(rng.choice(len(images), CALIBRATION_IMAGES, replace=False))]
    x_in = np.concatenate([np.asarray(normalize(images[i:i + batch_size]))
                           for i in range(0, len(images), batch_size)])
    order = [l for l in model.layers if l.name in targets and reconstructable(l)]
    report = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="prune + refit", leave=False, dynamic_ncols=True)
    for layer in order:
        feed_s = tf_keras.Model(model.inputs, layer.input)
        feed_t = _pre_activation_feed(teacher.get_layer(layer.name), teacher)
        xs_, ys_ = [], []
        for i in range(0, len(x_in), batch_size):
            xb = x_in[i:i + batch_size]
            rows = _rows(layer, feed_s(xb, training=False).numpy())
            y = feed_t(xb)
            r, o = _sample(rows, y, rng)
            xs_.append(r)
            ys_.append(o)
        x2, y2 = np.concatenate(xs_), np.concatenate(ys_)
        weights = layer.get_weights()
        kernel = weights[0]
        bias = weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1], np.float32)
        k2 = kernel.reshape(-1, kernel.shape[-1])
        level = float(targets[layer.name])
        before_k = _mask_only(k2, x2, level)
        new_k, new_b, info = prune_and_refit(k2, bias, x2, y2, level)
        ref = x2 @ k2 + bias  # dense weights on the pruned network's inputs: the upstream error
        denom = float(np.linalg.norm(y2)) or 1.0
        report[layer.name] = {
            "sparsity": level, **info, "rows": int(x2.shape[0]),
            "rel_error_before": float(np.linalg.norm(x2 @ before_k + bias - y2) / denom),
            "rel_error_after": float(np.linalg.norm(x2 @ new_k + new_b - y2) / denom),
            "rel_error_dense": float(np.linalg.norm(ref - y2) / denom),
        }
        new_weights = [new_k.reshape(kernel.shape)]
        if len(weights) > 1:
            new_weights.append(new_b)
        elif np.any(np.abs(new_b) > 0):
            new_k = _mask_only(k2, x2, level)  # no bias to carry the refit's offset: mask only
            new_weights = [new_k.reshape(kernel.shape)]
        layer.set_weights(new_weights + weights[2:])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return report


def _mask_only(k2: np.ndarray, x2: np.ndarray, level: float) -> np.ndarray:
    n_zero = int(round(level * k2.shape[0]))
    score = np.abs(k2) * np.sqrt((x2 ** 2).sum(0))[:, None]
    order = np.argsort(score, axis=0, kind="stable")[:n_zero]
    out = k2.copy()
    np.put_along_axis(out, order, 0.0, axis=0)
    return out


def _pre_activation_feed(layer, model):
    """x -> the layer's output before its own activation (folded layers are linear; a layer with
    an activation, such as a softmax head, is refit on its logits)."""
    import tf_keras

    act = getattr(layer, "activation", None)
    if act is None or act is tf_keras.activations.linear:
        feed = tf_keras.Model(model.inputs, layer.output)
        return lambda x: feed(x, training=False).numpy()
    feed = tf_keras.Model(model.inputs, layer.input)
    weights = layer.get_weights()

    def run(x):
        inp = feed(x, training=False).numpy()
        out = inp.reshape(-1, inp.shape[-1]) @ weights[0].reshape(-1, weights[0].shape[-1])
        if len(weights) > 1:
            out = out + weights[1]
        return out.reshape(*inp.shape[:-1], -1)

    if type(layer).__name__ != "Dense":
        raise ValueError(f"{layer.name}: only a Dense layer may carry its own activation here")
    return run
