"""The conversion stage: a trained (or pruned) run -> one checked `.tflite` per variant, each with
embedded metadata, a sidecar JSON and an entry in the folder's manifest.json.

Top floor of the convert wing: it builds every variant through the variant table (the strategies
registered there by the package face), so no code here switches on a variant's name.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import data as data_mod
from ..config import GELU_FORMS, ConvertConfig
from .. import __version__
from ..deploy import MANIFEST_NAME, check_labels, embed_metadata, package_model, pixel_input
from ..errors import GramTFError
from ..io_utils import atomic_path, atomic_write_json, compressed_sizes, folder_lock, read_json, sha256_file
from ..metrics import apply_temperature, fit_temperature, nll
from ..models import get_backbone, load_model
from ..optimize import quantize_aware
from ..run import MODEL_FILE, library_versions, load_run
from ..train import predict_probs
from .converter import check_artifact, convert_variant, io_details, tflite_weight_stats
from .calibration import SEARCH
from .card import artifact_card
from .recipe import resolve_recipe
from .variants import get_variant

METADATA_FORMAT_TAG = "gram_tf/1"


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


def keras_model_sizes(run_dir: Path) -> dict:
    """The .keras file without and with Adam state, so 'Nx smaller' has an honest baseline.

    Cached in the run directory (keras_sizes.json), keyed by the model file's hash.
    """
    import tf_keras

    run_dir = Path(run_dir)
    model_file = run_dir / MODEL_FILE
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


def artifact_stem(run: dict, variant: str) -> str:
    sparsity = run.get("sparsity_target")
    tag = f"pruned{int(round(sparsity * 100)):02d}-" if sparsity else ""
    return f"{run['backbone']}__{tag}{variant}"


def default_out_dir(run_dir: Path, run: dict) -> Path:
    name = Path(run.get("parent_run") or run_dir).name
    return Path("tflite_models") / name


def export_artifact(model, path, variant: str, *, size: int, preprocessing: dict, labels, backbone: str,
                    representative: Optional[np.ndarray] = None, io_type: str = "int8", batch_size: int = 1,
                    validation: Optional[tuple] = None, options: Optional[dict] = None,
                    recipe=None, sparsity_target: float = 0.0, check: Optional[tuple] = None, meta_extra: Optional[dict] = None,
                    entry_extra: Optional[dict] = None, card: Optional[dict] = None) -> dict:
    """Convert `model` to `variant`, write `path` atomically with embedded metadata and a sidecar
    JSON, and return its manifest entry (sizes, sha256, weight stats, IO types, the builder's
    report, and - with `check` = (uint8 images, reference probabilities, max disagreement) - its
    agreement with the Keras model). The file carries two metadata entries: gram_tf's JSON and the standard
    TFLite metadata (`card`, default: convert.card.artifact_card of these facts) with labels.txt packed."""
    path = Path(path)
    spec = get_variant(variant)
    t0 = time.perf_counter()
    tfl, report = convert_variant(model, variant, size, preprocessing, representative, io_type, batch_size,
                                  validation, options, recipe)
    meta = {"format": METADATA_FORMAT_TAG, "labels": labels, "input_size": size, "preprocessing": preprocessing,
            "backbone": backbone, "variant": variant, "gram_tf_version": __version__, **(meta_extra or {})}
    card = card or artifact_card(labels=labels, size=size, preprocessing=preprocessing, backbone=backbone,
                                 variant=variant, sparsity=sparsity_target)
    with atomic_path(path, suffix=".tflite") as tmp:
        tmp.write_bytes(package_model(embed_metadata(tfl, meta), card, labels))
        stats = tflite_weight_stats(tmp)
        checked = check_artifact(tmp, check[1], check[0], check[2]) if check is not None else None
        io = io_details(tmp)
    entry = {
        "file": path.name, "path": str(path.resolve()), "backbone": backbone, "variant": variant,
        "description": spec.description, "sparsity_target": sparsity_target,
        "sha256": sha256_file(path), **compressed_sizes(path), "sparsity": stats["sparsity"],
        "weight_dtypes": stats["weight_dtypes"], "weight_quantization": stats["weight_quantization"],
        "io_type": io["input"]["dtype"], "io": io, "batch_size": batch_size,
        "representative_samples": int(len(representative)) if spec.integer and representative is not None else 0,
        "labels": labels, "input_size": size, "preprocessing": preprocessing,
        "seconds": time.perf_counter() - t0,
        "check": checked, "top1_agreement": checked["top1_agreement"] if checked else None,
        "max_abs_diff": checked["max_abs_diff"] if checked else None,
        "flagged": checked["flagged"] if checked else None,
        "selective": None, "fast": None, **(entry_extra or {}),
        # what the int8 recipe asked for and what the builder applied (int8-fast may pick another)
        "int8_recipe": ({**(report or {}).get("recipe", {}), "requested": recipe.as_dict()}
                        if recipe is not None else None),
    }
    if spec.report_key:
        entry[spec.report_key] = report
    if report and report.get("within_max_drop") is False:
        print(f"warning: {path.name}: no {variant} candidate within {100 * report['max_drop']:g} pp of float "
              f"accuracy; kept the most accurate ({report['val_accuracy']:.3f} vs "
              f"{report['float_val_accuracy']:.3f})")
    if report and report.get("slower_than_fp32"):
        ms = report.get("whole_model_ms", {})
        print(f"warning: {path.name}: no {variant} mix was both within the accuracy budget and faster than fp32 "
              f"here ({ms.get(report.get('chosen'))} vs {ms.get('fp32')} ms); deploy the fp32 artifact on this CPU")
    atomic_write_json(Path(str(path) + ".json"), {**meta, "artifact": entry})
    return entry


def convert_run(run_dir, variants=None, out_dir=None, cfg: Optional[ConvertConfig] = None, seed: int = 0,
                progress: bool = True, skip_existing: bool = False, shared: bool = False) -> dict:
    """Convert a trained (or pruned) run to every requested variant; returns the run manifest.

    The folder is held for the whole conversion, unless `shared`: then other conversions of other runs
    write their own files into it at the same time (gram-tf run's executors), and it is held only to
    clear this run's stale temp files and to merge the manifest (waiting for the other holder)."""
    cfg = cfg or ConvertConfig()
    variants = list(variants or cfg.variants)
    specs = [get_variant(v) for v in variants]  # unknown names fail before any work
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if any(s.training == "pqat" for s in specs) and not run.get("sparsity_target"):
        raise GramTFError(f"pqat-int8 needs a pruned run; convert {run_dir}/pruned_NN (from 'gram-tf prune') instead")
    out_dir = Path(out_dir) if out_dir else default_out_dir(run_dir, run)
    if out_dir.exists() and not out_dir.is_dir():
        raise GramTFError(f"{out_dir} is a file; pass a folder for the artifacts (--out DIR)")
    if shared:
        with folder_lock(out_dir, "gram-tf convert", wait=SHARED_WAIT_S):
            for spec in specs:
                for stale in out_dir.glob(f".{artifact_stem(run, spec.name)}.tflite.*"):
                    stale.unlink(missing_ok=True)
        return _convert_specs(run_dir, run, specs, out_dir, cfg, seed, progress, skip_existing, shared)
    with folder_lock(out_dir, "gram-tf convert"):
        for stale in out_dir.glob(".*.tflite.*"):  # temp files of a killed conversion (io_utils.atomic_path)
            stale.unlink(missing_ok=True)
        return _convert_specs(run_dir, run, specs, out_dir, cfg, seed, progress, skip_existing)


SHARED_WAIT_S = 600  # a shared folder is held for a manifest merge (milliseconds); longer means a stuck holder


def _convert_specs(run_dir: Path, run: dict, specs: list, out_dir: Path, cfg: ConvertConfig, seed: int,
                   progress: bool, skip_existing: bool, shared: bool = False) -> dict:
    import tf_keras

    rows = data_mod.read_manifest(run["manifest"])
    size, pre, labels = run["input_size"], run["preprocessing"], check_labels(run["labels"], str(run_dir / "run.json"))
    artifact_pre = pixel_input(pre) if cfg.pixel_input else pre  # what the artifacts take
    model = load_model(run_dir / MODEL_FILE)
    rep = representative_images(rows, run, cfg.representative_samples, seed) if any(s.integer for s in specs) else None
    test_rows = data_mod.split_rows(rows, "test") or data_mod.split_rows(rows, "val")
    check_x, _, _, _ = data_mod.load_images(test_rows[: cfg.check_samples], size, pre["resize"],
                                            progress=False, labels=labels)
    keras_probs = predict_probs(model, check_x, pre) if len(check_x) else None
    sparsity = run.get("sparsity_target") or 0.0
    searchable = bool(data_mod.split_rows(rows, "val"))  # ranges are never picked on the test split
    if cfg.calibration == SEARCH and not searchable and any(s.per_channel is not None for s in specs):
        raise GramTFError(f"convert.calibration search picks activation ranges on the validation split and "
                          f"{run['manifest']} has none; re-split with a val fraction or choose another method")
    recipes = {s.name: resolve_recipe(cfg, s.per_channel, pruned=bool(sparsity), model=model, searchable=searchable)
               if s.per_channel is not None else None for s in specs}
    searched = any(r is not None and r.calibration.method == SEARCH for r in recipes.values())
    validation = _validation_images(rows, run) if searched or any(s.needs_validation or s.uses_validation
                                                                   for s in specs) else None
    run_fields = {"run_dir": str(run_dir.resolve()), "keras_model": str((run_dir / MODEL_FILE).resolve()),
                  "keras_sha256": sha256_file(run_dir / MODEL_FILE),
                  "data_manifest": run["manifest"], "macs": run.get("macs"),
                  "keras_sizes": keras_model_sizes(run_dir), "versions": library_versions()}
    meta_extra = {"sparsity_target": sparsity,
                  "gelu": run.get("train", {}).get("gelu", GELU_FORMS[0]) if get_backbone(run["backbone"]).patch_size else None}
    temperature = None  # fitted once, before the first artifact that is exported
    entries = []
    iterator = specs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(specs, desc=f"converting {run['backbone']}", leave=False)
    for spec in iterator:
        path = out_dir / f"{artifact_stem(run, spec.name)}.tflite"
        recipe = recipes[spec.name]
        if skip_existing and path.is_file() and Path(str(path) + ".json").is_file():
            previous = read_json(Path(str(path) + ".json"))["artifact"]
            # an artifact made with another int8 recipe or another input (pixels or normalized) is converted again
            same_recipe = recipe is None or (previous.get("int8_recipe") or {}).get("requested") == recipe.as_dict()
            if same_recipe and previous.get("preprocessing") == artifact_pre:
                entries.append(previous)
                continue
        if temperature is None:
            temperature = run_temperature(model, rows, run, validation)
            meta_extra["temperature"] = temperature["temperature"]
        source_model, ref, qat_report = model, keras_probs, None
        if spec.training:
            source_model, qat_report = _quantization_aware(run_dir, run, rows, spec.training, cfg, seed, progress)
            if keras_probs is not None:  # fidelity to the QAT model converted
                ref = predict_probs(source_model, check_x, pre)
        card = artifact_card(labels=labels, size=size, preprocessing=artifact_pre, backbone=run["backbone"],
                             variant=spec.name, sparsity=sparsity, model_sha256=run_fields["keras_sha256"],
                             overrides=cfg.metadata)
        entry = export_artifact(
            source_model, path, spec.name, size=size, preprocessing=artifact_pre, labels=labels,
            backbone=run["backbone"], card=card,
            representative=rep, io_type=cfg.io_type, batch_size=cfg.batch_size, validation=validation,
            options=spec.config_options(cfg) if spec.config_options else None,
            recipe=recipe, sparsity_target=sparsity,
            check=(check_x, ref, cfg.max_disagreement) if ref is not None else None, meta_extra=meta_extra,
            entry_extra={**run_fields, **temperature,
                         "qat_float_layers": [f["layer"] for f in qat_report["float"]] if qat_report else None})
        entries.append(entry)
        if entry["flagged"]:
            print(f"warning: {path.name} disagrees with Keras on {1 - entry['top1_agreement']:.0%} of "
                  f"{entry['check']['n']} check images (flagged in the manifest)")
    header = {"run": out_dir.name, "labels": labels, "input_size": size, "preprocessing": artifact_pre,
              "data_manifest": run["manifest"]}
    if shared:
        with folder_lock(out_dir, "gram-tf convert", wait=SHARED_WAIT_S):
            manifest = _merge_manifest(out_dir / MANIFEST_NAME, entries, header)
    else:
        manifest = _merge_manifest(out_dir / MANIFEST_NAME, entries, header)
    tf_keras.backend.clear_session()
    return {**manifest, "artifacts": entries, "manifest_path": str(out_dir / MANIFEST_NAME)}


def run_temperature(model, rows, run: dict, validation=None) -> dict:
    """The run's temperature (gram_tf.metrics.fit_temperature) on its validation split, by the NLL of the
    Keras model's probabilities (softmax outputs: their logs are the logits up to a constant), with the
    fit's record: {"temperature": T or None, "temperature_fit": {...} or None}. None without a
    validation split: the test split must stay unseen, and the artifacts then show the model's scores."""
    if not data_mod.split_rows(rows, "val"):
        return {"temperature": None, "temperature_fit": None}
    if validation is None:
        validation = _validation_images(rows, run)  # the val split here (checked above)
    x, y = validation
    probs = predict_probs(model, x, run["preprocessing"])
    t = fit_temperature(y, probs)
    return {"temperature": t, "temperature_fit": {
        "split": "val", "n": int(len(y)), "nll_before": nll(y, probs), "nll_after": nll(y, apply_temperature(probs, t))}}


def _validation_images(rows, run):
    split = "val" if data_mod.split_rows(rows, "val") else "test"
    x, y, _ = data_mod.load_split(rows, split, run["input_size"], run["preprocessing"]["resize"], progress=False)
    return x, y


def _quantization_aware(run_dir, run, rows, kind, cfg: ConvertConfig, seed, progress):
    """QAT (or PQAT) fine-tune of the run's model; returns (qat_model, layer report)."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    model = load_model(Path(run_dir) / MODEL_FILE)
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
