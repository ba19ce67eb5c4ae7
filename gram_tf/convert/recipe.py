"""The int8 recipe: what is done to a model on its way to full integer, beyond the converter.

- equalize: cross-layer equalization (gram_tf.optimize.equalize), data-aware on the calibration
  images so ReLU6 caps and activation ranges stay as they were;
- bias_correction: the int8 weight rounding's mean shift absorbed into the biases
  (gram_tf.optimize.bias_correction), `quantized` (upstream error included) or `float` inputs;
- calibration: how activation ranges are set (gram_tf.convert.calibration).

`ConvertConfig` says which variants get what ("auto" = what the measurements in
docs/quantization.md support, see `resolve_recipe`). The recipe and its reports travel
into each artifact's manifest entry (`int8_recipe`) and the report.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..config import ALWAYS, AUTO, BIAS_CORRECTION_INPUTS, NEVER, check_choice
from ..errors import GramTFError, one_line
from .calibration import (METHODS, SEARCH, Calibration, calibrate_only, calibrated_ranges, collect_histograms,
                          quantize_calibrated, recalibrate, search_candidates)
from .tracing import model_inputs, representative_gen

BIAS_CORRECTION = (NEVER,) + BIAS_CORRECTION_INPUTS  # what a resolved recipe does ("auto" resolved)
_OLD_NEVER = "off"  # the recipe's word for `never` before both said `never` (benchmark scripts passed it)

# Bias correction with `quantized` inputs runs the calibration images through the model once per
# corrected layer. Above this total (layers x images x GMAC per image; about two minutes of Keras
# on 2 cores) `auto` and int8-fast's recipe search use `float` inputs, one pass. MobileNets and
# DeiT-tiny at 224 px stay below it (40-4,000); BEiT-base at 224 px is 56,000 (measured: one
# `quantized` recipe kept int8-fast busy for over 15 minutes).
QUANTIZED_BC_MAX_GMAC = 5000.0


def bias_correction_inputs(model, images: int = 64) -> str:
    """`quantized` where its one pass per layer is affordable for `model` (see QUANTIZED_BC_MAX_GMAC),
    else `float`."""
    from ..models import count_macs
    from ..optimize import LINEAR

    layers = sum(type(layer).__name__ in LINEAR for layer in model.layers)
    return "quantized" if layers * images * count_macs(model) / 1e9 <= QUANTIZED_BC_MAX_GMAC else "float"


@dataclass(frozen=True)
class Int8Recipe:
    equalize: bool = False
    bias_correction: str = NEVER  # one of BIAS_CORRECTION
    calibration: Calibration = field(default_factory=Calibration)
    calibration_images: int = 64  # images equalization and bias correction measure on

    def __post_init__(self):
        if self.bias_correction == _OLD_NEVER:
            print(f"notice: Int8Recipe bias_correction {_OLD_NEVER!r} is deprecated; read as {NEVER!r}", file=sys.stderr)
            object.__setattr__(self, "bias_correction", NEVER)
        if self.bias_correction not in BIAS_CORRECTION:
            raise GramTFError(f"bias_correction must be one of {', '.join(BIAS_CORRECTION)}; "
                              f"got {self.bias_correction!r}")

    @property
    def trivial(self) -> bool:
        """What the converter does on its own."""
        return not self.equalize and self.bias_correction == NEVER and self.calibration.method == "minmax"

    def tag(self) -> str:
        """Short label for tables: e.g. 'cle+bc+mse', 'minmax'."""
        parts = (["cle"] if self.equalize else []) + \
                (["bc" if self.bias_correction == "quantized" else "bc(float)"] if self.bias_correction != NEVER else [])
        if self.calibration.method != "minmax" or not parts:
            parts.append(self.calibration.method)
        return "+".join(parts)

    def as_dict(self) -> dict:
        return {"tag": self.tag(), "equalize": self.equalize, "bias_correction": self.bias_correction,
                "calibration": self.calibration.as_dict()}


def resolve_recipe(cfg, per_channel: bool, pruned: bool = False, model=None, searchable: bool = False) -> Int8Recipe:
    """The recipe a full-integer variant gets from a ConvertConfig. `auto` follows the measurements
    of docs/quantization.md: per-tensor weights get equalization, bias correction and percentile
    calibration (MobileNets collapse to one class without them); a pruned model's per-channel int8
    gets equalization and bias correction (MobileNetV2-0.5 at 80 %: 0.74 -> 0.94); dense per-channel
    int8 stays as the converter makes it. A pruned model's per-tensor int8 gets calibration `search`
    where the run has a validation split (`searchable`): on 19 pruned MobileNetV2s it beat
    percentile by 1.5-5 pp in 6 and tied in 13 (docs/pruning.md). With `model`, `auto` bias
    correction measures with `quantized` inputs only where that is affordable (`bias_correction_inputs`)."""
    for key in ("equalize", "bias_correction", "calibration"):  # a ConvertConfig built in code is not validated
        check_choice(f"convert.{key}", getattr(cfg, key))
    needs_help = not per_channel or pruned
    equalize = cfg.equalize == ALWAYS or (cfg.equalize == AUTO and needs_help)
    auto_inputs = bias_correction_inputs(model) if model is not None and needs_help else "quantized"
    bias = cfg.bias_correction if cfg.bias_correction != AUTO else auto_inputs if needs_help else NEVER
    method = cfg.calibration if cfg.calibration != AUTO else \
        "minmax" if per_channel else SEARCH if pruned and searchable else "percentile"
    calibration = Calibration(method, percentile=cfg.calibration_percentile, bins=cfg.calibration_bins)
    return Int8Recipe(equalize, bias, calibration)


def prepare_model(model, recipe: Int8Recipe, images_uint8: Optional[np.ndarray], preprocessing: dict,
                  per_channel: bool) -> tuple[object, dict]:
    """The float Keras model to calibrate and quantize, after equalization and bias correction."""
    report: dict = {}
    if not recipe.equalize and recipe.bias_correction == NEVER:
        return model, report
    if images_uint8 is None or len(images_uint8) == 0:
        raise GramTFError("equalization and bias correction need representative images (training images)")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(images_uint8), min(recipe.calibration_images, len(images_uint8)), replace=False))
    x = model_inputs(images_uint8[pick], preprocessing)
    try:
        return _prepare(model, recipe, x, per_channel, report)
    except GramTFError:
        raise
    except Exception as exc:  # a layer layout the rewrite does not know: say which switch avoids it
        raise GramTFError(f"int8 recipe {recipe.tag()} failed on this model ({one_line(exc, 160)}); "
                          f"convert with --equalize {NEVER} --bias-correction {NEVER}") from None


def _prepare(model, recipe: Int8Recipe, x: np.ndarray, per_channel: bool, report: dict):
    from ..optimize import correct_bias, equalize

    if recipe.equalize:
        model, eq = equalize(model, x)
        keys = ("pairs", "dead_inputs_zeroed", "unread_outputs_zeroed", "folded_batchnorm", "iterations")
        report["equalize"] = {k: eq[k] for k in keys}
        report["equalize"].update(spread_before=round(eq["spread_before"]["median"], 4),
                                  spread_after=round(eq["spread_after"]["median"], 4),
                                  worst_before=round(eq["spread_before"]["worst"], 4),
                                  worst_after=round(eq["spread_after"]["worst"], 4))
    if recipe.bias_correction != NEVER:
        model, bc = correct_bias(model, x, per_channel=per_channel, inputs=recipe.bias_correction)
        report["bias_correction"] = bc
    return model, report


def calibrate(model, size: int, preprocessing: dict, representative: Optional[np.ndarray], recipe: Int8Recipe,
              per_channel: bool = True, batch_size: int = 1, rep_gen=None) -> tuple[bytes, dict]:
    """(calibrated float TFLite bytes, recipe report): the model prepared by the recipe, calibrated
    by the converter, its activation ranges set by the recipe's method."""
    prepared, applied = prepare_model(model, recipe, representative, preprocessing, per_channel)
    rep_gen = rep_gen or representative_gen(representative, preprocessing, batch_size)
    calibrated, cal = recalibrate(calibrate_only(prepared, size, rep_gen, batch_size, preprocessing), rep_gen, recipe.calibration)
    return calibrated, {**recipe.as_dict(), "applied": {**applied, "calibration": cal}}


