"""Deployment runtime: classify micrographs with a ``.tflite`` model, without TensorFlow.

Imports only the standard library, numpy, Pillow and the LiteRT interpreter
(``ai_edge_litert``, or ``tflite_runtime`` as a fallback), so it runs on a device that has no
TensorFlow. Labels, input size and preprocessing come from the gram_tf metadata embedded in the
model (see :mod:`gram_tf.tflite_meta`), else from a ``<model>.tflite.json`` sidecar, else from
explicit arguments.

The image functions here (:func:`load_image`, :func:`resize_image`, :func:`normalize`) are also
used by the training pipeline, so training and deployment preprocess identically.
"""
from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gram_tf.errors import GramTFError
from gram_tf.tflite_meta import METADATA_FORMAT, read_metadata, read_sidecar, sidecar_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# Whole-slide crops and camera micrographs are routinely 4000+ px a side; Pillow's default
# decompression-bomb limit (~89 MP) is too small for some. Only ever raised, never lowered.
MAX_IMAGE_PIXELS = 20000 * 20000
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

RESIZE_MODES = ("squash", "center_crop")
CHANNEL_ORDERS = ("RGB", "BGR")
DEFAULT_PREPROCESSING = {"resize": "squash", "channel_order": "RGB",
                         "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]}
_BATCH = 32  # images decoded and resized per interpreter call group

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                  IndexError, KeyError, TypeError, ZeroDivisionError, MemoryError,
                  Image.DecompressionBombError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------------------------- images
def is_image_file(path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _composite_on_white(img: Image.Image) -> np.ndarray:
    rgba = img.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return np.asarray(white, dtype=np.uint8)


def _high_depth_to_uint8(img: Image.Image) -> np.ndarray:
    """Single-channel 16/32-bit int or float image -> uint8 greyscale, scaled by its dtype range.

    I;16* -> value / 257 (65535 -> 255). I (int32) and F (float32) carry no bit depth, so
    the value range decides: within 0..255 kept, within 0..65535 treated as 16-bit, F within
    0..1 treated as unit-range; anything else is min-max scaled.
    """
    arr = np.asarray(img)
    if arr.dtype.kind == "u":
        scale = np.iinfo(arr.dtype).max / 255.0
        out = arr.astype(np.float32) / np.float32(scale)
    else:
        data = arr.astype(np.float32)
        finite = data[np.isfinite(data)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if lo >= 0 and img.mode == "F" and hi <= 1.0:
            out = data * np.float32(255.0)
        elif lo >= 0 and hi <= 255:
            out = data
        elif lo >= 0 and hi <= 65535:
            out = data / np.float32(257.0)
        else:
            out = (data - lo) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
        out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    grey = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        "transparency" in img.info and mode in ("P", "L", "RGB", "1"))
    if has_alpha:
        return _composite_on_white(img)
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_uint8(img)
    if mode != "RGB":  # 1, L, P, CMYK, YCbCr, RGBX, HSV ...
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def load_image(path) -> np.ndarray:
    """Decode an image file to a uint8 HxWx3 RGB array.

    Applies the EXIF orientation, composites transparency on white, converts greyscale,
    palette, 16-bit, float and CMYK images to 8-bit RGB and takes the first frame of
    multi-frame files. Raises GramTFError naming the file if it cannot be decoded.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise GramTFError(f"{path}: image file not found; check the path") from None
    except OSError as exc:
        raise GramTFError(f"{path}: cannot access image ({_one_line(exc)})") from None
    if path.is_dir():
        raise GramTFError(f"{path}: is a folder, not an image file")
    if size == 0:
        raise GramTFError(f"{path}: image file is empty (0 bytes); re-copy or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()  # decode now so truncated / corrupt files fail here
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb_array(img)
    except _DECODE_ERRORS as exc:
        if isinstance(exc, UnidentifiedImageError):
            reason = "not a recognised image format"
        elif isinstance(exc, Image.DecompressionBombError):
            reason = f"image too large (limit {MAX_IMAGE_PIXELS} pixels)"
        else:
            reason = _one_line(exc)
        raise GramTFError(
            f"{path}: cannot decode image ({reason}); re-export or remove the file") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise GramTFError(f"{path}: decoded to an unusable shape {rgb.shape}; re-export it")
    return np.ascontiguousarray(rgb)


def resize_image(rgb: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize a uint8 HxWx3 image to size x size x 3 with bilinear resampling.

    ``squash``: the whole image is resized to size x size (aspect ratio not kept).
    ``center_crop``: the shorter side is scaled to ``size`` (the longer one keeps the aspect
    ratio, rounded), then the centre size x size square is cut out.
    """
    if mode not in RESIZE_MODES:
        raise GramTFError(f"unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    size = int(size)
    if size <= 0:
        raise GramTFError(f"resize size must be a positive integer, got {size}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise GramTFError(f"resize_image expects an HxWx3 array, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb.copy()
    img = Image.fromarray(rgb, "RGB")
    if mode == "squash":
        out = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
        return np.asarray(out, dtype=np.uint8)
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    out = img.crop((left, top, left + size, top + size))
    return np.asarray(out, dtype=np.uint8)


def validate_preprocessing(pp, source: str = "preprocessing") -> dict:
    """Check a preprocessing dict and return a clean copy (mean/std as 3 floats)."""
    if not isinstance(pp, dict):
        raise GramTFError(f"{source}: preprocessing must be a dict, got {type(pp).__name__}")
    missing = [k for k in DEFAULT_PREPROCESSING if k not in pp]
    if missing:
        raise GramTFError(f"{source}: preprocessing lacks {', '.join(missing)}; add them")
    if pp["resize"] not in RESIZE_MODES:
        raise GramTFError(f"{source}: unknown resize mode {pp['resize']!r}; "
                          f"use one of {', '.join(RESIZE_MODES)}")
    order = str(pp["channel_order"]).upper()
    if order not in CHANNEL_ORDERS:
        raise GramTFError(f"{source}: unknown channel_order {pp['channel_order']!r}; "
                          "use RGB or BGR")
    clean = dict(pp, channel_order=order)
    for key in ("mean", "std"):
        value = pp[key]
        try:
            arr = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise GramTFError(f"{source}: preprocessing {key} must be numbers, "
                              f"got {value!r}") from None
        if arr.size == 1:
            arr = np.repeat(arr, 3)
        if arr.size != 3 or not np.all(np.isfinite(arr)):
            raise GramTFError(f"{source}: preprocessing {key} must be 1 or 3 finite numbers, "
                              f"got {value!r}")
        if key == "std" and np.any(arr == 0):
            raise GramTFError(f"{source}: preprocessing std must be non-zero, got {value!r}")
        clean[key] = [float(v) for v in arr]
    return clean


def normalize(batch_uint8: np.ndarray, preprocessing: dict) -> np.ndarray:
    """uint8 (N)xHxWx3 RGB -> float32: reorder channels, then (x - mean) / std on 0..255."""
    pp = validate_preprocessing(preprocessing)
    x = np.asarray(batch_uint8)
    if x.shape[-1] != 3:
        raise GramTFError(f"normalize expects ...x3 RGB arrays, got shape {x.shape}")
    x = x.astype(np.float32)
    if pp["channel_order"] == "BGR":
        x = x[..., ::-1]
    mean = np.asarray(pp["mean"], dtype=np.float32)
    std = np.asarray(pp["std"], dtype=np.float32)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def find_images(paths) -> list[Path]:
    """Expand files and folders (recursively, sorted, image extensions, hidden entries
    skipped) into a list of image paths. Explicitly named files are kept whatever their
    extension. Raises GramTFError for a missing path or a folder without images."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            images = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                images.extend(Path(dirpath, f) for f in filenames
                              if not f.startswith(".") and is_image_file(f))
            if not images:
                raise GramTFError(f"{p}: folder contains no images "
                                  f"({', '.join(IMAGE_EXTENSIONS)})")
            batch = sorted(images)
        elif p.exists():
            batch = [p]
        else:
            raise GramTFError(f"{p}: no such file or folder; check the path")
        for item in batch:
            if item not in seen:
                seen.add(item)
                found.append(item)
    if not found:
        raise GramTFError("no input paths given; pass image files or folders")
    return found


# --------------------------------------------------------------------------------- interpreter
def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise GramTFError("no TFLite interpreter installed: pip install ai-edge-litert"
                              ) from None
    return Interpreter


def make_interpreter(model_path, threads=None, delegate: bool = True, **options):
    """A LiteRT interpreter; `delegate=False` runs the builtin kernels without XNNPACK (weights
    then stay readable with get_tensor, for inspection)."""
    Interpreter = _interpreter_class()
    if not delegate:
        try:
            from ai_edge_litert.interpreter import OpResolverType
        except ImportError:  # tflite_runtime
            from tflite_runtime.interpreter import OpResolverType
        options["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = Interpreter(model_path=str(model_path), num_threads=threads, **options)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise GramTFError(f"{model_path}: LiteRT cannot load this model ({msg})") from None
    interp.allocate_tensors()
    return interp


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
    """

    def __init__(self, model_path, threads=None, labels=None, input_size=None,
                 preprocessing=None):
        self.model_path = Path(model_path)
        self.warnings: list[str] = []
        where = str(self.model_path)
        if not self.model_path.is_file():
            raise GramTFError(f"{where}: model file not found; pass the path to a .tflite file")

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

        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise GramTFError(f"threads must be a positive integer, got {threads!r}")
        Interpreter = _interpreter_class()
        try:
            self.interpreter = Interpreter(model_path=where, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise GramTFError(f"{where}: LiteRT cannot load the model ({_one_line(exc)}); "
                              "re-export it with the gram_tf converter") from None
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._check_io(where)

        # labels
        if labels is None:
            labels = self.meta.get("labels")
            if labels is None:
                raise GramTFError(f"{where}: model has no gram_tf metadata (embedded or "
                                  f"{sidecar_path(self.model_path).name}): pass --labels")
        self.labels = _parse_labels(labels)
        n_out = int(self.output_details[0]["shape"][-1])
        self._binary_sigmoid = n_out == 1 and len(self.labels) == 2
        if n_out != len(self.labels) and not self._binary_sigmoid:
            raise GramTFError(f"{where}: model outputs {n_out} classes but {len(self.labels)} "
                              f"labels were given ({', '.join(self.labels)}); "
                              "pass matching --labels")

        # input size
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

        # preprocessing
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

        self._outputs_logits = False
        self._batch_shape: tuple | None = None

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
        x = self._quantize_input(normalize(batch, self.preprocessing))
        y = self._dequantize_output(self._run(x))
        return self._to_probabilities(y)

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
        return resize_image(load_image(path), self.input_size, self.preprocessing["resize"])

    def predict_paths(self, paths, top_k: int = 1) -> tuple[list[dict], list[dict]]:
        """Classify image files / folders. Returns (results, errors); unreadable images are
        reported in errors ({"path", "error"}) and skipped."""
        files = find_images(paths)
        k = max(1, min(int(top_k), len(self.labels)))
        results: list[dict] = []
        errors: list[dict] = []
        pending: list[tuple[Path, np.ndarray]] = []

        def flush():
            if not pending:
                return
            probs = self.predict_arrays(np.stack([arr for _, arr in pending]))
            for (p, _), row in zip(pending, probs):
                results.append(self._result(p, row, k))
            pending.clear()

        for p in files:
            try:
                pending.append((p, self.prepare(p)))
            except GramTFError as exc:
                errors.append({"path": str(p), "error": str(exc)})
                continue
            if len(pending) >= _BATCH:
                flush()
        flush()
        return results, errors

    def _result(self, path: Path, row: np.ndarray, k: int) -> dict:
        order = np.argsort(-row, kind="stable")
        top = [[self.labels[i], float(row[i])] for i in order[:k]]
        return {"path": str(path), "label": top[0][0], "prob": top[0][1], "top_k": top,
                "probs": {label: float(p) for label, p in zip(self.labels, row)}}


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


# ------------------------------------------------------------------------------- formatting
def _top_columns(top_k: int) -> list[str]:
    cols = []
    for i in range(2, top_k + 1):
        cols += [f"top{i}_label", f"top{i}_prob"]
    return cols


def format_table(results: Sequence[dict], top_k: int = 1) -> str:
    """Plain-text table: path, label, prob and (top_k > 1) the runner-up labels."""
    if not results:
        return "(no images classified)"
    header = ["path", "label", "prob"]
    if top_k > 1:
        header.append(f"top {top_k}")
    rows = []
    for r in results:
        row = [r["path"], r["label"], f"{r['prob']:.4f}"]
        if top_k > 1:
            row.append(", ".join(f"{label} {p:.4f}" for label, p in r["top_k"][:top_k]))
        rows.append(row)
    widths = [max(len(str(x[i])) for x in [header] + rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header] + rows):
        cells = [str(c).ljust(w) if j != 2 else str(c).rjust(w)
                 for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_csv(results: Sequence[dict], top_k: int = 1) -> str:
    """CSV: path,label,prob,[top2_label,top2_prob,...],prob_<label> for every label."""
    labels = list(results[0]["probs"]) if results else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "prob"] + _top_columns(top_k)
                    + [f"prob_{label}" for label in labels])
    for r in results:
        row = [r["path"], r["label"], f"{r['prob']:.6f}"]
        for i in range(1, top_k):
            if i < len(r["top_k"]):
                row += [r["top_k"][i][0], f"{r['top_k'][i][1]:.6f}"]
            else:
                row += ["", ""]
        row += [f"{r['probs'].get(label, 0.0):.6f}" for label in labels]
        writer.writerow(row)
    return buf.getvalue()


def to_json(results: Iterable[dict], errors: Iterable[dict] = ()) -> str:
    return json.dumps({"results": list(results), "errors": list(errors)}, indent=2)
