"""Evaluating a Keras classifier on decoded images, and the confusion-matrix plot."""
from __future__ import annotations

import numpy as np

from ..data import make_dataset
from ..io_utils import atomic_path
from ..metrics import classification_metrics


def predict_probs(model, images: np.ndarray, preprocessing: dict, batch_size: int = 32) -> np.ndarray:
    """Class probabilities of a Keras classifier on uint8 images (normalized by `preprocessing`)."""
    return model.predict(make_dataset(images, None, preprocessing, batch_size), verbose=0)


def evaluate_keras(model, images, y, preprocessing, labels, temperature=None) -> dict:
    """classification_metrics of the model's probabilities (with a `temperature`: also after it)."""
    probs = predict_probs(model, images, preprocessing)
    return classification_metrics(y, probs, labels, temperature=temperature)


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
