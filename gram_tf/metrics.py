"""Classification metrics in plain numpy (used by training, conversion, benchmarking, reports)."""
from __future__ import annotations

import numpy as np

# Tolerance for float round-off in "accuracy >= fp32 accuracy - max_drop" (0.9 - 0.01 != 0.89).
_ACC_EPS = 1e-9


def within_drop(reference: float, accuracy: float, max_drop: float) -> bool:
    """accuracy >= reference - max_drop, with round-off tolerance: 2 of 200 images lost is 1 pp."""
    return reference - accuracy <= max_drop + _ACC_EPS


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC via the Mann-Whitney U statistic (ties get half credit)."""
    pos, neg = score[y == 1], score[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), dtype=np.float64)
    values = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = ranks[: len(pos)].sum()
    return float((rank_sum - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def roc_auc(y_true, probs) -> float | None:
    """Binary: AUC of the positive-class probability; multiclass: macro one-vs-rest."""
    y = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    if probs.shape[1] == 2:
        return _binary_auc(y, probs[:, 1])
    aucs = [_binary_auc((y == k).astype(int), probs[:, k]) for k in range(probs.shape[1])]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs)) if aucs else None


# The scalar metrics a run records per split (run.json) and `gram-tf train` prints, in that order.
SUMMARY = ("n", "accuracy", "loss", "f1_macro", "auc")


def classification_metrics(y_true, probs, labels) -> dict:
    """accuracy, loss, macro F1, per-class precision/recall, ROC AUC and the confusion matrix."""
    y = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    n_classes = len(labels)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, n_classes)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], eps, 1.0)))) if len(y) else None
    per_class = {}
    f1s = []
    for k, name in enumerate(labels):
        tp = cm[k, k]
        fp = cm[:, k].sum() - tp
        fn = cm[k, :].sum() - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "support": int(cm[k, :].sum())}
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "loss": loss,
        "f1_macro": float(np.mean(f1s)) if len(y) else None,
        "auc": roc_auc(y, probs) if len(y) else None,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
        "correct": "".join("1" if p == t else "0" for p, t in zip(pred, y)),
    }
