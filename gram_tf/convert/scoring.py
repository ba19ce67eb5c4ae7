"""The accuracy of TFLite model bytes on uint8 images, through the deployed classifier (the same
preprocessing and IO handling a user's `gram-tf predict` gets). The bottom floor of the convert
wing: the int8 recipe's calibration search and the mixed-precision guards score with it."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ..deploy import Classifier


def blob_probs(blob: bytes, images: np.ndarray, labels, size, preprocessing) -> np.ndarray:
    """Class probabilities of TFLite model bytes on uint8 images, through the deployed classifier."""
    fd, path = tempfile.mkstemp(suffix=".tflite")
    os.close(fd)
    try:
        with open(path, "wb") as fh:
            fh.write(blob)
        clf = Classifier(path, threads=2, labels=labels, input_size=size, preprocessing=preprocessing,
                         temperature=False)
        return clf.predict_arrays(images)
    finally:
        os.unlink(path)


def blob_accuracy(blob: bytes, images: np.ndarray, y: np.ndarray, labels, size, preprocessing) -> float:
    return float(np.mean(blob_probs(blob, images, labels, size, preprocessing).argmax(1) == y))
