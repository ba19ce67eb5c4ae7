"""TFLite conversion driven by one table of variants (the study's "quantization" stage).

Each variant is a row of VARIANTS: how to set up the converter, whether it needs a representative
dataset, and whether it trains first (QAT). Every artifact is checked right after conversion with
the LiteRT interpreter against the Keras model, sized (raw, gzip, zip), hashed, tagged with its
preprocessing/labels (embedded metadata + a sidecar JSON) and recorded in `manifest.json`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import data as data_mod
from .config import ConvertConfig
from .errors import GramTFError
from .io_utils import atomic_path, atomic_write_json, compressed_sizes, read_json, sha256_file

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    integer: bool  # needs a representative dataset
    training: Optional[str] = None  # "qat" | "pqat": quantization-aware training first
    io_types: tuple = ("float32",)  # allowed IO types; the first is used when io_type does not apply


def _setup_fp32(conv, ctx):
    pass


def _setup_fp16(conv, ctx):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]


def _setup_dynamic(conv, ctx):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]


def _setup_int16x8(conv, ctx):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = ctx["representative"]
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


def _setup_int8(conv, ctx, per_channel: bool = True):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = ctx["representative"]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[ctx["io_type"]]
    conv.inference_input_type = io
    conv.inference_output_type = io
    if not per_channel:
        conv._experimental_disable_per_channel = True  # the only switch TFLite offers for this


VARIANTS: dict[str, tuple[Variant, Callable]] = {
    "fp32": (Variant("fp32", "float32 reference", False), _setup_fp32),
    "fp16": (Variant("fp16", "float16 weights (half the size; float compute on CPU)", False), _setup_fp16),
    "dynamic": (Variant("dynamic", "int8 weights, float activations (dynamic range)", False), _setup_dynamic),
    "int16x8": (Variant("int16x8", "int16 activations, int8 weights (accuracy over speed)", True), _setup_int16x8),
    "int8": (Variant("int8", "full integer, per-channel weight scales", True, io_types=("int8", "uint8", "float32")),
             _setup_int8),
    "int8-per-tensor": (Variant("int8-per-tensor", "full integer, one scale per weight tensor", True,
                                io_types=("int8", "uint8", "float32")),
                        lambda conv, ctx: _setup_int8(conv, ctx, per_channel=False)),
    "qat-int8": (Variant("qat-int8", "quantization-aware training, then full integer", True, training="qat",
                         io_types=("int8", "uint8", "float32")), _setup_int8),
    "pqat-int8": (Variant("pqat-int8", "pruning-preserving QAT on a pruned model, then full integer", True,
                          training="pqat", io_types=("int8", "uint8", "float32")), _setup_int8),
    # built by gram_tf.fast_int8: per-op profile of fp32 vs int8, float where int8 is slower
    "int8-fast": (Variant("int8-fast", "int8 where XNNPACK runs it faster, float elsewhere (profile-guided)",
                          True), _setup_int8),
    # built by gram_tf.selective (quantization debugger); float IO since some nodes stay float
    "int8-selective": (Variant("int8-selective", "int8 with the highest-error layers kept in float", True),
                       _setup_int8),
}


def get_variant(name: str) -> tuple[Variant, Callable]:
    if name not in VARIANTS:
        import difflib

        hint = difflib.get_close_matches(name, list(VARIANTS), n=1)
        did = f" (did you mean {hint[0]}?)" if hint else ""
        raise GramTFError(f"unknown variant '{name}'{did}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name]


def representative_images(rows, run: dict, n: int, seed: int) -> np.ndarray:
    """`n` training images (seeded sample), decoded and resized like the model expects (uint8)."""
    train_rows = data_mod.split_rows(rows, "train")
    if not train_rows:
        raise GramTFError("integer variants need a representative dataset but the manifest has no training images")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train_rows), size=min(n, len(train_rows)), replace=False)
    x, _, _, errors = data_mod.load_images([train_rows[i] for i in sorted(pick)], run["input_size"],
                                           run["preprocessing"]["resize"], progress=False,
                                           labels=run["labels"])
    return x


def _concrete(model, batch_size: int, size: int):
    import tensorflow as tf

    spec = tf.TensorSpec([batch_size, size, size, 3], tf.float32, name="image")
    fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(spec)


def representative_gen(images_uint8: np.ndarray, preprocessing: dict, batch_size: int = 1):
    """The converter's representative_dataset: normalized images, one batch at a time."""
    x = data_mod_normalize(images_uint8, preprocessing)

    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1].repeat(batch_size, axis=0)]

    return gen


