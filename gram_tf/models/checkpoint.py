"""Reading PyTorch-side checkpoints (timm / Hugging Face `.safetensors` or `.npz`) with numpy, and
copying them onto our Keras layers: name checks that list every missing, unexpected or mis-shaped
tensor, and the torch -> Keras layout conversions every importer needs.

An importer builds a list of (layer name, [arrays]) first and `assign` checks all shapes before it
sets any weight, so a bad file leaves the model untouched.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import GramTFError


def read_tensors(path) -> dict:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise GramTFError(f"{path} is not a readable safetensors file ({exc})") from None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    raise GramTFError(f"{path}: transformer weights must be .safetensors or .npz")


def tensor_names(path) -> list:
    """The tensor names of a checkpoint file without reading the tensors (an unreadable or
    unsupported file gives [], and `read_tensors` reports it when the weights are loaded)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "np") as fh:
                return list(fh.keys())
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return list(z.files)
    except Exception:
        return []
    return []


def _listing(names: list, limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def check_names(path, tensors: dict, expected: Iterable[str], ignored: Optional[re.Pattern] = None,
                what: str = "this backbone") -> None:
    """Error naming every expected tensor the file lacks and every tensor it has that we do not use
    (`ignored` matches the source's classifier head and buffers we recompute)."""
    expected = list(expected)
    want = set(expected)
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in want and not (ignored and ignored.match(n))]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {_listing(unexpected)}")
        raise GramTFError(f"checkpoint {path} does not fit {what}: {'; '.join(parts)}")


def assign(path, layers: dict, assignments: list) -> None:
    """Set each (layer name, [arrays]) after checking every shape against the model's weights."""
    bad = []
    for name, arrays in assignments:
        have = [tuple(v.shape) for v in layers[name].get_weights()]
        got = [tuple(np.shape(a)) for a in arrays]
        if have != got:
            bad.append(f"{name}: checkpoint {got} vs model {have}")
    if bad:
        raise GramTFError(f"checkpoint {path} has mis-shaped tensors: {'; '.join(bad[:6])}")
    for name, arrays in assignments:  # weights are floats, and finite: a NaN would train to loss nan
        for a in map(np.asarray, arrays):
            if a.dtype.kind != "f":
                raise GramTFError(f"checkpoint {path}: the weights for {name} are {a.dtype}, not floating point; "
                                  "export the model's float weights (gram_tf does not guess a conversion)")
            if not np.all(np.isfinite(a)):
                raise GramTFError(f"checkpoint {path}: the weights for {name} hold NaN or infinite values; "
                                  "the file is damaged or was saved from a diverged run")
    for name, arrays in assignments:
        layers[name].set_weights([np.asarray(a, np.float32) for a in arrays])


# torch layouts -> Keras layouts
def conv_kernel(w: np.ndarray) -> np.ndarray:
    """Conv2d weight (out, in, kh, kw) -> Conv2D kernel (kh, kw, in, out)."""
    return np.asarray(w).transpose(2, 3, 1, 0)


def depthwise_kernel(w: np.ndarray) -> np.ndarray:
    """Depthwise Conv2d weight (C, 1, kh, kw) -> DepthwiseConv2D kernel (kh, kw, C, 1)."""
    return np.asarray(w).transpose(2, 3, 0, 1)


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """Linear weight (out, in) (or a 1x1 conv's (out, in, 1, 1)) -> Dense kernel (in, out)."""
    w = np.asarray(w)
    return w.reshape(w.shape[0], -1).T


def batch_norm(tensors: dict, prefix: str) -> list:
    """BatchNorm2d -> [gamma, beta, moving mean, moving variance]."""
    return [tensors[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def batch_norm_names(prefix: str) -> list:
    """A BatchNorm2d's tensors as torch saves them (num_batches_tracked is read and ignored)."""
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def fuse_qkv(parts: dict, where: str) -> np.ndarray:
    """Hugging Face's separate query / key / value tensors -> timm's fused qkv (rows q, k, v)."""
    missing = [k for k in ("query", "key", "value") if k not in parts]
    if missing:
        raise GramTFError(f"checkpoint {where}: attention lacks {', '.join(missing)}")
    return np.concatenate([parts["query"], parts["key"], parts["value"]], axis=0)


class CheckpointLoader:
    """Stands where Keras applications return their backbone model: `load_weights(path)` calls
    `load(layers_by_name, path)` on the built backbone's layers."""

    def __init__(self, inp, features, load):
        import tf_keras

        sub = tf_keras.Model(inp, features)  # only to look layers up by name; the classifier stays flat
        self.layers = {layer.name: layer for layer in sub.layers}
        self._load = load

    def load_weights(self, path):
        """Returns what the importer returns: None, or {"preprocessing": ...} for a source whose
        input convention differs from the registry's."""
        return self._load(self.layers, path)
