"""Layer sensitivity to pruning, and per-layer sparsity for a global target from it.

Each prunable layer is pruned alone (magnitude, no fine-tune) to a few levels and the validation
loss and accuracy measured (Han et al. 2015, "Learning both Weights and Connections"). The
allocation then gives every layer the highest sparsity whose loss increase stays under one common
threshold, the threshold bisected until the pruned layers as a whole reach the target: sensitive
layers (the stem, narrow projections) end up pruned less, robust wide ones more.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import GramTFError
from ..train import evaluate_keras

SENSITIVITY_FILE = "sensitivity.json"


def magnitude_mask(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean keep-mask that zeroes the `sparsity` fraction of smallest-magnitude weights."""
    k = int(round(sparsity * kernel.size))
    if k <= 0:
        return np.ones(kernel.shape, bool)
    flat = np.abs(kernel).ravel()
    order = np.argsort(flat, kind="stable")
    keep = np.ones(flat.size, bool)
    keep[order[:k]] = False
    return keep.reshape(kernel.shape)


def _prunable_variables(layer) -> list:
    """What TF-MOT would prune in this layer: its declared prunable weights (gram_tf's transformer
    layers), else its kernel."""
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    return [getattr(layer, "kernel")]


def measure_sensitivity(model, layers: list[str], levels, x_val, y_val, preprocessing: dict,
                        progress: bool = True) -> dict:
    """{'baseline': {loss, accuracy}, 'layers': {name: {'params': n, 'levels': [...], 'loss': [...],
    'accuracy': [...]}}} for the model's current weights (restored after each probe)."""
    labels = list(range(model.output_shape[-1]))
    base = evaluate_keras(model, x_val, y_val, preprocessing, labels)
    out = {"baseline": {"loss": float(base["loss"]), "accuracy": float(base["accuracy"])},
           "levels": [float(v) for v in levels], "n_images": int(len(y_val)), "layers": {}}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(layers) * len(levels), desc="sensitivity", leave=False, dynamic_ncols=True)
    for name in layers:
        variables = _prunable_variables(model.get_layer(name))
        saved = [v.numpy() for v in variables]
        row = {"params": int(sum(w.size for w in saved)), "loss": [], "accuracy": []}
        for level in levels:
            for v, w in zip(variables, saved):
                v.assign(w * magnitude_mask(w, level))
            m = evaluate_keras(model, x_val, y_val, preprocessing, labels)
            row["loss"].append(float(m["loss"]))
            row["accuracy"].append(float(m["accuracy"]))
            if bar is not None:
                bar.update(1)
        for v, w in zip(variables, saved):
            v.assign(w)
        out["layers"][name] = row
    if bar is not None:
        bar.close()
    return out


def _loss_increase_curve(sens: dict, name: str, grid: np.ndarray) -> np.ndarray:
    """Loss increase of one layer on the grid: piecewise linear through (0, 0) and the measured
    levels, made non-decreasing (a layer is never assumed to get better by pruning it more)."""
    levels = np.array([0.0, *sens["levels"]])
    base = sens["baseline"]["loss"]
    rise = np.array([0.0, *[v - base for v in sens["layers"][name]["loss"]]])
    rise = np.maximum.accumulate(np.maximum(rise, 0.0))
    return np.interp(grid, levels, rise)


def allocate(sens: dict, target: float, max_layer_sparsity: Optional[float] = None,
             layers: Optional[list[str]] = None) -> dict:
    """Per-layer sparsity whose parameter-weighted mean over `layers` is `target` (within 0.5 %),
    each layer as sparse as one shared loss-increase threshold allows."""
    names = layers or list(sens["layers"])
    top = min(max(sens["levels"]), max_layer_sparsity or 1.0)
    if target > top:
        raise GramTFError(f"sparsity {target} is above the highest level measured for sensitivity ({top}); "
                          "add a higher level to prune.sensitivity_levels")
    grid = np.round(np.arange(0.0, top + 1e-9, 0.005), 4)
    curves = {n: _loss_increase_curve(sens, n, grid) for n in names}
    params = np.array([sens["layers"][n]["params"] for n in names], float)

    def at(threshold: float) -> np.ndarray:
        return np.array([grid[np.nonzero(curves[n] <= threshold + 1e-12)[0].max()] for n in names])

    lo, hi = 0.0, max(float(c.max()) for c in curves.values()) + 1e-9
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (at(mid) * params).sum() / params.sum() >= target:
            hi = mid
        else:
            lo = mid
    levels = at(hi)
    # the threshold steps layer by layer; trim the last layers raised so the mean lands on target
    mean = (levels * params).sum() / params.sum()
    if mean > target + 0.005:
        order = np.argsort([-(curves[n][int(round(levels[i] / 0.005))]) for i, n in enumerate(names)])
        for i in order:
            while mean > target + 0.005 and levels[i] > 0:
                levels[i] = round(levels[i] - 0.005, 4)
                mean = (levels * params).sum() / params.sum()
    return {n: float(v) for n, v in zip(names, levels)}


def sensitivity_table(sens: dict, per_layer: Optional[dict] = None) -> list[dict]:
    """Rows for the CLI table: loss increase (and accuracy) per level, most sensitive first."""
    base = sens["baseline"]
    rows = []
    for name, row in sens["layers"].items():
        entry = {"layer": name, "params": row["params"]}
        for level, loss, acc in zip(sens["levels"], row["loss"], row["accuracy"]):
            entry[f"dloss@{int(round(level * 100))}"] = round(loss - base["loss"], 3)
            entry[f"acc@{int(round(level * 100))}"] = round(acc, 3)
        if per_layer is not None:
            entry["allocated"] = round(per_layer.get(name, 0.0), 3)
        rows.append(entry)
    last = f"dloss@{int(round(sens['levels'][-1] * 100))}"
    return sorted(rows, key=lambda r: -r[last])


def plot_sensitivity(sens: dict, path) -> None:
    """Validation accuracy vs sparsity per layer (each pruned alone); the 8 most sensitive named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [0.0, *sens["levels"]]
    base = sens["baseline"]["accuracy"]
    worst = sorted(sens["layers"], key=lambda n: sens["layers"][n]["accuracy"][-1])[:8]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, row in sens["layers"].items():
        named = name in worst
        ax.plot(levels, [base, *row["accuracy"]], lw=1.6 if named else 0.7, alpha=1.0 if named else 0.35,
                label=name if named else None, color=None if named else "grey")
    ax.set_xlabel("sparsity of this layer alone (no fine-tune)")
    ax.set_ylabel(f"{sens.get('split', 'val')} accuracy")
    ax.set_title("Pruning sensitivity per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