class CalibratedInt8:
    """Full-int8 conversions of one model with any set of nodes kept float, calibrated once.

    Built on TFLite's quantization debugger: the representative dataset runs through the model
    once (calibration), and each `quantize(float_nodes)` only re-runs the quantizer on the
    calibrated model with those nodes (output tensor names) denylisted. Float IO, since some nodes
    stay float. Shared by int8-selective and int8-fast, whose searches try many denylists.
    """

    def __init__(self, model, size: int, rep_gen, batch_size: int = 1):
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_concrete_functions([_concrete(model, batch_size, size)])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep_gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        with _quiet_absl():
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=rep_gen, debug_options=tf.lite.experimental.QuantizationDebugOptions())
        self._cache: dict = {}

    def quantize(self, float_nodes=()) -> bytes:
        """Model bytes with `float_nodes` kept float (cached per set of nodes)."""
        key = frozenset(float_nodes)
        if key not in self._cache:
            # the live options object, not the setter: the setter rebuilds the instrumented model
            self.debugger.options.denylisted_nodes = sorted(key)
            with _quiet_absl():
                self._cache[key] = self.debugger.get_nondebug_quantized_model()
        return self._cache[key]

    def ranked_errors(self, float_nodes=()) -> list[dict]:
        """The quantized tensors of the model with `float_nodes` float, worst error first."""
        import tensorflow as tf

        from .selective import ranked_errors

        self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=sorted(float_nodes))
        return ranked_errors(self.debugger)


def convert_model(model, variant: str, size: int, preprocessing: dict,
                  representative: Optional[np.ndarray] = None, io_type: str = "int8",
                  batch_size: int = 1, fast_options: Optional[dict] = None) -> bytes:
    """Convert a Keras model to TFLite bytes for one variant (no files written)."""
    import tensorflow as tf

    spec, setup = get_variant(variant)
    if variant == "int8-selective":
        raise GramTFError("int8-selective needs validation data: use convert_run or gram_tf.selective.selective_int8")
    if variant == "int8-fast":
        from .fast_int8 import fast_int8

        return fast_int8(model, size, preprocessing, representative, batch_size=batch_size,
                         **(fast_options or {}))[0]
    if spec.integer and (representative is None or len(representative) == 0):
        raise GramTFError(f"variant {variant} needs a representative dataset (training images); none was given")
    if io_type not in spec.io_types:
        io_type = spec.io_types[0]

    ctx = {"representative": representative_gen(representative, preprocessing, batch_size) if spec.integer
           else None, "io_type": io_type}
    # Without a trackable object the converter freezes the traced graph directly: ~2 s for a
    # MobileNet instead of ~30 s for its SavedModel round trip (measured on 2 cores). The
    # SavedModel path is the fallback.
    errors = []
    for trackable in (None, model):
        try:
            with _quiet_absl():
                conv = tf.lite.TFLiteConverter.from_concrete_functions(
                    [_concrete(model, batch_size, size)], trackable)
                setup(conv, ctx)
                return conv.convert()
        except Exception as exc:
            errors.append(" ".join(str(exc).split())[:240] or type(exc).__name__)
    raise GramTFError(f"TFLite conversion to {variant} failed: {errors[-1]}")


class _quiet_absl:
    """Silence the converter's deprecation warning about the trackable-free path."""

    def __enter__(self):
        import logging
        import warnings

        self.logger = logging.getLogger("absl")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        self.logger.setLevel(self.level)


def data_mod_normalize(images_uint8: np.ndarray, preprocessing: dict) -> np.ndarray:
    from .runtime import normalize

    return normalize(images_uint8, preprocessing).astype(np.float32)


