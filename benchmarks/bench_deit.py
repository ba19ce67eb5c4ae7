"""DeiT-tiny at 224 px: fp32, dynamic, int8 per-channel, int8 per-tensor and int8-selective at 1
and 2 threads, through the whole study (configs/deit_tiny.yaml: synthetic data, random weights
unless the config names a checkpoint). Writes benchmarks/results/deit_tiny.{csv,json}.

    python benchmarks/bench_deit.py [--set key=value ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, environment  # noqa: E402

import gram_tf  # noqa: E402,F401


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args(argv)
    from gram_tf.report import write_results
    from gram_tf.config import load_config
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.pipeline import run_study
    from gram_tf.report import SUMMARY_COLUMNS
    from gram_tf.table import format_table

    cfg = load_config(ROOT / "configs" / "deit_tiny.yaml", args.sets)
    result = run_study(cfg, progress=True)
    rows = result["rows"]
    print(format_table(rows, SUMMARY_COLUMNS + ["latency_ms_p90", "peak_rss_mb"]))
    write_results(rows, RESULTS / "deit_tiny.csv")
    atomic_write_json(RESULTS / "deit_tiny.env.json", environment())
    print(f"-> {RESULTS / 'deit_tiny.csv'}; report: {result['report']}")


if __name__ == "__main__":
    main()
