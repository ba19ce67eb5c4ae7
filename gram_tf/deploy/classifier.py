"""Classify micrographs with a ``.tflite`` model, without TensorFlow.

Imports only the standard library, numpy, Pillow and the LiteRT interpreter, so it runs on a
device that has no TensorFlow. Labels, input size and preprocessing come from the gram_tf metadata
embedded in the model (see :mod:`gram_tf.deploy.metadata`), else from a ``<model>.tflite.json``
sidecar, else from explicit arguments.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from ..errors import GramTFError, one_line
from ..io_utils import read_capped, require_regular_file, sha256_file
from ..metrics import REFER, apply_temperature
from .imaging import DEFAULT_PREPROCESSING, IN_GRAPH, find_images, load_resized, normalize, validate_preprocessing
from .interpreter import interpreter_class
from .stream import batched, decode_stream
from .metadata import MANIFEST_NAME, METADATA_FORMAT, read_metadata, read_sidecar, sidecar_path

_BATCH = 32  # images decoded and resized per interpreter call group


_MANIFEST_LIMIT = 64 << 20  # a manifest lists artifacts; megabytes of it are not ours
_SHA256 = re.compile(r"[0-9a-f]{64}")


def artifact_entries(model_path) -> list[tuple[Path, dict]]:
    """[(where, entry)] recorded at export for this file: its folder's manifest.json entry, then its
    sidecar's "artifact". A manifest or sidecar that exists but cannot be read (not JSON, not the
    shape convert writes) is an error: skipping it would silently turn verification off."""
    model_path = Path(model_path)
    found = []
    manifest = model_path.parent / MANIFEST_NAME
    if manifest.is_file():
        fix = "re-run 'gram-tf convert', or pass --no-verify"
        try:
            data = json.loads(read_capped(manifest, _MANIFEST_LIMIT, "manifest").decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise GramTFError(f"{manifest}: not valid JSON ({one_line(exc, 100)}); {fix}") from None
        entries = data.get("artifacts") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("file"), str)
                                                    for e in entries):
            raise GramTFError(f"{manifest}: \"artifacts\" is not a list of objects with a \"file\" name; {fix}")
        found += [(manifest, e) for e in entries if e["file"] == model_path.name]
    sidecar = read_sidecar(model_path)  # one-line error when it is not a JSON object
    if sidecar is not None and "artifact" in sidecar:
        if not isinstance(sidecar["artifact"], dict):
            raise GramTFError(f"{sidecar_path(model_path)}: \"artifact\" is not an object; "
                              "re-run 'gram-tf convert', or pass --no-verify")
        found.append((sidecar_path(model_path), sidecar["artifact"]))
    return found


def recorded_sha256(model_path) -> str | None:
    """sha256 written at export for this file (manifest.json, else sidecar), or None when none was
    recorded. A recorded value that is not a sha256 is an error, never "nothing to check"."""
    for where, entry in artifact_entries(model_path):
        if "sha256" in entry:
            sha = entry["sha256"]
            if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
                raise GramTFError(f"{where}: the sha256 recorded for {Path(model_path).name} ({str(sha)[:70]!r}) is "
                                  "not a sha256; re-run 'gram-tf convert', or pass --no-verify")
            return sha
    return None


def verify_sha256(model_path) -> str:
    """The file's sha256, after checking it against the one recorded at export: a model whose bytes
    changed since (a bad copy, a disk error, an edit) must not classify or be timed."""
    recorded = recorded_sha256(model_path)
    actual = sha256_file(model_path)
    if recorded and actual != recorded:
        raise GramTFError(f"{model_path}: sha256 differs from the one recorded at export ({recorded[:12]}...): the "
                          "file was changed or corrupted; copy it again, or pass --no-verify")
    return actual


def is_label(name) -> bool:
    """Non-empty text without control or format characters: one line of labels.txt, one result-row value."""
    return isinstance(name, str) and bool(name.strip()) and not any(
        unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") for c in name)


def check_labels(labels, where: str) -> list[str]:
    """Labels as they land in result rows: non-empty strings without control characters (a None,
    a number, '' or a newline would print as a wrong or an empty, error-looking row)."""
    if not isinstance(labels, (list, tuple)) or not labels:
        raise GramTFError(f"{where}: labels must be a non-empty list of names; pass --labels")
    for label in labels:
        if not is_label(label):
            raise GramTFError(f"{where}: label {str(label)[:60]!r} is not a name (non-empty text without control "
                              "characters); fix the labels or pass --labels")
    return list(labels)


def _parse_labels(labels) -> list[str]:
    """A list of labels, a comma-separated string, or a path to a text file (one per line)
    or JSON list."""
    if isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        if p.is_file():
            text = p.read_text(encoding="utf-8")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = [line.strip() for line in text.splitlines() if line.strip()]
            if isinstance(parsed, dict) and "labels" in parsed:
                parsed = parsed["labels"]
            labels = parsed
        else:
            labels = [s.strip() for s in str(labels).split(",") if s.strip()]
    labels = [str(x) for x in labels]
    if not labels:
        raise GramTFError("empty label list; pass --labels like gram_negative,gram_positive")
    if len(set(labels)) != len(labels):
        raise GramTFError(f"duplicate labels in {labels}; labels must be unique")
    return labels


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """A TFLite image classifier plus the preprocessing it was trained with.

    Attributes: ``labels``, ``input_size``, ``preprocessing``, ``input_details``,
    ``output_details``, ``meta`` (the metadata dict, {} if none), ``meta_source``
    ("embedded", the sidecar path, or None) and ``warnings`` (list of str).

    ``temperature``: divide the model's logits by the temperature recorded in its metadata (fitted on
    the run's validation split at export; docs/generalization.md) before the scores are returned. It
    never changes the top-1 label, only how sure the scores say it is; ``False`` gives the model's own
    scores. ``recorded_temperature`` is the metadata's value (None for a model exported without one),
    ``temperature`` the one applied (None when off or absent).
    ``min_confidence``: result rows whose top score is below it get the label REFER ("refer to a
    human") and ``"referred": True``; their scores stay in the row.
    """

    def __init__(self, model_path, threads=None, labels=None, input_size=None,
                 preprocessing=None, verify: bool = True, temperature: bool = True,
                 min_confidence: Optional[float] = None):
        self.model_path = Path(model_path)
        self.warnings: list[str] = []
        where = str(self.model_path)
        require_regular_file(self.model_path, "model file")  # no pipe or device reaches LiteRT
        self._sha256: str | None = None
        self._load_metadata(where)
        if verify:
            self._sha256 = verify_sha256(self.model_path)
        self._open_interpreter(where, threads)
        self._set_labels(where, labels)
        self._set_input_size(where, input_size)
        self._set_preprocessing(where, preprocessing)
        self._set_temperature(where, temperature, min_confidence)
        self._outputs_logits = False
        self._batch_shape: tuple | None = None
        self._pixel_table: np.ndarray | None = None

    # ---------------------------------------------------------------------------- set-up
    def _load_metadata(self, where: str) -> None:
        meta = read_metadata(self.model_path)  # also rejects non-TFLite files
        self.meta_source = "embedded" if meta is not None else None
        if meta is None:
            meta = read_sidecar(self.model_path)
            if meta is not None:
                self.meta_source = str(sidecar_path(self.model_path))
        self.meta = meta or {}
        fmt = self.meta.get("format")
        if fmt is not None and fmt != METADATA_FORMAT:
            self.warnings.append(f"{where}: metadata format {fmt!r} is not {METADATA_FORMAT!r}; "
                                 "reading it anyway")

    @property
    def sha256(self) -> str:
        """The model file's sha256 (result files record it in every row)."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.model_path)
        return self._sha256

    def _open_interpreter(self, where: str, threads) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise GramTFError(f"threads must be a positive integer, got {threads!r}")
        Interpreter = interpreter_class()
        try:
            self.interpreter = Interpreter(model_path=where, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise GramTFError(f"{where}: LiteRT cannot load the model ({one_line(exc, 200)}); "
                              "re-export it with the gram_tf converter") from None
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._check_io(where)

    def _set_labels(self, where: str, labels) -> None:
        if labels is None:
            labels = self.meta.get("labels")
            if labels is None:
                raise GramTFError(f"{where}: model has no gram_tf metadata (embedded or "
                                  f"{sidecar_path(self.model_path).name}): pass --labels")
            labels = check_labels(labels, f"{where} (its {self.meta_source} metadata)")
        self.labels = _parse_labels(labels)
        n_out = int(self.output_details[0]["shape"][-1])
        self._binary_sigmoid = n_out == 1 and len(self.labels) == 2
        if n_out != len(self.labels) and not self._binary_sigmoid:
            raise GramTFError(f"{where}: model outputs {n_out} classes but {len(self.labels)} "
                              f"labels were given ({', '.join(self.labels)}); "
                              "pass matching --labels")

    def _set_input_size(self, where: str, input_size) -> None:
        inp = self.input_details[0]
        shape = [int(d) for d in inp["shape"]]
        sig = [int(d) for d in inp.get("shape_signature", inp["shape"])]
        self._dynamic_hw = sig[1] < 0 or sig[2] < 0
        self._dynamic_batch = sig[0] < 0
        if input_size is None:
            input_size = self.meta.get("input_size")
        if input_size is None:
            if self._dynamic_hw:
                raise GramTFError(f"{where}: input size is dynamic and not in the metadata: "
                                  "pass --size")
            if shape[1] != shape[2]:
                raise GramTFError(f"{where}: model input is {shape[1]}x{shape[2]}; only square "
                                  "inputs are supported")
            input_size = shape[1]
        try:
            self.input_size = int(input_size)
        except (TypeError, ValueError):
            raise GramTFError(f"{where}: input size {input_size!r} is not an integer; "
                              "pass --size") from None
        if self.input_size <= 0:
            raise GramTFError(f"{where}: input size must be positive, got {self.input_size}")
        if not self._dynamic_hw and (shape[1], shape[2]) != (self.input_size, self.input_size):
            raise GramTFError(f"{where}: model expects {shape[1]}x{shape[2]} inputs but input "
                              f"size is {self.input_size}; fix --size or the metadata")

    def _set_preprocessing(self, where: str, preprocessing) -> None:
        pp = dict(DEFAULT_PREPROCESSING)
        meta_pp = self.meta.get("preprocessing")
        if meta_pp is None:
            if preprocessing is None:
                self.warnings.append(
                    f"{where}: no preprocessing in the metadata; assuming {DEFAULT_PREPROCESSING}"
                    " (inputs scaled to -1..1): predictions are wrong if the model was trained"
                    " differently")
        else:
            if not isinstance(meta_pp, dict):
                raise GramTFError(f"{where}: metadata preprocessing is not a dict; "
                                  "re-embed the metadata")
            absent = [k for k in DEFAULT_PREPROCESSING if k not in meta_pp]
            if absent and not (preprocessing and all(k in preprocessing for k in absent)):
                self.warnings.append(f"{where}: metadata preprocessing lacks "
                                     f"{', '.join(absent)}; using defaults for them")
            pp.update(meta_pp)
        if preprocessing is not None:
            pp.update(preprocessing)
        self.preprocessing = validate_preprocessing(pp, where)

    def _set_temperature(self, where: str, use: bool, min_confidence) -> None:
        t = self.meta.get("temperature")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0):
            raise GramTFError(f"{where}: metadata temperature {str(t)[:40]!r} is not a positive number; re-export "
                              "the model with 'gram-tf convert', or predict with --no-temperature")
        self.recorded_temperature = None if t is None else float(t)
        self.temperature = self.recorded_temperature if use else None
        if min_confidence is not None and (isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float))
                                           or not 0.0 <= min_confidence <= 1.0):
            raise GramTFError(f"min_confidence must be a score in [0, 1], got {str(min_confidence)[:40]!r}")
        self.min_confidence = min_confidence
        if min_confidence is not None and REFER in self.labels:
            raise GramTFError(f"{where}: a class is named {REFER!r}, which min_confidence writes for referred "
                              "images; rename the class (--labels)")

    # ---------------------------------------------------------------------------- checks
    def _check_io(self, where: str) -> None:
        ins, outs = self.input_details, self.output_details

        def describe(details):
            return ", ".join(f"{list(map(int, d['shape']))} {np.dtype(d['dtype']).name}"
                             for d in details) or "none"

        problem = None
        if len(ins) != 1:
            problem = f"{len(ins)} inputs"
        elif len(ins[0]["shape"]) != 4 or int(ins[0]["shape"][3]) != 3:
            problem = f"input shape {list(map(int, ins[0]['shape']))}"
        elif len(outs) != 1:
            problem = f"{len(outs)} outputs"
        elif len(outs[0]["shape"]) != 2:
            problem = f"output shape {list(map(int, outs[0]['shape']))}"
        if problem is None:
            in_dtype = np.dtype(ins[0]["dtype"])
            if in_dtype.kind not in "fiu":
                problem = f"input dtype {in_dtype.name}"
        if problem is not None:
            raise GramTFError(
                f"{where}: not an image classifier: {problem} (expected one input [1, H, W, 3] "
                f"and one output [1, classes]; got inputs {describe(ins)}, outputs "
                f"{describe(outs)})")

    # ----------------------------------------------------------------------- prediction
    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        detail = self.input_details[0]
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            return x.astype(dtype)
        scale, zero = _quant_params(detail)
        if scale is None:
            raise GramTFError(f"{self.model_path}: integer input without quantization "
                              "parameters; convert with a float or quantized (int8) input")
        info = np.iinfo(dtype)
        q = np.rint(x / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        detail = self.output_details[0]
        if y.dtype.kind in "iu":
            scale, zero = _quant_params(detail)
            if scale is None:
                return y.astype(np.float32)
            return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
        return y.astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run the interpreter on an already normalised+quantized batch of any size."""
        interp = self.interpreter
        inp = self.input_details[0]
        out = self.output_details[0]
        n = x.shape[0]
        size = self.input_size
        if self._dynamic_batch or self._dynamic_hw:
            step = n if self._dynamic_batch else int(inp["shape"][0])
        else:
            step = int(inp["shape"][0])
        step = max(step, 1)
        results = []
        for start in range(0, n, step):
            chunk = x[start:start + step]
            want = (step, size, size, 3)
            if (self._dynamic_batch or self._dynamic_hw) and self._batch_shape != want:
                interp.resize_tensor_input(inp["index"], list(want))
                interp.allocate_tensors()
                self._batch_shape = want
            if chunk.shape[0] < step:  # pad a short final chunk for a static batch > 1
                pad = np.zeros((step - chunk.shape[0],) + chunk.shape[1:], dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            interp.set_tensor(inp["index"], chunk)
            interp.invoke()
            y = interp.get_tensor(out["index"])
            results.append(np.array(y[: min(step, n - start)]))
        return np.concatenate(results).reshape(n, -1)

    def predict_arrays(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 NxHxWx3 images already resized to input_size -> float32 N x C probabilities."""
        batch = np.asarray(batch_uint8)
        if batch.ndim == 3:
            batch = batch[None]
        size = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise GramTFError(f"predict_arrays expects N x {size} x {size} x 3 uint8 images "
                              f"(use resize_image first), got shape {batch.shape}")
        if batch.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if batch.dtype == np.uint8:
            x = self._input_from_pixels(batch)
        else:
            x = self._quantize_input(normalize(batch, self.preprocessing))
        y = self._dequantize_output(self._run(x))
        return apply_temperature(self._to_probabilities(y), self.temperature)

    def _input_from_pixels(self, batch: np.ndarray) -> np.ndarray:
        """uint8 pixels -> model input through a 256-entry table per channel: the same values as
        normalize + quantize (the table is built by running them on every level), at a fraction of
        the cost, which matters when a folder is classified at hundreds of images per second."""
        if self._pixel_table is None:
            levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1).reshape(256, 1, 1, 3)
            self._pixel_table = self._quantize_input(normalize(levels, self.preprocessing)).reshape(256, 3)
            bgr = self.preprocessing["channel_order"] == "BGR" and not self.preprocessing.get(IN_GRAPH)
            self._pixel_source = (2, 1, 0) if bgr else (0, 1, 2)
            # a pixel-input uint8 model (scale 1, zero point 0) takes the decoded bytes as they are
            self._pixels_as_is = (self._pixel_table.dtype == np.uint8 and not bgr and
                                  np.array_equal(self._pixel_table, levels.reshape(256, 3)))
        if self._pixels_as_is:
            return np.ascontiguousarray(batch)
        out = np.empty(batch.shape, dtype=self._pixel_table.dtype)
        for c, src in enumerate(self._pixel_source):
            out[..., c] = self._pixel_table[:, c][batch[..., src]]
        return out

    def _to_probabilities(self, y: np.ndarray) -> np.ndarray:
        if self._binary_sigmoid:
            p = y[:, 0]
            if self._outputs_logits or np.any(p < -1e-3) or np.any(p > 1 + 1e-3):
                self._note_logits("a single logit; applying sigmoid")
                p = 1.0 / (1.0 + np.exp(-p))
            p = np.clip(p, 0.0, 1.0)
            return np.stack([1.0 - p, p], axis=1).astype(np.float32)
        if not self._outputs_logits:
            detail = self.output_details[0]
            scale, _ = _quant_params(detail)
            tol = 1e-3 + (y.shape[1] * scale if scale else 0.0)
            looks_like_probs = (np.all(y >= -tol) and np.all(y <= 1 + tol)
                                and np.all(np.abs(y.sum(axis=1) - 1.0) <= max(tol, 1e-2)))
            if not looks_like_probs:
                self._note_logits("logits (rows do not sum to 1); applying softmax")
        if self._outputs_logits:
            y = _softmax(y.astype(np.float64))
        y = np.clip(y, 0.0, None)
        sums = y.sum(axis=1, keepdims=True)
        y = np.divide(y, sums, out=np.full_like(y, 1.0 / y.shape[1]), where=sums > 0)
        return y.astype(np.float32)

    def _note_logits(self, what: str) -> None:
        if not self._outputs_logits:
            self._outputs_logits = True
            self.warnings.append(f"{self.model_path}: model outputs {what}")

    def prepare(self, path) -> np.ndarray:
        """Load and resize one image file for this model (uint8 size x size x 3)."""
        return load_resized(path, self.input_size, self.preprocessing["resize"])

    def predict_stream(self, files: Iterable, top_k: int = 1, workers: Optional[int] = None,
                       queue_size: Optional[int] = None, batch: int = _BATCH) -> Iterator[dict]:
        """Classify image files in order, decoding in parallel with inference (see deploy.stream).

        Yields one row per file: a result ({"path", "label", "prob", "top_k", "probs"}) or, for a
        file that cannot be decoded, {"path", "error"}. Memory stays bounded by `queue_size`
        decoded images and `batch` inputs, whatever the number of files.
        """
        k = max(1, min(int(top_k), len(self.labels)))
        decoded = decode_stream(files, self.input_size, self.preprocessing["resize"], workers, queue_size)
        for chunk in batched(decoded, max(1, int(batch))):
            good = [d for d in chunk if d.image is not None]
            probs = iter(self.predict_arrays(np.stack([d.image for d in good])) if good else [])
            for d in chunk:
                if d.image is None:
                    yield {"path": str(d.path), "error": d.error}
                else:
                    yield self._result(d.path, next(probs), k)

    def predict_paths(self, paths, top_k: int = 1, workers: Optional[int] = None) -> tuple[list[dict], list[dict]]:
        """Classify image files / folders. Returns (results, errors); unreadable images are
        reported in errors ({"path", "error"}) and skipped."""
        results: list[dict] = []
        errors: list[dict] = []
        for row in self.predict_stream(find_images(paths), top_k, workers):
            (errors if "error" in row else results).append(row)
        return results, errors

    def _result(self, path: Path, row: np.ndarray, k: int) -> dict:
        order = np.argsort(-row, kind="stable")
        top = [[self.labels[i], float(row[i])] for i in order[:k]]
        out = {"path": str(path), "label": top[0][0], "prob": top[0][1], "top_k": top,
               "probs": {label: float(p) for label, p in zip(self.labels, row)}}
        if self.min_confidence is not None:
            out["referred"] = top[0][1] < self.min_confidence
            if out["referred"]:
                out["label"] = REFER  # top_k keeps the model's guess for whoever looks next
        return out


def _quant_params(detail: dict) -> tuple[float | None, float]:
    qp = detail.get("quantization_parameters") or {}
    scales = np.asarray(qp.get("scales", []), dtype=np.float64).reshape(-1)
    zeros = np.asarray(qp.get("zero_points", []), dtype=np.float64).reshape(-1)
    if scales.size > 1:
        raise GramTFError("per-channel quantized model inputs/outputs are not supported; "
                          "convert with per-tensor input/output quantization")
    if scales.size == 1 and scales[0] > 0:
        return float(scales[0]), float(zeros[0]) if zeros.size else 0.0
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale and scale > 0:
        return float(scale), float(zero)
    return None, 0.0