def tflite_weight_stats(path) -> dict:
    """Kernel sparsity and weight-quantization granularity read from the .tflite itself."""
    from .runtime import make_interpreter

    # Builtin kernels (no XNNPACK) with every tensor kept, after one inference: float16 and
    # dynamic-range weights then hold their dequantized values too.
    interp = make_interpreter(str(path), threads=1, delegate=False, experimental_preserve_all_tensors=True)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interp.invoke()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    zeros = total = 0
    granularity = set()
    weight_dtypes = set()
    for op in interp._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            continue
        if len(op["inputs"]) < 2 or op["inputs"][1] < 0:
            continue
        idx = op["inputs"][1]
        try:
            w = interp.get_tensor(idx)
        except ValueError:
            continue  # not a constant (e.g. an activation matmul)
        d = details[idx]
        if op["op_name"] == "BATCH_MATMUL" and not np.any(w):
            continue
        zeros += int(np.sum(w == 0))  # int8 weights are symmetric (zero point 0)
        total += w.size
        weight_dtypes.add(np.dtype(d["dtype"]).name)
        scales = d["quantization_parameters"]["scales"]
        if len(scales) > 1:
            granularity.add("per-channel")
        elif len(scales) == 1:
            granularity.add("per-tensor")
    return {"sparsity": zeros / total if total else 0.0, "weight_dtypes": sorted(weight_dtypes),
            "weight_quantization": "+".join(sorted(granularity)) or "none"}


def io_details(path) -> dict:
    from .runtime import make_interpreter

    interp = make_interpreter(str(path), threads=1, delegate=False)
    out = {}
    for kind, det in (("input", interp.get_input_details()[0]), ("output", interp.get_output_details()[0])):
        q = det["quantization_parameters"]
        out[kind] = {"dtype": np.dtype(det["dtype"]).name, "shape": det["shape"].tolist(),
                     "scale": [float(s) for s in q["scales"]], "zero_point": [int(z) for z in q["zero_points"]]}
    return out


def check_artifact(path, keras_probs: np.ndarray, images: np.ndarray, max_disagreement: float) -> dict:
    """Run the artifact in LiteRT on the check images and compare with the Keras probabilities."""
    from .runtime import Classifier

    clf = Classifier(str(path), threads=2)
    probs = clf.predict_arrays(images)
    agree = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
    diff = np.abs(probs - keras_probs)
    return {"n": int(len(images)), "top1_agreement": agree, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "flagged": bool(agree < 1.0 - max_disagreement)}


