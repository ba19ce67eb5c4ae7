"""Our LiteRT timing against LiteRT's official Python benchmark tool on the same artifacts and
threads, at the sizes users deploy (MobileNetV2-0.35, 224 px, fp32 and int8); the quickstart's
small artifacts are checked with `gram-tf bench tflite_models/quickstart --check-official`.

    python benchmarks/check_official.py      # ~1 minute -> benchmarks/results/official_check_224.json
    python benchmarks/check_official.py --size 32 --threads 1 --runs 2 --warmup 1 --rounds 1 --name smoke
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import export_models  # noqa: E402
from common import RESULTS, environment  # noqa: E402

import gram_tf  # noqa: E402,F401


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="model input size")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ours and the official tool")
    ap.add_argument("--name", default="official_check_224", help="results file name under benchmarks/results/")
    args = ap.parse_args(argv)

    from gram_tf.bench.official import check_official
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.table import format_table

    with tempfile.TemporaryDirectory() as tmp:
        models = export_models(Path(tmp), args.size, batches=(1,))
        rows = check_official([models[("fp32", 1)], models[("int8", 1)]],
                              threads=tuple(int(t) for t in args.threads.split(",")), runs=args.runs,
                              warmup=args.warmup, rounds=args.rounds)
    atomic_write_json(RESULTS / f"{args.name}.json", rows)
    atomic_write_json(RESULTS / f"{args.name}.env.json", environment())
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
