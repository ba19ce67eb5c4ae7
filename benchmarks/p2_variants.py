"""Every conversion variant on each architecture ported from timm (issue 15), smallest variant of each
family at a small input: does it convert, what did the int8 recipe do, how well does the .tflite
agree with the Keras model, how long did it take. Also prunes each run once (50 %) and converts the
pruned model's int8 and pqat-int8.

Random-weight backbones trained on synthetic micrographs (a functional check, not an accuracy
measurement: agreement with the Keras model is the number that matters here). Pruning: uniform
50 %, TF-MOT's ramp, one epoch (the sensitivity recipe of docs/pruning.md is measured elsewhere).

    python benchmarks/p2_variants.py [--backbones poolformer_s12:32,mobilevit_xxs:64,swin_tiny:224,beit_base:32]
Writes benchmarks/results/p2_variants.{csv,json}; a stopped run resumes after the last finished
backbone (benchmarks/results/p2_variants.partial.json, removed at the end).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402

import gram_tf  # noqa: E402,F401  (Keras 2 mode before TensorFlow loads)
from gram_tf.convert import VARIANTS  # noqa: E402  (TensorFlow-free: the variant table)

DENSE = [v.name for v in VARIANTS.values() if v.training != "pqat"]  # every variant a dense run takes
PRUNED = ["int8", "pqat-int8"]


def main() -> None:
    from gram_tf.config import ConvertConfig, PruneConfig, TrainConfig
    from gram_tf.convert import convert_run
    from gram_tf.data import split_dataset, write_manifest
    from gram_tf.data.synth import synthesize_dataset
    from gram_tf.errors import GramTFError
    from gram_tf.optimize import prune_run
    from gram_tf.train import train

    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default="poolformer_s12:32,mobilevit_xxs:64,swin_tiny:224,beit_base:32")
    ap.add_argument("--per-class", type=int, default=24)
    ap.add_argument("--only", default=None,
                    help="comma list of variants to measure again; the other rows of the last results are kept")
    args = ap.parse_args()
    from gram_tf.io_utils import atomic_write_json, read_json

    partial = RESULTS / "p2_variants.partial.json"
    only = set(args.only.split(",")) if args.only else None
    if only and not (RESULTS / "p2_variants.json").is_file():
        sys.exit(f"error: --only re-measures rows of {RESULTS / 'p2_variants.json'}, which is absent: run without --only first")
    kept = [r for r in read_json(RESULTS / "p2_variants.json")["rows"] if r["variant"] not in only] if only else []
    rows = read_json(partial)["rows"] if partial.is_file() else []
    done = {r["backbone"] for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize_dataset(tmp / "data", per_class=args.per_class, size=96, seed=0, fields_per_specimen=1, progress=False)
        manifest = tmp / "manifest.csv"
        write_manifest(split_dataset(tmp / "data", val=0.25, test=0.25, seed=0, progress=False), manifest)
        for item in args.backbones.split(","):
            name, size = item.split(":")
            if name in done:
                continue
            run = tmp / name
            train(manifest, name, run, TrainConfig(input_size=int(size), weights="none", epochs=3, augment_views=1,
                                                   tensorboard=False), progress=False)
            prune_run(run, PruneConfig(levels=[0.5], epochs=1, batch_size=8, allocation="uniform", method="gradual"),
                      progress=False)
            for folder, variants in ((run, DENSE), (run / "pruned_50", PRUNED)):
                for variant in [v for v in variants if only is None or v in only]:
                    t0 = time.perf_counter()
                    row = {"backbone": name, "input_size": int(size), "sparsity": 0.5 if folder != run else 0.0,
                           "variant": variant}
                    try:
                        cfg = ConvertConfig(variants=[variant], representative_samples=16, check_samples=16)
                        manifest_out = convert_run(folder, [variant], tmp / "tfl" / name, cfg, progress=False)
                        entry = [a for a in manifest_out["artifacts"] if a["variant"] == variant][-1]
                        recipe = entry.get("int8_recipe") or {}  # what was applied (int8-fast may switch)
                        row.update({"ok": True, "size_bytes": entry["size_bytes"],
                                    "top1_agreement": entry.get("top1_agreement"),
                                    "int8_recipe": recipe.get("tag") or (recipe.get("requested") or {}).get("tag", ""),
                                    "error": ""})
                    except GramTFError as exc:
                        row.update({"ok": False, "size_bytes": None, "top1_agreement": None, "int8_recipe": "",
                                    "error": str(exc)[:300]})
                    row["seconds"] = round(time.perf_counter() - t0, 1)
                    rows.append(row)
                    print(row, flush=True)
            RESULTS.mkdir(exist_ok=True)
            atomic_write_json(partial, {"rows": rows})
    order = [(item.split(":")[0], pruned, v) for item in args.backbones.split(",")
             for pruned, variants in ((False, DENSE), (True, PRUNED)) for v in variants]
    rows = sorted(kept + rows, key=lambda r: order.index((r["backbone"], r["sparsity"] > 0, r["variant"])))
    write_results("p2_variants", rows)
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
