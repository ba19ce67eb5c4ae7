"""Training with cached backbone features vs running the frozen backbone every epoch.

Workload (fixed): MobileNetV2 0.35 at 224 px on 400 synthetic micrographs (200 per class),
15 head epochs, batch 32, no early stopping, same seed. Writes benchmarks/results/training_cache.{csv,json}.

    python benchmarks/bench_training_cache.py
"""
from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, weights_dir_or_none  # noqa: E402

import gram_tf  # noqa: E402,F401


def main():
    from gram_tf import data
    from gram_tf.config import TrainConfig
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.data import synthesize_dataset
    from gram_tf.table import format_table
    from gram_tf.train import train

    wdir = weights_dir_or_none()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize_dataset(tmp / "data", 200, size=256, seed=0, progress=False)
        split = data.split_dataset(tmp / "data", val=0.15, test=0.15, seed=0, progress=False)
        data.write_manifest(split, tmp / "m.csv")
        # decode once up front so both runs start from the same decoded-image cache
        for mode in ("memory", "none"):
            cfg = TrainConfig(input_size=224, weights="imagenet" if wdir else "none", epochs=15,
                              early_stopping_patience=100, augment=False, tensorboard=False, cache=mode)
            t0 = time.perf_counter()
            run = train(tmp / "m.csv", "mobilenet_v2_035", tmp / mode, cfg, weights_dir=wdir, progress=False,
                        data_cache_dir=tmp / "decoded")
            wall = time.perf_counter() - t0
            rows.append({"cache": mode, "wall_s": round(wall, 2),
                         "feature_extraction_s": round(run["timing"].get("feature_extraction_s", 0.0), 2),
                         "head_training_s": round(run["timing"]["head_training_s"], 2),
                         "test_accuracy": run["metrics"]["test"]["accuracy"], "images": 400, "epochs": 15,
                         "weights": "imagenet" if wdir else "none"})
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_uncached"] = round(rows[1]["wall_s"] / r["wall_s"], 2)
    print(format_table(rows))
    print(f"cached features: {ratio:.1f}x faster end to end ({environment()['cpu']})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "training_cache.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_json(RESULTS / "training_cache.json", {"environment": environment(), "rows": rows})


if __name__ == "__main__":
    main()
