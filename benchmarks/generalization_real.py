"""Does compression hurt generalization on real micrographs? (issue 33's real-weights measurement)

The GramStainR reference photos (../shared/data/real/gramstainr_reference: E. coli and P. aeruginosa, 30
photos each) are cut into fields as benchmarks/real_micrographs.py cuts them (8 per photo). The first half of
each class's photos (by number) is the study's own data, split train/val/test by photo; the other half is
held out whole as external test sets, as photographed and in two shifted renderings of the same fields:

- `other_photos`: the held-out photos' fields as they are;
- `other_photos_faded`: the same with the stain's optical density halved (a weak stain batch: every pixel's
  transmittance t becomes t ** 0.5, Beer-Lambert with half the dye);
- `other_photos_defocus`: the same with a Gaussian blur of 2 px at 256 px (about 6 px of the photo: defocus).

`gram-tf run`'s own pipeline then trains MobileNetV2-0.35 from the real ImageNet weights in ../shared/weights,
prunes it (--prune, 0 = no pruned level), converts fp32 / int8 / int8-per-tensor (the pruned level: fp32 /
int8), evaluates every artifact (and the Keras model) on the test split and on each external set, and the
report's shift table (gram_tf.report.shift) is written as the results rows: per model and set, the in-domain
and external accuracy drop against dense fp32 with their 95 % CIs, agreement with fp32 and McNemar.

    python benchmarks/generalization_real.py [--work /tmp/gen_real] [--name generalization_real]
        [--external clinical=DIR]   # the clinical counterpart, when there is one (docs/generalization.md)
    python benchmarks/generalization_real.py --source DIR --weights none --size 32 ...   # the smoke run

Writes benchmarks/results/<name>.csv (the shift rows) and <name>.json (environment: command, date, machine;
the shift rows; the study's flat result rows).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_WEIGHTS, write_results  # noqa: E402
import real_micrographs  # noqa: E402

BACKBONE = "mobilenet_v2_035"
# the shifted renderings of the held-out fields: set name suffix -> PIL image -> PIL image
SHIFTS = {
    "": lambda img: img,
    "_faded": lambda img: Image.fromarray((255.0 * (np.asarray(img, np.float32) / 255.0) ** 0.5 + 0.5).astype(np.uint8)),
    "_defocus": lambda img: img.filter(ImageFilter.GaussianBlur(2)),
}
COLUMNS = ["set", "backbone", "sparsity_target", "variant", "runtime", "n_external", "fp32_accuracy_in", "accuracy_in",
           "drop_in_pp", "drop_in_low", "drop_in_high", "fp32_accuracy_ext", "accuracy_ext", "drop_ext_pp",
           "drop_ext_low", "drop_ext_high", "excess_pp", "excess_low", "excess_high", "agreement_vs_fp32",
           "mcnemar_p_vs_fp32", "flagged"]


def write_fields(source: Path, work: Path) -> tuple[Path, dict]:
    """work/in_domain/<class>/ (the first half of each class's photos) and work/external/other_photos<suffix>/
    <class>/ (the other half, once per SHIFTS entry); cached."""
    photos_root = source / "gramstainr_reference"
    if not photos_root.is_dir():
        raise SystemExit(f"error: {photos_root} is missing; this benchmark needs ../shared/data/real")
    inside = work / "in_domain"
    external = {f"other_photos{sfx}": work / "external" / f"other_photos{sfx}" for sfx in SHIFTS}
    done = work / ".fields_done"
    if done.is_file():
        return inside, external
    for cls_dir in sorted(p for p in photos_root.iterdir() if p.is_dir()):
        photos = sorted(cls_dir.iterdir())
        half = len(photos) // 2
        for i, photo in enumerate(photos):
            img = real_micrographs._rgb_on_white(photo)
            for suffix, box in real_micrographs._gramstainr_boxes(img):
                field = img.crop(box).resize((real_micrographs.FIELD_PX,) * 2, Image.BICUBIC, reducing_gap=3.0)
                name = f"{photo.stem}{suffix}.png"
                if i < half:
                    (inside / cls_dir.name).mkdir(parents=True, exist_ok=True)
                    field.save(inside / cls_dir.name / name)
                    continue
                for sfx, shift in SHIFTS.items():
                    dest = external[f"other_photos{sfx}"] / cls_dir.name
                    dest.mkdir(parents=True, exist_ok=True)
                    shift(field).save(dest / name)
    done.write_text("ok\n")
    return inside, external


def study_config(args, inside: Path, external: dict):
    from gram_tf.config import load_config

    weights_dir = str(SHARED_WEIGHTS) if args.weights == "imagenet" else None
    return load_config(None, {
        "name": args.name, "seed": 0, "out": str(Path(args.work) / "runs"), "tflite_dir": str(Path(args.work) / "tflite"),
        "weights_dir": weights_dir, "backbones": [BACKBONE],
        "data": {"dir": str(inside), "group_pattern": real_micrographs.GROUP_PATTERN, "val": 0.2, "test": 0.3,
                 "external": {n: str(d) for n, d in external.items()}},
        "train": {"input_size": args.size, "weights": args.weights, "epochs": args.epochs, "tensorboard": False},
        "prune": {"levels": [args.prune] if args.prune else [], "epochs": args.prune_epochs},
        "convert": {"variants": args.variants.split(","), "pruned_variants": ["fp32", "int8"],
                    "representative_samples": args.calibration, "check_samples": min(32, args.calibration)},
        "bench": {"threads": [1], "rounds": args.rounds, "runs": args.runs, "warmup": 1, "keras_reference": True},
    })


def shift_table(rows) -> list[dict]:
    """The report's shift rows (gram_tf.report.shift), flattened to COLUMNS (pp and fractions as in the report)."""
    from gram_tf.report import normalize_row
    from gram_tf.report.schema import in_domain
    from gram_tf.report.shift import shift_rows
    from gram_tf.report.view import ResultView

    rows = [normalize_row(r) for r in rows]
    out = []
    for t in shift_rows(ResultView([r for r in rows if in_domain(r)]), rows):
        run, bb, sp, var, rt = t["key"]

        def pp(v, i):
            return None if v is None else round(100 * v[i], 2)

        out.append(dict(zip(COLUMNS, [
            t["set"], bb, sp, var, rt, t["n"], t["fp32_accuracy_in"], t["accuracy_in"],
            pp(t["drop_in"], 0), pp(t["drop_in"], 1), pp(t["drop_in"], 2), t["fp32_accuracy_ext"], t["accuracy_ext"],
            pp(t["drop_ext"], 0), pp(t["drop_ext"], 1), pp(t["drop_ext"], 2),
            pp(t["excess"], 0), pp(t["excess"], 1), pp(t["excess"], 2),
            None if t["agreement"] is None else round(t["agreement"], 4),
            None if t["mcnemar"] is None else t["mcnemar"]["p_value"], t["flagged"]])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(real_micrographs.REAL), help="the photos (default: ../shared/data/real)")
    ap.add_argument("--work", default="/tmp/gen_real", help="fields, the study and its artifacts go here (reused)")
    ap.add_argument("--weights", default="imagenet", choices=["imagenet", "none"],
                    help="imagenet: the real weights in ../shared/weights (the measurement); none: the smoke run")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--prune", type=float, default=0.5, help="a pruned level's sparsity (0: none)")
    ap.add_argument("--prune-epochs", type=int, default=4)
    ap.add_argument("--calibration", type=int, default=100, help="representative images for int8")
    ap.add_argument("--variants", default="fp32,int8,int8-per-tensor", help="the dense model's variants")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--name", default="generalization_real")
    ap.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                    help="one more external set, e.g. the clinical images (repeatable)")
    args = ap.parse_args(argv)
    if args.weights == "imagenet" and not SHARED_WEIGHTS.is_dir():
        raise SystemExit(f"error: {SHARED_WEIGHTS} is missing; this benchmark needs the real ImageNet weights")
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.pipeline import run_study
    from gram_tf.table import format_table

    t0 = time.perf_counter()
    from gram_tf.bench.litert import parse_external

    inside, external = write_fields(Path(args.source), Path(args.work))
    external = {**external, **parse_external(args.external)}
    result = run_study(study_config(args, inside, external), progress=False)
    table = shift_table(result["rows"])
    wall_s = round(time.perf_counter() - t0, 1)
    write_results(args.name, table, environment_extra={"wall_s": wall_s, "report": str(result["report"])})
    saved = RESULTS / f"{args.name}.json"  # the study's own rows beside the table, for anyone re-deriving it
    import json

    data = json.loads(saved.read_text())
    atomic_write_json(saved, {**data, "study_rows": result["rows"]})
    print(format_table(table, ["set", "sparsity_target", "variant", "runtime", "accuracy_ext", "drop_in_pp",
                               "drop_ext_pp", "excess_pp", "agreement_vs_fp32", "flagged"]))
    print(f"{RESULTS / args.name}.csv/.json: {len(table)} rows in {wall_s:.0f} s; report {result['report']}")


if __name__ == "__main__":
    main()
