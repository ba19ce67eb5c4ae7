"""Saving and loading gram_tf's Keras models (custom transformer layers included)."""
from __future__ import annotations

from pathlib import Path

from ..errors import GramTFError, one_line
from ..io_utils import atomic_path
from .registry import layer_modules
from .safe_config import check_config


def quiet_tensorflow() -> None:
    """Keep TensorFlow's Python logger to errors (its retracing notices drown the progress bars)."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def load_model(path):
    """Load a .keras model saved by gram_tf (custom transformer layers included), safely: an HDF5
    full model is refused (Keras' safe mode does not cover HDF5, whose Lambda layers run code on
    load), and a zip .keras is loaded in safe mode (a Lambda layer is a one-line error, no code runs)."""
    import tf_keras

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise GramTFError(f"{path}: cannot read the model ({exc.strerror})") from None
    if head == HDF5_SIGNATURE:
        raise GramTFError(f"{path}: an HDF5 full model is never loaded (its Lambda layers would run code); "
                          "use a .keras (zip) model saved by gram_tf, or retrain with 'gram-tf train'")
    config = read_config(path)  # checked before tf_keras sees it: nothing is imported on the file's say-so
    quiet_tensorflow()
    try:
        with tf_keras.utils.custom_object_scope(custom_objects()):
            model = _load_keras_zip(path, config)
    except OSError as exc:  # h5py: the weights member is not HDF5 or is truncated
        raise GramTFError(f"{path}: its weights ({WEIGHTS_MEMBER}) cannot be read ({one_line(exc, 120)}); "
                          "the file is damaged: save or train the model again") from None
    except (ValueError, TypeError) as exc:
        text = " ".join(str(exc).split())
        code = _code_layers(path)
        if code or "Lambda" in text or "safe_mode" in text or "unsafe" in text.lower():
            named = ", ".join(code) or "a Lambda layer"
            raise GramTFError(f"{path}: the model holds {named} (code or a class gram_tf does not know), which "
                              "gram_tf never loads; rebuild it from gram_tf's layers") from None
        raise GramTFError(f"{path}: not a model gram_tf can load ({text[:200]})") from None
    if not isinstance(model, tf_keras.Model):
        raise GramTFError(f"{path}: holds a {type(model).__name__}, not a Keras model; use a model saved by gram_tf")
    return model


WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
MAX_CONFIG_BYTES = 64 << 20  # the largest registry model's config is a few MB


def read_config(path: Path) -> dict:
    """The `.keras` archive's config.json, parsed and checked against the allowlist (safe_config)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
            if CONFIG_MEMBER not in members:
                raise GramTFError(f"{path}: a .keras archive without {CONFIG_MEMBER}; use a model saved by gram_tf")
            if WEIGHTS_MEMBER not in members:
                raise GramTFError(f"{path}: a .keras archive without {WEIGHTS_MEMBER}; use a model saved by gram_tf")
            if zf.getinfo(CONFIG_MEMBER).file_size > MAX_CONFIG_BYTES:
                raise GramTFError(f"{path}: {CONFIG_MEMBER} is over {MAX_CONFIG_BYTES >> 20} MB; not a model gram_tf saved")
            config = json.loads(zf.read(CONFIG_MEMBER))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise GramTFError(f"{path}: not a .keras (zip) archive; use a model saved by gram_tf") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise GramTFError(f"{path}: {CONFIG_MEMBER} is not valid JSON ({one_line(exc, 80)}); "
                          "use a model saved by gram_tf") from None
    except OSError as exc:
        raise GramTFError(f"{path}: cannot read the model ({exc.strerror or one_line(exc, 80)})") from None
    check_config(config, str(path))
    return config


def _load_keras_zip(path: Path, config: dict):
    """tf_keras.models.load_model(path, compile=False, safe_mode=True), with the weights read from
    a temporary copy of the archive's HDF5 member instead of through the zip.

    Why: h5py reads the weights with backward seeks, and Python 3.11's zipfile answers every
    backward seek in a member by re-reading it from the start, so loading grows with the square of
    the model size (BEiT-base, 344 MB: 83 s, almost all in zipfile.seek; from a file on disk: a few
    seconds). Same steps as tf_keras' loader: the config deserialized in safe mode under its
    saving-v3 switch, then the weights through the public `.weights.h5` path, which restores the
    same per-layer state. Archives with other members (assets) take tf_keras' own loader.
    """
    import tempfile
    import zipfile

    import tf_keras
    from tf_keras.src.saving import saving_lib  # private: the saving-v3 switch load_model sets

    with zipfile.ZipFile(path) as zf:
        members = set(zf.namelist())
        if members - {CONFIG_MEMBER, "metadata.json", WEIGHTS_MEMBER}:
            return tf_keras.models.load_model(str(path), compile=False, safe_mode=True)
        config = dict(config, compile_config=None)
        with tempfile.TemporaryDirectory(prefix="gram_tf_load_") as tmp:
            weights = Path(zf.extract(WEIGHTS_MEMBER, tmp))
            switch = saving_lib._SAVING_V3_ENABLED
            before = getattr(switch, "value", False)
            switch.value = True
            try:
                model = tf_keras.saving.deserialize_keras_object(config, safe_mode=True)
            finally:
                switch.value = before
            model.load_weights(str(weights))
    return model


def _code_layers(path: Path) -> list[str]:
    """'name (Class)' of every layer in a .keras zip's config that is a Lambda or a class outside
    tf_keras and gram_tf's own layers (read as JSON, nothing deserialized)."""
    import json
    import zipfile

    known = set(custom_objects())
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            cls, module = node.get("class_name"), str(node.get("module") or "")
            if isinstance(cls, str) and isinstance(node.get("config"), dict) and "name" in node["config"]:
                if cls == "Lambda" or (cls not in known and module and not module.startswith(("keras", "tf_keras"))):
                    found.append(f"{node['config']['name']} ({cls})")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    try:
        with zipfile.ZipFile(path) as zf:
            walk(json.loads(zf.read("config.json")))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    return found


def save_model(model, path) -> Path:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(str(tmp))
    return Path(path)


def custom_objects() -> dict:
    """Keras custom objects of every gram_tf layer (for clone_model / quantize_scope), gathered from
    the layer modules the model files registered."""
    import importlib

    objects: dict = {}
    for module in layer_modules():
        try:
            objects.update(importlib.import_module(module).CUSTOM_OBJECTS)
        except ImportError:  # pragma: no cover - TensorFlow missing
            return {}
    return objects