def keras_model_sizes(run_dir: Path) -> dict:
    """The .keras file without and with Adam state, so 'Nx smaller' has an honest baseline.

    Cached in the run directory (keras_sizes.json), keyed by the model file's hash.
    """
    import tf_keras

    from .train import load_model

    run_dir = Path(run_dir)
    model_file = run_dir / "model.keras"
    cache = run_dir / "keras_sizes.json"
    digest = sha256_file(model_file)
    if cache.is_file():
        cached = read_json(cache)
        if cached.get("model_sha256") == digest:
            return cached["sizes"]
    sizes = {"without_optimizer": compressed_sizes(model_file)}
    model = load_model(model_file)
    model.compile(optimizer=tf_keras.optimizers.Adam(), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    import os
    import tempfile

    fd, probe = tempfile.mkstemp(prefix=".size_probe.", suffix=".keras", dir=run_dir)
    os.close(fd)
    try:
        model.save(probe)  # .keras stores the optimizer state exactly when compiled
        sizes["with_optimizer"] = {"size_bytes": os.path.getsize(probe)}
    finally:
        os.unlink(probe)
    atomic_write_json(cache, {"model_sha256": digest, "sizes": sizes})
    return sizes


def _merge_manifest(path: Path, entries: list[dict], header: dict) -> dict:
    manifest = read_json(path) if path.is_file() else {"format": "gram_tf-manifest/1", "artifacts": []}
    manifest.update({k: v for k, v in header.items() if k != "artifacts"})
    keep = [a for a in manifest["artifacts"] if a["file"] not in {e["file"] for e in entries}]
    manifest["artifacts"] = keep + entries
    atomic_write_json(path, manifest)
    return manifest


def get_backbone_patch(name: str):
    from .models import get_backbone

    return get_backbone(name).patch_size


def artifact_stem(run: dict, variant: str) -> str:
    sparsity = run.get("sparsity_target")
    tag = f"pruned{int(round(sparsity * 100)):02d}-" if sparsity else ""
    return f"{run['backbone']}__{tag}{variant}"


def default_out_dir(run_dir: Path, run: dict) -> Path:
    name = Path(run.get("parent_run") or run_dir).name
    return Path("tflite_models") / name


def convert_run(run_dir, variants=None, out_dir=None, cfg: Optional[ConvertConfig] = None, seed: int = 0,
                progress: bool = True, skip_existing: bool = False) -> dict:
    """Convert a trained (or pruned) run to every requested variant; returns the run manifest."""
    import tf_keras

    from . import tflite_meta
    from .train import library_versions, load_model, load_run

    cfg = cfg or ConvertConfig()
    variants = list(variants or cfg.variants)
    for v in variants:
        get_variant(v)  # unknown names fail before any work
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if "pqat-int8" in variants and not run.get("sparsity_target"):
        raise GramTFError(f"pqat-int8 needs a pruned run; convert {run_dir}/pruned_NN (from 'gram-tf prune') instead")
    out_dir = Path(out_dir) if out_dir else default_out_dir(run_dir, run)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = data_mod.read_manifest(run["manifest"])
    size, pre, labels = run["input_size"], run["preprocessing"], run["labels"]
    model = load_model(run_dir / "model.keras")
    rep = representative_images(rows, run, cfg.representative_samples, seed) \
        if any(get_variant(v)[0].integer for v in variants) else None
    test_rows = data_mod.split_rows(rows, "test") or data_mod.split_rows(rows, "val")
    check_x, _, _, _ = data_mod.load_images(test_rows[: cfg.check_samples], size, pre["resize"],
                                            progress=False, labels=labels)
    keras_probs = model.predict(data_mod.make_dataset(check_x, None, pre, 32), verbose=0) if len(check_x) else None
    sizes = keras_model_sizes(run_dir)
    entries = []
    iterator = variants
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(variants, desc=f"converting {run['backbone']}", leave=False)
    for variant in iterator:
        spec, _ = get_variant(variant)
        stem = artifact_stem(run, variant)
        path = out_dir / f"{stem}.tflite"
        if skip_existing and path.is_file() and Path(str(path) + ".json").is_file():
            entries.append(read_json(Path(str(path) + ".json"))["artifact"])
            continue
        t0 = time.perf_counter()
        source_model, qat_report = model, None
        if spec.training:
            source_model, qat_report = _quantization_aware(run_dir, run, rows, spec.training, cfg, seed, progress)
        selective = fast = None
        if variant == "int8-fast":
            from .fast_int8 import fast_int8

            tfl, fast = fast_int8(model, size, pre, rep, threads=cfg.fast_threads, margin=cfg.fast_margin,
                                  batch_size=cfg.batch_size, validation=_validation_images(rows, run),
                                  max_drop=cfg.fast_max_drop)
            if fast.get("within_max_drop") is False:
                print(f"warning: {path.name}: no int8-fast candidate within {cfg.fast_max_drop:.1%} of float "
                      f"accuracy; kept the most accurate ({fast['val_accuracy']:.3f} vs "
                      f"{fast['float_val_accuracy']:.3f})")
        elif variant == "int8-selective":
            from .selective import selective_int8

            val_x, val_y = _validation_images(rows, run)
            tfl, selective = selective_int8(model, size, pre, rep, val_x, val_y, labels,
                                            cfg.selective_max_drop, batch_size=cfg.batch_size)
        else:
            tfl = convert_model(source_model, variant, size, pre, rep, cfg.io_type, cfg.batch_size)
        meta = {
            "format": "gram_tf/1", "labels": labels, "input_size": size, "preprocessing": pre,
            "backbone": run["backbone"], "variant": variant, "sparsity_target": run.get("sparsity_target") or 0.0,
            "gelu": run.get("train", {}).get("gelu", "erf") if get_backbone_patch(run["backbone"]) else None,
        }
        tfl = tflite_meta.embed_metadata(tfl, meta)
        with atomic_path(path, suffix=".tflite") as tmp:
            tmp.write_bytes(tfl)
            stats = tflite_weight_stats(tmp)
            ref = keras_probs
            if spec.training and keras_probs is not None:  # fidelity to the QAT model converted
                ref = source_model.predict(data_mod.make_dataset(check_x, None, pre, 32), verbose=0)
            check = check_artifact(tmp, ref, check_x, cfg.max_disagreement) if ref is not None else None
            io = io_details(tmp)
        seconds = time.perf_counter() - t0
        entry = {
            "file": path.name, "path": str(path.resolve()), "backbone": run["backbone"], "variant": variant,
            "description": spec.description, "sparsity_target": run.get("sparsity_target") or 0.0,
            "sha256": sha256_file(path), **compressed_sizes(path), "sparsity": stats["sparsity"],
            "weight_dtypes": stats["weight_dtypes"], "weight_quantization": stats["weight_quantization"],
            "io_type": io["input"]["dtype"], "io": io, "batch_size": cfg.batch_size,
            "representative_samples": int(len(rep)) if spec.integer and rep is not None else 0,
            "labels": labels, "input_size": size, "preprocessing": pre, "seconds": seconds,
            "check": check, "top1_agreement": check["top1_agreement"] if check else None,
            "max_abs_diff": check["max_abs_diff"] if check else None,
            "flagged": check["flagged"] if check else None,
            "qat_float_layers": [f["layer"] for f in qat_report["float"]] if qat_report else None,
            "selective": selective, "fast": fast,
            "run_dir": str(run_dir.resolve()), "keras_model": str((run_dir / "model.keras").resolve()),
            "data_manifest": run["manifest"], "macs": run.get("macs"),
            "keras_sizes": sizes, "versions": library_versions(),
        }
        atomic_write_json(Path(str(path) + ".json"), {**meta, "artifact": entry})
        entries.append(entry)
        if entry["flagged"]:
            print(f"warning: {path.name} disagrees with Keras on {1 - entry['top1_agreement']:.0%} of "
                  f"{check['n']} check images (flagged in the manifest)")
    header = {"run": out_dir.name, "labels": labels, "input_size": size, "preprocessing": pre,
              "data_manifest": run["manifest"]}
    manifest = _merge_manifest(out_dir / MANIFEST_NAME, entries, header)
    tf_keras.backend.clear_session()
    return {**manifest, "artifacts": entries, "manifest_path": str(out_dir / MANIFEST_NAME)}


def _validation_images(rows, run):
    split = "val" if data_mod.split_rows(rows, "val") else "test"
    x, y, _ = data_mod.load_split(rows, split, run["input_size"], run["preprocessing"]["resize"], progress=False)
    return x, y


def _quantization_aware(run_dir, run, rows, kind, cfg: ConvertConfig, seed, progress):
    """QAT (or PQAT) fine-tune of the run's model; returns (qat_model, layer report)."""
    import tf_keras

    from .quantize import quantize_aware
    from .train import load_model

    tf_keras.utils.set_random_seed(seed)
    model = load_model(Path(run_dir) / "model.keras")
    qat, report = quantize_aware(model, preserve_sparsity=(kind == "pqat"))
    size, pre, labels = run["input_size"], run["preprocessing"], run["labels"]
    x, y, _ = data_mod.load_split(rows, "train", size, pre["resize"], progress=False)
    n = len(labels)
    qat.compile(optimizer=tf_keras.optimizers.Adam(cfg.qat_learning_rate),
                loss="categorical_crossentropy", metrics=["accuracy"])
    ds = data_mod.make_dataset(x, tf_keras.utils.to_categorical(y, n), pre, 16, augment=True,
                               shuffle=True, seed=seed)
    qat.fit(ds, epochs=cfg.qat_epochs, verbose=1 if progress else 2)
    return qat, report
