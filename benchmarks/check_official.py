"""Our LiteRT timing against LiteRT's official Python benchmark tool on the same artifacts and
threads, at the sizes users deploy (MobileNetV2-0.35, 224 px, fp32 and int8); the quickstart's
small artifacts are checked with `gram-tf bench tflite_models/quickstart --check-official`.

    python benchmarks/check_official.py      # ~1 minute -> benchmarks/results/official_check_224.json
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import export_models  # noqa: E402
from common import RESULTS, environment  # noqa: E402

import gram_tf  # noqa: E402,F401


def main() -> int:
    from gram_tf.bench.official import check_official
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.table import format_table

    with tempfile.TemporaryDirectory() as tmp:
        models = export_models(Path(tmp), 224)
        rows = check_official([models[("fp32", 1)], models[("int8", 1)]], threads=(1, 2), runs=100, warmup=10,
                              rounds=3)
    atomic_write_json(RESULTS / "official_check_224.json", rows)
    atomic_write_json(RESULTS / "official_check_224.env.json", environment())
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
