"""Pruning with real pretrained weights: the old recipe vs the new one, per level, plus the smallest
artifact within 1 pp of the dense fp32 model (issue 21's table).

For each dataset and backbone: train the dense model from the real ImageNet weights in
../shared/weights (frozen backbone, head trained: `gram-tf train`'s defaults), then prune a copy
of it with each recipe at each level, and convert the dense model and every pruned level to fp32,
int8 (gram-tf convert's default recipes) and int8-per-tensor (its recipe, once with percentile and
once with search calibration) `.tflite`. Every row is measured on the test split by the artifact itself (LiteRT), the
Keras rows by the Keras model.

- old: the recipe before issue 21 (BatchNorm frozen, uniform sparsity, TF-MOT's gradual ramp, labels only,
  constant learning rate, last epoch kept);
- new: `gram-tf prune`'s defaults (BatchNorm folded, per-layer sparsity from sensitivity, one-shot
  masks with least-squares refit, distillation, warm-up + cosine, best validation epoch kept).

Datasets: `real` (benchmarks/real_micrographs.py: 6 classes, 136 test fields) and `synth`
(`gram-tf data synth --per-class 120 --size 224`, fields of one smear in one split).

    python benchmarks/experiments/prune_real.py [--backbones mobilenet_v2_035,mobilenet_v2_050] [--datasets real,synth]
        [--levels 0.5,0.7,0.75,0.8,0.85,0.9] [--old-levels 0.5,0.8] [--work /tmp/prune_real] [--out pruning_real]

Writes benchmarks/results/<out>.{csv,json} (+ .env.json). Resumable: finished runs are reused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

# the tools in benchmarks/ (common, real_micrographs) and the experiments beside this one
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import RESULTS, SHARED_WEIGHTS, environment, require_real_weights  # noqa: E402
import real_micrographs  # noqa: E402

import gram_tf  # noqa: E402,F401

COLUMNS = ["dataset", "backbone", "recipe", "sparsity_target", "sparsity", "variant", "test_accuracy",
           "val_accuracy", "int8_recipe", "zip_bytes", "x_smaller_zip_vs_fp32", "delta_pp_vs_fp32", "chosen_by_max_drop", "seconds"]
VARIANTS = ["fp32", "int8"]
# int8-per-tensor drops the per-channel scales and zero points (about a quarter of a pruned
# MobileNetV2's int8 zip). Converted with each calibration (`gram-tf convert --calibration`):
# percentile is `auto` for a dense run, search (ranges picked on validation) for a pruned one
PER_TENSOR_CALIBRATIONS = ("percentile", "search")
OLD = dict(method="gradual", batchnorm="frozen", distill=0.0, lr_schedule="constant", keep="last", allocation="uniform")


def dataset(name: str, work: Path) -> Path:
    if name == "real":
        return real_micrographs.build(work / "real6")
    from gram_tf.data import SYNTH_GROUP_PATTERN, split_dataset, synthesize_dataset, write_manifest

    root = work / "synth224"
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        synthesize_dataset(root / "images", per_class=120, size=224, seed=0, progress=False)
        rows = split_dataset(root / "images", group_pattern=SYNTH_GROUP_PATTERN, progress=False)
        write_manifest(rows, manifest)
    return manifest


def dense_run(manifest: Path, backbone: str, out: Path) -> Path:
    from gram_tf.config import TrainConfig
    from gram_tf.train import train

    if not (out / "run.json").is_file():
        train(manifest, backbone, out, TrainConfig(input_size=224, weights="imagenet", tensorboard=False),
              seed=0, weights_dir=str(SHARED_WEIGHTS), progress=False)
    return out


def recipe_copy(dense: Path, recipe: str) -> Path:
    """Each recipe prunes its own copy of the dense run (pruned_<pct>/ names would collide)."""
    dest = dense.parent / f"{dense.name}__{recipe}"
    if not (dest / "run.json").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(dense, dest, ignore=shutil.ignore_patterns("pruned_*", "tflite*", "*.lock"))
    return dest


def tflite_rows(run_dir: Path, variants, test, calibration: str = "auto") -> list[dict]:
    """Convert the run with `gram-tf convert`'s own path (its default int8 recipes: equalization and
    bias correction for per-tensor and pruned models; `calibration` as `--calibration`) and measure
    each artifact on the test split."""
    from gram_tf.config import ConvertConfig
    from gram_tf.convert import convert_run
    from gram_tf.deploy import Classifier
    from gram_tf.io_utils import compressed_sizes

    t0 = time.perf_counter()
    out = run_dir / ("tflite" if calibration == "auto" else f"tflite_{calibration}")
    manifest = convert_run(run_dir, variants, out_dir=out, cfg=ConvertConfig(calibration=calibration),
                           progress=False, skip_existing=True)
    seconds = round((time.perf_counter() - t0) / len(variants), 1)
    out = []
    for entry in manifest["artifacts"]:
        probs = Classifier(entry["path"]).predict_arrays(test[0])
        out.append({"variant": entry["variant"], "test_accuracy": float((probs.argmax(1) == test[1]).mean()),
                    "zip_bytes": compressed_sizes(entry["path"])["zip_bytes"], "seconds": seconds,
                    "int8_recipe": ((entry.get("int8_recipe") or {}).get("requested") or {}).get("tag")})
    return out


def artifact_rows(run_dir: Path, test, per_tensor: bool = True) -> list[dict]:
    """VARIANTS, then int8-per-tensor once per calibration of PER_TENSOR_CALIBRATIONS."""
    rows = tflite_rows(run_dir, VARIANTS, test)
    for cal in PER_TENSOR_CALIBRATIONS if per_tensor else ():
        rows += tflite_rows(run_dir, ["int8-per-tensor"], test, cal)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="mobilenet_v2_035,mobilenet_v2_050")
    ap.add_argument("--datasets", default="real,synth")
    ap.add_argument("--levels", default="0.5,0.7,0.75,0.8,0.85,0.9")
    ap.add_argument("--old-levels", default="0.5,0.8")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--max-drop", type=float, default=1.0, help="pp, for the new recipe's --max-drop choice")
    ap.add_argument("--work", default="/tmp/prune_real")
    ap.add_argument("--out", default="pruning_real")
    args = ap.parse_args()
    require_real_weights()

    from gram_tf import data as data_mod
    from gram_tf.config import PruneConfig
    from gram_tf.optimize import prune_run
    from gram_tf.run import load_run
    from gram_tf.table import format_table

    work = Path(args.work)
    levels = [float(v) for v in args.levels.split(",") if v]
    old_levels = [float(v) for v in args.old_levels.split(",") if v]
    rows = []
    for ds in args.datasets.split(","):
        manifest = dataset(ds, work)
        for backbone in args.backbones.split(","):
            dense = dense_run(manifest, backbone, work / ds / backbone)
            run = load_run(dense)
            mrows = data_mod.read_manifest(manifest)
            x_test, y_test, _ = data_mod.load_split(mrows, "test", 224, run["preprocessing"]["resize"], False)
            base = {"dataset": ds, "backbone": backbone}
            dense_rows = artifact_rows(dense, (x_test, y_test))
            fp32 = dense_rows[0]
            val_dense = run["metrics"]["val"]["accuracy"]
            rows.append({**base, "recipe": "dense", "sparsity_target": 0.0, "sparsity": 0.0, "variant": "keras",
                         "test_accuracy": run["metrics"]["test"]["accuracy"], "val_accuracy": val_dense})
            rows += [{**base, "recipe": "dense", "sparsity_target": 0.0, "sparsity": 0.0, **r,
                      "val_accuracy": val_dense} for r in dense_rows]
            for recipe, lv in (("old", old_levels), ("new", levels)):
                if not lv:
                    continue
                cfg = PruneConfig(levels=lv, epochs=args.epochs,
                                  max_drop_pp=args.max_drop if recipe == "new" else None)
                if recipe == "old":
                    cfg = dataclasses.replace(cfg, **OLD)
                rdir = recipe_copy(dense, recipe)
                t0 = time.perf_counter()
                summaries = prune_run(rdir, cfg, seed=0, progress=False)
                for s in summaries:
                    pdir = Path(s["out_dir"])
                    common = {**base, "recipe": recipe, "sparsity_target": s["sparsity_target"],
                              "sparsity": round(s["sparsity"], 4), "val_accuracy": s.get("val_accuracy"),
                              "chosen_by_max_drop": s.get("chosen")}
                    rows.append({**common, "variant": "keras", "test_accuracy": s["accuracy"],
                                 "seconds": round(s["seconds"], 1)})
                    rows += [{**common, **r} for r in artifact_rows(pdir, (x_test, y_test), per_tensor=recipe == "new")]
                print(f"{ds}/{backbone}/{recipe}: {time.perf_counter() - t0:.0f} s", flush=True)
            for r in rows:
                if r["dataset"] == ds and r["backbone"] == backbone and r.get("zip_bytes"):
                    r["x_smaller_zip_vs_fp32"] = round(fp32["zip_bytes"] / r["zip_bytes"], 2)
                if r["dataset"] == ds and r["backbone"] == backbone:
                    r["delta_pp_vs_fp32"] = round(100 * (r["test_accuracy"] - fp32["test_accuracy"]), 1)
            _write(rows, args.out)
    print(format_table([{k: r.get(k) for k in COLUMNS} for r in rows]))
    for line in smallest_within(rows, args.max_drop):
        print(line)


def smallest_within(rows, max_drop_pp: float) -> list[str]:
    """Per (dataset, backbone): the artifact (any recipe, level, variant) with the smallest zip whose
    own test accuracy is within max_drop_pp of the dense fp32 .tflite's."""
    lines = []
    for ds, bb in dict.fromkeys((r["dataset"], r["backbone"]) for r in rows):
        mine = [r for r in rows if (r["dataset"], r["backbone"]) == (ds, bb) and r.get("zip_bytes")]
        ref = next((r for r in mine if r["recipe"] == "dense" and r["variant"] == "fp32"), None)
        ok = [r for r in mine if ref and 100 * (ref["test_accuracy"] - r["test_accuracy"]) <= max_drop_pp + 1e-9]
        if not ok:
            lines.append(f"{ds}/{bb}: nothing within {max_drop_pp:g} pp")
            continue
        best = min(ok, key=lambda r: r["zip_bytes"])
        tag = f" ({best['int8_recipe']})" if best.get("int8_recipe") else ""
        lines.append(f"{ds}/{bb}: {best['recipe']} {best['sparsity_target']:.0%} {best['variant']}{tag}, test "
                     f"{best['test_accuracy']:.3f} vs {ref['test_accuracy']:.3f}, zip {best['zip_bytes'] / 1e3:.0f} KB = "
                     f"{ref['zip_bytes'] / best['zip_bytes']:.2f}x smaller than the dense fp32 .tflite")
    return lines


def _write(rows, out: str) -> None:
    """Merge into the results file: rows of other (dataset, backbone) pairs from earlier calls stay."""
    import csv
    import io

    from gram_tf.io_utils import atomic_write_json, atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    done = {(r["dataset"], r["backbone"]) for r in rows}
    previous = RESULTS / f"{out}.json"
    if previous.is_file():
        old = json.loads(previous.read_text())
        rows = [r for r in old.get("rows", []) if (r["dataset"], r["backbone"]) not in done] + rows
        commands = [c for c in old.get("commands", []) if c != environment()["command"]]
    else:
        commands = []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(RESULTS / f"{out}.csv", buf.getvalue())
    atomic_write_json(RESULTS / f"{out}.json", {"environment": environment(), "commands": [*commands, environment()["command"]],
                                                "rows": rows})
    atomic_write_json(RESULTS / f"{out}.env.json", environment())


if __name__ == "__main__":
    main()
