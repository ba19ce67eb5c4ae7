"""Fixed speed workload: the same backbones and variants measured the same way after every change.

Default: MobileNetV2 1.0 and EfficientNet-Lite0 at 224 px, variants fp32 / int8 / int8-per-tensor,
LiteRT (XNNPACK) at 1 and 2 threads, batch 1, random weights (latency does not depend on the
weight values) calibrated on synthetic micrographs. Writes benchmarks/results/variants.{csv,json}.

    python benchmarks/bench_variants.py [--backbones a,b] [--variants fp32,int8] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, export_artifact  # noqa: E402

import gram_tf  # noqa: E402,F401

DEFAULT_BACKBONES = "mobilenet_v2_100,efficientnet_lite0"
DEFAULT_VARIANTS = "fp32,int8,int8-per-tensor"
COLUMNS = ["backbone", "variant", "threads", "size_bytes", "latency_ms_p50", "latency_ms_p90",
           "images_per_s", "speedup_vs_fp32", "gmacs_per_s", "peak_rss_mb"]


def synthetic_images(n: int, size: int, seed: int = 0):
    import numpy as np

    from gram_tf.data import render_micrograph

    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(render_micrograph(rng, "positive" if i % 2 else "negative", size))
                     for i in range(n)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default=DEFAULT_BACKBONES)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--calibration", type=int, default=32, help="representative images")
    ap.add_argument("--name", default="variants", help="results file name under benchmarks/results/")
    args = ap.parse_args(argv)

    import tf_keras

    from gram_tf.bench import bench_paths
    from gram_tf.report import write_results
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.models import build_classifier, count_macs
    from gram_tf.table import format_table

    threads = [int(t) for t in args.threads.split(",")]
    rep = synthetic_images(args.calibration, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.backbones.split(","):
            model, info = build_classifier(name, 2, args.size, weights="none")
            macs = count_macs(model)
            for variant in args.variants.split(","):
                export_artifact(model, tmp, name, variant, args.size, info["preprocessing"], rep,
                                ["gram_negative", "gram_positive"], macs)
                print(f"converted {name} {variant}", flush=True)
            tf_keras.backend.clear_session()
        rows = bench_paths([tmp], threads=threads, runs=args.runs, warmup=args.warmup, evaluate=False,
                           keras_reference=False, progress=True, run_name=args.name)
    for r in rows:
        r["path"] = Path(r["path"]).name
    print(format_table(rows, COLUMNS))
    csv_path, json_path = write_results(rows, RESULTS / f"{args.name}.csv")
    atomic_write_json(RESULTS / f"{args.name}.env.json", environment())
    print(f"-> {csv_path}")


if __name__ == "__main__":
    main()