def full_integer(model, size: int, preprocessing: dict, representative: np.ndarray, recipe: Int8Recipe,
                 per_channel: bool = True, io_type: str = "int8", batch_size: int = 1,
                 validation: Optional[tuple] = None) -> tuple[bytes, dict]:
    """Full-integer TFLite bytes through the calibrate-only route with the recipe applied.
    Calibration `search` needs `validation` (uint8 images, label indices)."""
    if recipe.calibration.method == SEARCH:
        return _searched(model, size, preprocessing, representative, recipe, per_channel, io_type, batch_size,
                         validation)
    calibrated, report = calibrate(model, size, preprocessing, representative, recipe, per_channel, batch_size)
    return quantize_calibrated(calibrated, per_channel=per_channel, io_type=io_type), report


def _searched(model, size, preprocessing, representative, recipe: Int8Recipe, per_channel, io_type, batch_size,
              validation) -> tuple[bytes, dict]:
    """Quantize with each method of SEARCH_CANDIDATES and keep the most accurate on `validation`:
    which activation ranges suit a model is measured, not assumed (docs/pruning.md: the best
    method differs between two pruned MobileNetV2s by up to 26 pp)."""
    from .scoring import blob_accuracy

    if validation is None or len(validation[0]) == 0:
        raise GramTFError(f"convert.calibration {SEARCH} chooses on the validation split and this run has none; "
                          f"set convert.calibration to one of {', '.join(METHODS)}")
    prepared, applied = prepare_model(model, recipe, representative, preprocessing, per_channel)
    rep_gen = representative_gen(representative, preprocessing, batch_size)
    base = calibrate_only(prepared, size, rep_gen, batch_size, preprocessing)
    hists = collect_histograms(base, rep_gen, calibrated_ranges(base), int(recipe.calibration.bins))
    labels = [str(i) for i in range(int(model.output_shape[-1]))]
    tried, best = [], None
    for cal in search_candidates(recipe.calibration):
        calibrated, cal_report = recalibrate(base, rep_gen, cal, hists=hists)
        blob = quantize_calibrated(calibrated, per_channel=per_channel, io_type=io_type)
        acc = blob_accuracy(blob, validation[0], validation[1], labels, size, preprocessing)
        tried.append({**cal.as_dict(), "val_accuracy": round(acc, 4)})
        if best is None or acc > best[0]:
            best = (acc, blob, cal_report)
    return best[1], {**recipe.as_dict(), "applied": {**applied, "calibration": {**best[2], "search": tried}}}
