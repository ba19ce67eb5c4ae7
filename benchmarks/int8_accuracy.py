"""Why does int8 lose accuracy on a backbone? Weights vs activations vs calibration vs the head's margin.

For each backbone (trained exactly as in bench_int8.py: random backbone, BN re-estimated, linear head),
every variant is run on the same held-out synthetic images and compared with the Keras model:

- `weights-int8 (sim)`: the Keras model with every Conv/Depthwise/Dense kernel rounded to int8 per
  output channel (symmetric, as the converter does after folding BN, which scales whole channels):
  weight error alone, float activations.
- `dynamic`: int8 weights, activations quantized per image at run time (no calibrated ranges).
- `int16x8`: int8 weights, 16-bit activations with calibrated ranges: activation resolution x256.
- `int8`: full integer, 32 calibration images (the sweep's setting); `int8-cal<N>`: N images.
- `int8 + <recipe>`: full int8 with an int8 recipe (gram_tf.convert.recipe): percentile / mse / entropy /
  meanmax activation calibration, bias correction (`bc`), cross-layer equalization + bias correction (`cle+bc`).
- `int8, squeeze-excitation float`: full int8 with every SE node (name contains `_se_`) kept float;
  with `--op-groups`, also `int8, <OP> float`: every node of one op type kept float, one type at a time.

Columns: accuracy, agreement with the Keras model's class, mean |p - p_keras| of the positive-class
probability, and the Keras model's own median decision margin |p_keras - 0.5|. A variant whose
probability error is larger than the float margin flips decisions at random, whatever the cause.

    python benchmarks/int8_accuracy.py [--backbones efficientnet_b0,efficientnet_b3,...]
Also, per backbone, how many int8 steps a typical image's activations get from min/max-calibrated
ranges (`activation_ranges`). Writes benchmarks/results/int8_accuracy.{csv,json} and
int8_accuracy.ranges.{csv,json}; `--ranges-only` for the range table alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_int8 import synthetic, trained_model  # noqa: E402
from common import RESULTS, environment  # noqa: E402

import gram_tf  # noqa: E402,F401

LABELS = ["gram_negative", "gram_positive"]
TECHNIQUES: list = []  # int8 recipes measured per backbone (set in main)
COLUMNS = ["backbone", "variant", "accuracy", "agreement", "mean_abs_dp", "keras_median_margin",
           "seconds"]


def int8_weight_probs(model, x, pre):
    """The model's probabilities with its conv/dense kernels rounded to int8 per output channel
    (weights restored afterwards)."""
    from gram_tf.optimize import quantized_kernel

    saved = model.get_weights()
    try:
        for layer in model.layers:
            for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                w = getattr(layer, attr, None)
                if w is None or not hasattr(w, "assign"):
                    continue
                # per output channel: the last axis; depthwise (h, w, in, multiplier): axes 2 and 3
                kind = "DepthwiseConv2D" if attr == "depthwise_kernel" else "Conv2D"
                w.assign(quantized_kernel(kind, w.numpy(), per_channel=True))
        return keras_probs(model, x, pre)
    finally:
        model.set_weights(saved)


RANGE_COLUMNS = ["backbone", "tensors", "median_calib_over_image_range", "median_int8_steps_per_std",
                 "tensors_under_4_steps", "tensors_under_1_step", "worst_tensors"]


def activation_ranges(model, images, pre) -> dict:
    """How many int8 steps a typical image's activations get from a min/max-calibrated range.

    For every layer output that stays a tensor in the TFLite graph (conv outputs are left out: BN
    folds into them), on each calibration image: its min, max and std. The converter's range is
    the min/max over all images; `calib_over_image` = that range / the median one image spans;
    `steps_per_std` = a typical image's std in int8 steps (range / 255). Per-image scale drift
    (calib_over_image >> 1) is what per-tensor int8 with calibrated ranges cannot absorb.
    """
    import numpy as np
    import tf_keras

    from gram_tf.convert import normalized_images

    skip = (tf_keras.layers.InputLayer, tf_keras.layers.Dropout, tf_keras.layers.Conv2D,
            tf_keras.layers.DepthwiseConv2D)
    layers = [layer for layer in model.layers if not isinstance(layer, skip)]
    probe = tf_keras.Model(model.input, [layer.output for layer in layers])
    x = normalized_images(images, pre)
    lo, hi, std = [], [], []
    for i in range(len(x)):
        outs = probe(x[i : i + 1], training=False)
        lo.append([float(o.numpy().min()) for o in outs])
        hi.append([float(o.numpy().max()) for o in outs])
        std.append([float(o.numpy().std()) for o in outs])
    lo, hi, std = map(np.asarray, (lo, hi, std))
    calib = hi.max(0) - lo.min(0)
    per_image = np.maximum(np.median(hi - lo, 0), 1e-12)
    steps = np.median(std, 0) / np.maximum(calib / 255.0, 1e-12)
    worst = np.argsort(steps)[:3]
    return {"tensors": len(layers), "median_calib_over_image_range": float(np.median(calib / per_image)),
            "median_int8_steps_per_std": float(np.median(steps)),
            "tensors_under_4_steps": int((steps < 4).sum()), "tensors_under_1_step": int((steps < 1).sum()),
            "worst_tensors": "; ".join(f"{layers[j].name} {steps[j]:.2f}" for j in worst)}


def parse_technique(spec: str):
    """'cle+bc+percentile:99.9' -> Int8Recipe(equalize, bias correction 'quantized', calibration)."""
    from gram_tf.convert.calibration import Calibration
    from gram_tf.convert.recipe import Int8Recipe

    parts = spec.strip().split("+")
    method, _, pct = parts[-1].partition(":")
    if method in ("cle", "bc"):
        parts, method = parts + [method], "minmax"
    calibration = Calibration(method, **({"percentile": float(pct)} if pct else {}))
    return Int8Recipe("cle" in parts, "quantized" if "bc" in parts else "never", calibration)


def keras_probs(model, x, pre):
    from gram_tf.data import make_dataset

    return model.predict(make_dataset(x, None, pre, 32), verbose=0)


def node_groups(calibrated) -> dict[str, list[str]]:
    """Quantized nodes (output tensor names) grouped: every squeeze-excitation node, and per op type."""
    errors = calibrated.ranked_errors()
    groups = {"squeeze-excitation": sorted({r["tensor"] for r in errors if "_se_" in r["tensor"]})}
    for r in errors:
        groups.setdefault(r["op"], []).append(r["tensor"])
    return {k: v for k, v in groups.items() if v}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="efficientnet_b0,efficientnet_b3,efficientnet_b1,mobilenet_v2_100")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--test", type=int, default=96)
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--more-calibration", type=int, default=128)
    ap.add_argument("--ranges-only", action="store_true", help="only the activation-range table")
    ap.add_argument("--op-groups", action="store_true",
                    help="also keep each op type float in turn (which op's int8 breaks the model?)")
    ap.add_argument("--baselines", default="fp32,dynamic,int16x8,int8",
                    help="conversions measured before the recipes (int8 includes int8-cal<N>); int16x8 "
                         "of DeiT takes minutes in LiteRT's reference kernels")
    ap.add_argument("--techniques", default="percentile,mse,entropy,bc,cle+bc,cle+bc+mse",
                    help="int8 recipe rows (issue 16): comma list of [cle+][bc+]METHOD[:PERCENTILE], '' for none")
    ap.add_argument("--recipe-calibrations", default="",
                    help="comma list of calibration image counts for the recipe rows (default: --calibration); "
                         "rows at other counts are labelled '(calN)'")
    ap.add_argument("--train-seed", type=int, default=1,
                    help="draw of the synthetic training (and calibration) images; 1 is the registry sweep's")
    ap.add_argument("--name", default="int8_accuracy")
    args = ap.parse_args(argv)

    import numpy as np
    import tf_keras

    from gram_tf.report import write_results
    from gram_tf.convert import CalibratedInt8, convert_model, representative_gen
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.convert import blob_probs
    from gram_tf.table import format_table

    global TECHNIQUES
    TECHNIQUES = [parse_technique(t) for t in args.techniques.split(",") if t.strip()]
    t_start = time.time()
    recipe_cals = [int(n) for n in args.recipe_calibrations.split(",") if n.strip()] or [args.calibration]
    x_train, y_train = synthetic(max(args.train, args.more_calibration, *recipe_cals), args.size, args.train_seed)
    x_test, y_test = synthetic(args.test, args.size, 2)
    rows, ranges = [], []

    def save_env():
        atomic_write_json(RESULTS / f"{args.name}.env.json", {**environment(), "options": vars(args),
                                                              "seconds": round(time.time() - t_start)})

    for name in args.backbones.split(","):
        model, info = trained_model(name, args.size, x_train[: args.train], y_train[: args.train], 0)
        pre = info["preprocessing"]
        p_keras = keras_probs(model, x_test, pre)
        margin = float(np.median(np.abs(p_keras[:, 1] - 0.5)))
        cal = x_train[: args.calibration]
        ranges.append({"backbone": name, **activation_ranges(model, cal, pre)})
        print(format_table(ranges[-1:], RANGE_COLUMNS), flush=True)
        write_results(ranges, RESULTS / f"{args.name}.ranges.csv", columns=RANGE_COLUMNS)
        save_env()
        if args.ranges_only:
            tf_keras.backend.clear_session()
            continue

        def row(variant, probs, seconds):
            rows.append({"backbone": name, "variant": variant,
                         "accuracy": float(np.mean(probs.argmax(1) == y_test)),
                         "agreement": float(np.mean(probs.argmax(1) == p_keras.argmax(1))),
                         "mean_abs_dp": float(np.mean(np.abs(probs[:, 1] - p_keras[:, 1]))),
                         "keras_median_margin": margin, "seconds": round(seconds, 1)})
            print(format_table(rows[-1:], COLUMNS), flush=True)

        row("keras fp32", p_keras, 0.0)
        t0 = time.time()
        row("weights-int8 (sim)", int8_weight_probs(model, x_test, pre), time.time() - t0)
        baselines = (("fp32", None), ("dynamic", None), ("int16x8", cal), ("int8", cal),
                     (f"int8-cal{args.more_calibration}", x_train[: args.more_calibration]))
        for variant, reps in [b for b in baselines if b[0].split("-cal")[0] in args.baselines.split(",")]:
            t0 = time.time()
            blob = convert_model(model, variant.split("-cal")[0], args.size, pre, reps, io_type="float32")
            row(variant, blob_probs(blob, x_test, LABELS, args.size, pre), time.time() - t0)
        for n_cal in recipe_cals:  # issue 16's recipes, each on the int8 (per-channel) conversion above
            for recipe in TECHNIQUES:
                t0 = time.time()
                blob = convert_model(model, "int8", args.size, pre, x_train[:n_cal], io_type="float32", recipe=recipe)
                pct = f":{recipe.calibration.percentile:g}" if recipe.calibration.method == "percentile" else ""
                at = "" if n_cal == args.calibration else f" (cal{n_cal})"
                row(f"int8 + {recipe.tag()}{pct}{at}", blob_probs(blob, x_test, LABELS, args.size, pre), time.time() - t0)
        t0 = time.time()
        calibrated = CalibratedInt8(model, args.size, representative_gen(cal, pre))
        groups = node_groups(calibrated)
        if not args.op_groups:  # squeeze-excitation only
            groups = {k: v for k, v in groups.items() if k == "squeeze-excitation"}
        for group, nodes in groups.items():
            blob = calibrated.quantize(nodes)
            row(f"int8, {group} float ({len(nodes)})", blob_probs(blob, x_test, LABELS, args.size, pre),
                time.time() - t0)
            t0 = time.time()
        tf_keras.backend.clear_session()
        write_results(rows, RESULTS / f"{args.name}.csv", columns=COLUMNS)
        save_env()
    print(format_table(ranges, RANGE_COLUMNS))
    if rows:
        print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
