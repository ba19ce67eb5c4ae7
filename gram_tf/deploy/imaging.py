"""Images in, arrays out: the one decoder and resizer that training and deployment share.

Standard library, numpy and Pillow only (no TensorFlow), so a device with LiteRT runs exactly the
preprocessing the model was trained with.
"""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import GramTFError, one_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# Whole-slide crops and camera micrographs are routinely 4000+ px a side, but one decoded pixel
# costs 3+ bytes several times over (a 12000 x 12000 PNG took training from 0.7 to 2.6 GB): images
# above this many pixels are refused from their header, before any decoding. Raise it with the
# environment variable below for a machine with the memory.
MAX_IMAGE_PIXELS = 100_000_000
MAX_PIXELS_ENV = "GRAM_TF_MAX_IMAGE_PIXELS"
# Pillow's own bomb check (a warning, then an error at 2x its limit) is only ever raised to ours
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def max_image_pixels() -> int:
    raw = os.environ.get(MAX_PIXELS_ENV)
    if not raw:
        return MAX_IMAGE_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise GramTFError(f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels, e.g. 200000000") from None
    if value <= 0:
        raise GramTFError(f"{MAX_PIXELS_ENV}={raw!r} must be a positive number of pixels")
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < value:
        Image.MAX_IMAGE_PIXELS = value  # only raised, so Pillow does not refuse what the user allowed
    return value


def check_pixels(path, size: tuple[int, int]) -> None:
    """One-line error for an image above the pixel limit, from its header (nothing decoded yet)."""
    limit = max_image_pixels()
    w, h = size
    if w * h > limit:
        raise GramTFError(f"{path}: {w}x{h} = {w * h / 1e6:.0f} Mpx is above the {limit / 1e6:.0f} Mpx limit; "
                          f"downscale or tile it, or raise {MAX_PIXELS_ENV} on a machine with the memory")

MAX_IMAGE_BYTES = 2 << 30  # one image file; the pixel limit above bounds what is decoded
RESIZE_MODES = ("squash", "center_crop")
CHANNEL_ORDERS = ("RGB", "BGR")
DEFAULT_PREPROCESSING = {"resize": "squash", "channel_order": "RGB",
                         "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]}
# A preprocessing dict with IN_GRAPH true describes a pixel-input model: the channel order and mean/std
# are what its graph applies to the RGB pixels 0-255 it takes; absent or false, the caller applies them.
IN_GRAPH = "in_graph"


def pixel_input(preprocessing: dict) -> dict:
    """The preprocessing of a model that takes RGB pixels 0-255 and normalizes them in its graph."""
    return {**preprocessing, IN_GRAPH: True}


def outside_graph(preprocessing: dict) -> dict:
    """The preprocessing a caller applies to feed the (Keras) model itself: normalization included."""
    return {k: v for k, v in preprocessing.items() if k != IN_GRAPH}

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                  IndexError, KeyError, TypeError, ZeroDivisionError, MemoryError,
                  Image.DecompressionBombError)


# ------------------------------------------------------------------------------------- images

def is_image_file(path) -> bool:
    """An image by its extension (any case); hidden files (".name") never count."""
    name = Path(path).name
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


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


def load_image(path, min_side: int | None = None) -> np.ndarray:
    """Decode an image file to a uint8 HxWx3 RGB array.

    Applies the EXIF orientation, composites transparency on white, converts greyscale,
    palette, 16-bit, float and CMYK images to 8-bit RGB and takes the first frame of
    multi-frame files. Raises GramTFError naming the file if it cannot be decoded.

    `min_side`: a JPEG at least twice that size on both sides is decoded at a reduced scale (1/2,
    1/4 or 1/8 in the DCT, Pillow's draft mode) that keeps both sides >= `min_side`: 4-16x less
    decoding for camera micrographs, and the pixels stay those of a fair resize (measured:
    benchmarks/bench_predict.py).
    """
    rgb = np.asarray(_open_rgb(path, min_side), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise GramTFError(f"{path}: decoded to an unusable shape {rgb.shape}; re-export it")
    return np.ascontiguousarray(rgb)


def _open_rgb(path, min_side: int | None = None) -> Image.Image:
    """The decoded RGB image as Pillow holds it (no copy into numpy yet); see `load_image`."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise GramTFError(f"{path}: image file not found; check the path") from None
    except OSError as exc:
        raise GramTFError(f"{path}: cannot access image ({one_line(exc, 200)})") from None
    size = info.st_size
    if stat.S_ISDIR(info.st_mode):
        raise GramTFError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the open, a device never end
        raise GramTFError(f"{path}: not a regular file (a pipe, socket or device); pass image files")
    if size > MAX_IMAGE_BYTES:
        raise GramTFError(f"{path}: {size / 2**20:.0f} MB is above the {MAX_IMAGE_BYTES >> 20} MB limit for one image "
                          "file; downscale or tile it")
    if size == 0:
        raise GramTFError(f"{path}: image file is empty (0 bytes); re-copy or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixels(path, img.size)
                if min_side and img.format == "JPEG":
                    img.draft(None, (int(min_side), int(min_side)))
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()  # decode now so truncated / corrupt files fail here
                ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to turn
                if img.mode == "RGB" and "transparency" not in img.info:
                    return img
                rgb = _to_rgb_array(img)
    except _DECODE_ERRORS as exc:
        if isinstance(exc, UnidentifiedImageError):
            reason = "not a recognised image format"
        elif isinstance(exc, Image.DecompressionBombError):
            reason = f"image too large (limit {max_image_pixels() / 1e6:.0f} Mpx; raise {MAX_PIXELS_ENV})"
        else:
            reason = one_line(exc, 200)
        raise GramTFError(
            f"{path}: cannot decode image ({reason}); re-export or remove the file") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise GramTFError(f"{path}: decoded to an unusable shape {rgb.shape}; re-export it")
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


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
    return _resize_pil(Image.fromarray(rgb, "RGB"), size, mode)


def _resize_pil(img: Image.Image, size: int, mode: str) -> np.ndarray:
    """`resize_image` on a Pillow RGB image (one copy into numpy, at the end)."""
    w, h = img.size
    if (w, h) == (size, size):
        return np.array(img, dtype=np.uint8)
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


# Decode JPEGs at >= this many times the model input (then a fair bilinear resize): draft mode's
# DCT scaling alone is a box filter; two or more input pixels per output pixel keep the resize in
# charge of the result.
DRAFT_MARGIN = 2


def load_resized(path, size: int, mode: str = "squash") -> np.ndarray:
    """One image file -> uint8 size x size x 3, as every stage does it (training, evaluation,
    prediction): decode (large JPEGs at a reduced DCT scale), then `resize_image`."""
    if mode not in RESIZE_MODES:
        raise GramTFError(f"unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    size = int(size)
    if size <= 0:
        raise GramTFError(f"resize size must be a positive integer, got {size}")
    img = _open_rgb(path, min_side=DRAFT_MARGIN * size)
    if img.size[0] == 0 or img.size[1] == 0:
        raise GramTFError(f"{path}: decoded to an unusable shape {img.size}; re-export it")
    return _resize_pil(img, size, mode)


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
    if not isinstance(clean.get(IN_GRAPH, False), bool):
        raise GramTFError(f"{source}: preprocessing {IN_GRAPH} must be true or false, got {clean[IN_GRAPH]!r}")
    return clean


def normalize(batch_uint8: np.ndarray, preprocessing: dict) -> np.ndarray:
    """uint8 (N)xHxWx3 RGB -> float32: reorder channels, then (x - mean) / std on 0..255 (a pixel-input
    model's graph does both itself: it gets the pixels as they are)."""
    pp = validate_preprocessing(preprocessing)
    x = np.asarray(batch_uint8)
    if x.shape[-1] != 3:
        raise GramTFError(f"normalize expects ...x3 RGB arrays, got shape {x.shape}")
    x = x.astype(np.float32)
    if pp.get(IN_GRAPH):
        return np.ascontiguousarray(x)
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
    seen: set[Path] = set()  # resolved paths: imgs and imgs/../imgs are the same images
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            images = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                images.extend(Path(dirpath, f) for f in filenames if is_image_file(f))
            if not images:
                raise GramTFError(f"{p}: folder contains no images "
                                  f"({', '.join(IMAGE_EXTENSIONS)})")
            batch = sorted(images)
        elif p.exists():
            batch = [p]
        else:
            raise GramTFError(f"{p}: no such file or folder; check the path")
        for item in batch:
            key = Path(os.path.realpath(item))  # never raises, even on a symlink loop
            if key not in seen:
                seen.add(key)
                found.append(item)
    if not found:
        raise GramTFError("no input paths given; pass image files or folders")
    return found
