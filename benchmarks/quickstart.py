"""The README's quickstart numbers: run the one-command study, time it, keep its results.

    python benchmarks/quickstart.py [--config configs/quickstart.yaml] [--work DIR]
Runs `gram-tf run CONFIG --out WORK --set tflite_dir=WORK/tflite_models` in a subprocess (WORK: a new
folder, by default a temporary one that is removed afterwards; with --work the study and its artifacts
stay there, e.g. for benchmarks/bench_trust.py) (minutes of CPU; run it on an otherwise idle
machine), copies the study's results.csv to benchmarks/results/quickstart.csv and writes
quickstart.json (the rows with the environment and the study's wall time `wall_s`). Then
`python tools/docs_tables.py` rewrites the README's and docs/study.md's quickstart blocks.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, write_results  # noqa: E402

NAME = "quickstart"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--work", type=Path, default=None, help="a new folder for the study and its artifacts (kept)")
    args = ap.parse_args(argv)
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        raise SystemExit(f"error: --work {args.work} is not empty; name a new folder")
    with tempfile.TemporaryDirectory(prefix="gram_tf_quickstart_") as scratch:
        tmp = str(args.work.resolve()) if args.work is not None else scratch
        command = ["gram-tf", "run", str(Path(args.config).resolve()), "--out", tmp, "--set",
                   f"tflite_dir={Path(tmp) / 'tflite_models'}"]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT)
        wall_s = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"error: `{' '.join(command)}` exited with {proc.returncode}; results unchanged")
        found = sorted(Path(tmp).glob("*/results.csv"))
        if len(found) != 1:
            raise SystemExit(f"error: expected one */results.csv under {tmp}, found {len(found)}")
        rows = json.loads(found[0].with_suffix(".json").read_text())
        write_results(NAME, rows, environment_extra={"wall_s": round(wall_s, 1), "study_command": " ".join(command)})
        shutil.copy(found[0], RESULTS / f"{NAME}.csv")  # the study's own CSV, every column as it wrote it
    # the older run's transcribed environment would otherwise fill gaps from a different run
    (RESULTS / f"{NAME}.env.json").unlink(missing_ok=True)
    print(f"{RESULTS / NAME}.csv/.json: {len(rows)} rows, study took {wall_s:.0f} s; now run python tools/docs_tables.py")


if __name__ == "__main__":
    main()
