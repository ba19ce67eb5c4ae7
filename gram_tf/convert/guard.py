"""The accuracy guard the mixed-precision strategies share: the Keras model's accuracy they are
held to, and the search that keeps the worst-error nodes float until the accuracy is back within
budget (the artifacts' own accuracy comes from `scoring`)."""
from __future__ import annotations

import numpy as np

from ..metrics import within_drop
from ..train import predict_probs


def float_accuracy(model, images: np.ndarray, y: np.ndarray, preprocessing: dict) -> float:
    """The Keras model's accuracy: what a mixed-precision artifact is held to."""
    probs = predict_probs(model, images, preprocessing)
    return float(np.mean(probs.argmax(1) == y))


def recover_accuracy(try_nodes, ranked: list[str], float_acc: float, max_drop: float, max_nodes: int):
    """Keep the worst 1, 2, 4, 8... `ranked` nodes in float until the accuracy is within `max_drop`.

    `try_nodes(nodes)` converts with `nodes` float and returns (accuracy, payload). Returns
    (accuracy, payload, nodes, steps) of the first step within `max_drop`, else of the most accurate.
    """
    best, steps, k = None, [], 1
    while k <= min(max_nodes, len(ranked)):
        nodes = ranked[:k]
        acc, payload = try_nodes(nodes)
        steps.append({"float_nodes": k, "accuracy": acc})
        if within_drop(float_acc, acc, max_drop):
            return acc, payload, nodes, steps
        if best is None or acc > best[0]:
            best = (acc, payload, nodes)
        k *= 2
    if best is None:
        return None, None, [], steps
    return (*best, steps)


