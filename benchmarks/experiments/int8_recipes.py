"""Int8 recipes on real weights and real micrographs: cross-layer equalization, bias correction and
activation calibration, per-tensor and per-channel (issue 16's table).

For each backbone (dense, trained from the real ImageNet weights in ../shared/weights on
benchmarks/real_micrographs.py's six classes, as benchmarks/experiments/prune_real.py trains them; plus that
script's pruned runs with `--pruned`), every recipe is converted through gram_tf.convert.recipe and
measured on the 136 test fields by the artifact itself (LiteRT): accuracy, change against the fp32
.tflite in pp, and top-1 agreement with the Keras model. Equalized / bias-corrected models are
prepared once per (recipe, weight granularity) and calibrated with each method.

    python benchmarks/experiments/int8_recipes.py [--backbones mobilenet_v2_035,mobilenet_v2_050,mobilenet_v1_025]
        [--pruned] [--work /tmp/prune_real] [--out int8_recipes]

Writes benchmarks/results/<out>.{csv,json} (+ .env.json).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# the tools in benchmarks/ (common, real_micrographs) and the experiments beside this one
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import RESULTS, environment, require_real_weights  # noqa: E402
import prune_real  # noqa: E402
import real_micrographs  # noqa: E402

import gram_tf  # noqa: E402,F401

COLUMNS = ["backbone", "sparsity_target", "variant", "recipe", "test_accuracy", "fp32_accuracy", "delta_pp_vs_fp32",
           "agreement_vs_keras", "prepare_seconds", "seconds"]
# (equalize, bias correction) x calibration methods, per weight granularity
DENSE = {
    "int8-per-tensor": [((False, "never"), ["minmax", "mse"]), ((True, "never"), ["minmax"]),
                        ((False, "quantized"), ["minmax"]), ((True, "float"), ["minmax"]),
                        ((True, "quantized"), ["minmax", "percentile", "mse", "entropy", "meanmax"])],
    "int8": [((False, "never"), ["minmax", "percentile", "mse", "entropy", "meanmax"]), ((False, "quantized"), ["minmax", "mse"]),
             ((True, "quantized"), ["minmax"])],
}
PRUNED = {"int8": [((False, "never"), ["minmax", "mse"]), ((False, "quantized"), ["minmax", "mse"]),
                   ((True, "quantized"), ["minmax"])]}


def measure(run_dir: Path, plan: dict, sparsity: float) -> list[dict]:
    import numpy as np

    from gram_tf import data as data_mod
    from gram_tf.convert import blob_probs, convert_model, representative_gen, representative_images
    from gram_tf.convert.calibration import Calibration, calibrate_only, quantize_calibrated, recalibrate
    from gram_tf.convert.recipe import Int8Recipe, prepare_model
    from gram_tf.models import load_model
    from gram_tf.run import load_run
    from gram_tf.train import predict_probs

    run = load_run(run_dir)
    pre, size, labels = run["preprocessing"], run["input_size"], run["labels"]
    rows_m = data_mod.read_manifest(run["manifest"])
    x_test, y_test, _ = data_mod.load_split(rows_m, "test", size, pre["resize"], False)
    rep = representative_images(rows_m, run, 100, seed=0)  # what `gram-tf convert` calibrates with
    model = load_model(run_dir / "model.keras")
    keras = predict_probs(model, x_test, pre).argmax(1)
    fp32 = blob_probs(convert_model(model, "fp32", size, pre), x_test, labels, size, pre)
    fp32_acc = float(np.mean(fp32.argmax(1) == y_test))
    gen = representative_gen(rep, pre)
    out = []
    for variant, recipes in plan.items():
        per_channel = variant == "int8"
        for (eq, bc), methods in recipes:
            t0 = time.perf_counter()
            prepared, _ = prepare_model(model, Int8Recipe(eq, bc), rep, pre, per_channel)
            calibrated = calibrate_only(prepared, size, gen)
            prep_s = time.perf_counter() - t0
            for method in methods:
                t1 = time.perf_counter()
                recipe = Int8Recipe(eq, bc, Calibration(method))
                blob = quantize_calibrated(recalibrate(calibrated, gen, recipe.calibration)[0], per_channel, "int8")
                probs = blob_probs(blob, x_test, labels, size, pre)
                acc = float(np.mean(probs.argmax(1) == y_test))
                out.append({"backbone": run["backbone"], "sparsity_target": sparsity, "variant": variant,
                            "recipe": recipe.tag(), "test_accuracy": round(acc, 4), "fp32_accuracy": round(fp32_acc, 4),
                            "delta_pp_vs_fp32": round(100 * (acc - fp32_acc), 1),
                            "agreement_vs_keras": round(float(np.mean(probs.argmax(1) == keras)), 4),
                            "prepare_seconds": round(prep_s, 1), "seconds": round(time.perf_counter() - t1, 1)})
                print({k: out[-1][k] for k in ("backbone", "sparsity_target", "variant", "recipe", "test_accuracy",
                                               "delta_pp_vs_fp32", "agreement_vs_keras")}, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="mobilenet_v2_035,mobilenet_v2_050,mobilenet_v1_025")
    ap.add_argument("--pruned", action="store_true", help="also the 80 %% runs of benchmarks/experiments/prune_real.py")
    ap.add_argument("--work", default="/tmp/prune_real")
    ap.add_argument("--out", default="int8_recipes")
    args = ap.parse_args()
    require_real_weights()
    from gram_tf.table import format_table

    work = Path(args.work)
    manifest = real_micrographs.build(work / "real6")
    rows = []
    for backbone in args.backbones.split(","):
        dense = prune_real.dense_run(manifest, backbone, work / "real" / backbone)
        rows += measure(dense, DENSE, 0.0)
        pruned = work / "real" / f"{backbone}__new" / "pruned_80"
        if args.pruned and (pruned / "run.json").is_file():
            rows += measure(pruned, PRUNED, 0.8)
        _write(rows, args.out)
    print(format_table(rows, COLUMNS))


def _write(rows, out: str) -> None:
    import csv
    import io

    from gram_tf.io_utils import atomic_write_json, atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(RESULTS / f"{out}.csv", buf.getvalue())
    atomic_write_json(RESULTS / f"{out}.json", {"environment": environment(), "rows": rows})
    atomic_write_json(RESULTS / f"{out}.env.json", environment())


if __name__ == "__main__":
    main()
